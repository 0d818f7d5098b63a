//! The pack archive: how a pack's files travel through the object store `attune-pack-files`.
//!
//! The registry packs a directory, the runner unpacks it on another host. Both sides live here so
//! the format is defined once. The archive is a tar with sorted entries, zeroed times and owners and
//! normalised modes, so the same content always gives the same bytes and the same digest, and an
//! unchanged pack is never uploaded twice.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directories that are build products, never pack content.
const SKIPPED_DIRS: &[&str] = &[".git", ".venv", "node_modules", "__pycache__", ".attune"];

/// Why a pack could not be archived or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A symlink points outside the pack.
    #[error("{0}: symlink points outside the pack")]
    SymlinkEscapes(PathBuf),
    /// An archive entry would land outside the target directory.
    #[error("archive entry \"{0}\" escapes the pack directory")]
    EntryEscapes(String),
    /// The bytes do not have the digest they were published under.
    #[error("pack archive digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The content digest of archive bytes: `sha256-<hex>`, also the object name.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256-{}", hex::encode(Sha256::digest(bytes)))
}

/// Packs the directory `root` into deterministic tar bytes and returns them with their digest.
pub fn pack_dir(root: &Path) -> Result<(Vec<u8>, String), ArchiveError> {
    let canon_root = root.canonicalize().map_err(io_err(root))?;
    let mut files = Vec::new();
    collect(&canon_root, &canon_root, &mut files)?;
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for rel in files {
        let full = canon_root.join(&rel);
        let data = fs::read(&full).map_err(io_err(&full))?;
        let meta = fs::metadata(&full).map_err(io_err(&full))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &rel, data.as_slice())
            .map_err(io_err(&full))?;
    }
    let bytes = builder.into_inner().map_err(io_err(root))?;
    let d = digest(&bytes);
    Ok((bytes, d))
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &fs::Metadata) -> bool {
    false
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ArchiveError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().map_err(io_err(&path))?;
        let target = if file_type.is_symlink() {
            let resolved = path.canonicalize().map_err(io_err(&path))?;
            if !resolved.starts_with(root) {
                return Err(ArchiveError::SymlinkEscapes(path));
            }
            resolved
        } else {
            path.clone()
        };
        if target.is_dir() {
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            collect(root, &path, out)?;
        } else if target.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("walked from root")
                .to_path_buf();
            out.push(rel);
        }
    }
    Ok(())
}

/// Unpacks archive bytes into `dest` (created if missing), after checking they match `expected`.
/// Entries that would escape `dest` are refused.
pub fn unpack(bytes: &[u8], expected: &str, dest: &Path) -> Result<(), ArchiveError> {
    let actual = digest(bytes);
    if actual != expected {
        return Err(ArchiveError::DigestMismatch {
            expected: expected.to_string(),
            actual,
        });
    }
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(io_err(dest))? {
        let mut entry = entry.map_err(io_err(dest))?;
        let path = entry.path().map_err(io_err(dest))?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(ArchiveError::EntryEscapes(path.display().to_string()));
        }
        if !entry.unpack_in(dest).map_err(io_err(&dest.join(&path)))? {
            return Err(ArchiveError::EntryEscapes(path.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("actions")).unwrap();
        fs::create_dir_all(dir.path().join(".venv/bin")).unwrap();
        fs::write(dir.path().join("pack.yaml"), "ref: x\n").unwrap();
        fs::write(dir.path().join("actions/a.sh"), "echo hi\n").unwrap();
        fs::write(dir.path().join(".venv/bin/python"), "junk").unwrap();
        dir
    }

    #[test]
    fn same_content_same_digest() {
        let a = sample();
        let b = sample();
        let (_, da) = pack_dir(a.path()).unwrap();
        let (_, db) = pack_dir(b.path()).unwrap();
        assert_eq!(da, db);
        assert!(da.starts_with("sha256-"));
        fs::write(b.path().join("actions/a.sh"), "echo bye\n").unwrap();
        assert_ne!(da, pack_dir(b.path()).unwrap().1);
    }

    #[test]
    fn round_trip_skips_build_dirs() {
        let src = sample();
        let (bytes, d) = pack_dir(src.path()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        unpack(&bytes, &d, dest.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dest.path().join("actions/a.sh")).unwrap(),
            "echo hi\n"
        );
        assert!(!dest.path().join(".venv").exists());
    }

    #[test]
    fn digest_mismatch_is_refused() {
        let src = sample();
        let (bytes, _) = pack_dir(src.path()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let err = unpack(&bytes, "sha256-00", dest.path()).unwrap_err();
        assert!(matches!(err, ArchiveError::DigestMismatch { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_pack_is_refused() {
        let src = sample();
        std::os::unix::fs::symlink("/etc/hostname", src.path().join("actions/leak")).unwrap();
        assert!(matches!(
            pack_dir(src.path()).unwrap_err(),
            ArchiveError::SymlinkEscapes(_)
        ));
    }
}
