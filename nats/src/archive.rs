//! The pack archive: how a pack's files travel through the object store `attune-pack-files`.
//!
//! The registry packs a directory, the runner unpacks it on another host. Both sides live here so
//! the format is defined once. The archive is a tar with sorted entries, zeroed times and owners and
//! normalised modes, so the same content always gives the same bytes and the same digest, and an
//! unchanged pack is never uploaded twice.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Directories that are build products, never pack content.
const SKIPPED_DIRS: &[&str] = &[".git", ".venv", "node_modules", "__pycache__", ".attune"];

/// The most entries (files and directories) a pack may have, packed or unpacked.
pub const MAX_ENTRIES: usize = 10_000;
/// The largest single file of a pack: 64 MiB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// The most bytes all files of a pack may hold together: 256 MiB.
pub const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;
/// Room per entry for its tar header, long-name record and padding.
const ENTRY_OVERHEAD: u64 = 8 * 1024;
/// The largest archive accepted: the file content cap plus room for the headers of
/// [`MAX_ENTRIES`] entries (about 334 MiB).
pub const MAX_ARCHIVE_BYTES: u64 = MAX_TOTAL_BYTES + MAX_ENTRIES as u64 * ENTRY_OVERHEAD;

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
    /// Reading the archive bytes themselves (from the object store) failed.
    #[error("reading pack archive: {source}")]
    Read {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A symlink points outside the pack.
    #[error("{0}: symlink points outside the pack")]
    SymlinkEscapes(PathBuf),
    /// A symlinked directory leads back to a directory that contains it.
    #[error("{0}: symlink leads back into a directory that contains it (a loop)")]
    SymlinkLoop(PathBuf),
    /// A file of the pack directory is neither a regular file nor a directory.
    #[error("{path}: is a {kind}; a pack holds only regular files and directories")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead (`fifo`, `socket`, `device`).
        kind: &'static str,
    },
    /// An archive entry would land outside the target directory.
    #[error("archive entry \"{0}\" escapes the pack directory")]
    EntryEscapes(String),
    /// An archive entry is a symlink, hard link, device, fifo, sparse file or other non-file.
    #[error(
        "archive entry \"{path}\" is a {kind}; only regular files and directories are unpacked"
    )]
    UnsupportedEntry {
        /// The entry's path.
        path: String,
        /// Its tar entry type, in words.
        kind: String,
    },
    /// The pack has more entries than [`MAX_ENTRIES`].
    #[error("pack has more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// One file is larger than [`MAX_FILE_BYTES`].
    #[error("\"{path}\" is {size} bytes; a pack file may have at most {max}")]
    FileTooLarge {
        /// The file or entry.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The files together are larger than [`MAX_TOTAL_BYTES`].
    #[error("pack files hold more than {max} bytes together")]
    TotalTooLarge {
        /// The limit.
        max: u64,
    },
    /// The archive itself is larger than [`MAX_ARCHIVE_BYTES`].
    #[error("pack archive is larger than {max} bytes")]
    ArchiveTooLarge {
        /// The limit.
        max: u64,
    },
    /// The bytes do not have the digest they were published under.
    #[error("pack archive digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

impl ArchiveError {
    /// Whether the pack or archive itself is at fault (a bad request), rather than the host.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, ArchiveError::Io { .. } | ArchiveError::Read { .. })
    }
}

/// Wraps an I/O error with the path it happened at.
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

/// Reads archive bytes (from the object store) into memory, refusing more than
/// [`MAX_ARCHIVE_BYTES`] without reading past the limit.
pub async fn read_archive<R: AsyncRead + Unpin>(reader: R) -> Result<Vec<u8>, ArchiveError> {
    read_limited(reader, MAX_ARCHIVE_BYTES).await
}

/// [`read_archive`] with the given cap.
async fn read_limited<R: AsyncRead + Unpin>(reader: R, max: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut bytes = Vec::new();
    reader
        .take(max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|source| ArchiveError::Read { source })?;
    if bytes.len() as u64 > max {
        return Err(ArchiveError::ArchiveTooLarge { max });
    }
    Ok(bytes)
}

/// One file found in the pack directory, to be archived.
struct Found {
    /// Its path in the archive, relative to the pack.
    rel: PathBuf,
    /// The real file (a symlink inside the pack resolved).
    real: PathBuf,
}

/// The caps one pack or unpack enforces; the defaults are the `MAX_*` constants.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`MAX_ENTRIES`].
    entries: usize,
    /// [`MAX_FILE_BYTES`].
    file_bytes: u64,
    /// [`MAX_TOTAL_BYTES`].
    total_bytes: u64,
}

/// The caps every pack and unpack uses.
const LIMITS: Limits = Limits {
    entries: MAX_ENTRIES,
    file_bytes: MAX_FILE_BYTES,
    total_bytes: MAX_TOTAL_BYTES,
};

/// Counts what a walk or an unpack has seen, and refuses once a cap is passed.
struct Budget {
    /// The caps.
    limits: Limits,
    /// Entries seen.
    entries: usize,
    /// File bytes seen.
    bytes: u64,
}

impl Budget {
    /// Nothing counted yet, against `limits`.
    fn new(limits: Limits) -> Self {
        Budget {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    /// Counts one entry.
    fn entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(ArchiveError::TooManyEntries {
                max: self.limits.entries,
            });
        }
        Ok(())
    }

    /// Counts one file of `size` bytes.
    fn file(&mut self, path: &str, size: u64) -> Result<(), ArchiveError> {
        if size > self.limits.file_bytes {
            return Err(ArchiveError::FileTooLarge {
                path: path.to_string(),
                size,
                max: self.limits.file_bytes,
            });
        }
        self.bytes += size;
        if self.bytes > self.limits.total_bytes {
            return Err(ArchiveError::TotalTooLarge {
                max: self.limits.total_bytes,
            });
        }
        Ok(())
    }
}

/// Packs the directory `root` into deterministic tar bytes and returns them with their digest.
///
/// A symlink is followed only while it stays inside the pack (its target's content is archived
/// under the link's name); one that leads out, or back into a directory that contains it, is an
/// error, as is a fifo, socket or device. The caps of [`unpack`] apply, checked from metadata
/// before a file is read.
pub fn pack_dir(root: &Path) -> Result<(Vec<u8>, String), ArchiveError> {
    pack_dir_limited(root, LIMITS)
}

/// [`pack_dir`] with the given caps.
fn pack_dir_limited(root: &Path, limits: Limits) -> Result<(Vec<u8>, String), ArchiveError> {
    let canon_root = root.canonicalize().map_err(io_err(root))?;
    let mut files = Vec::new();
    let mut budget = Budget::new(limits);
    let mut ancestors = vec![canon_root.clone()];
    collect(
        &canon_root,
        &canon_root,
        &mut ancestors,
        &mut budget,
        &mut files,
    )?;
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut builder = tar::Builder::new(Vec::new());
    let mut written = Budget::new(limits);
    for Found { rel, real } in files {
        let file = fs::File::open(&real).map_err(io_err(&real))?;
        let meta = file.metadata().map_err(io_err(&real))?;
        if !meta.is_file() {
            return Err(ArchiveError::NotRegular {
                path: real,
                kind: file_kind(&meta),
            });
        }
        // The walk checked the size from metadata; the read is bounded too, in case the file
        // grew since.
        let mut data = Vec::new();
        file.take(limits.file_bytes + 1)
            .read_to_end(&mut data)
            .map_err(io_err(&real))?;
        written.file(&rel.display().to_string(), data.len() as u64)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &rel, data.as_slice())
            .map_err(io_err(&real))?;
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

/// What a file that is not a regular file is, in words (`fifo`, `socket`, `device`,
/// `directory`), for messages that refuse it.
pub fn file_kind(meta: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "fifo";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
    }
    if meta.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Walks `dir` (whose real path is `ancestors.last()`), adding its files to `out`.
fn collect(
    root: &Path,
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    budget: &mut Budget,
    out: &mut Vec<Found>,
) -> Result<(), ArchiveError> {
    let real_dir = ancestors.last().expect("the root is always there").clone();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let file_type = entry.file_type().map_err(io_err(&path))?;
        let real = if file_type.is_symlink() {
            let resolved = path.canonicalize().map_err(io_err(&path))?;
            if !resolved.starts_with(root) {
                return Err(ArchiveError::SymlinkEscapes(path));
            }
            resolved
        } else {
            real_dir.join(&name)
        };
        let meta = fs::metadata(&real).map_err(io_err(&path))?;
        if meta.is_dir() {
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            if ancestors.contains(&real) {
                return Err(ArchiveError::SymlinkLoop(path));
            }
            budget.entry()?;
            ancestors.push(real);
            collect(root, &path, ancestors, budget, out)?;
            ancestors.pop();
        } else if meta.is_file() {
            budget.entry()?;
            let rel = path
                .strip_prefix(root)
                .expect("walked from root")
                .to_path_buf();
            budget.file(&rel.display().to_string(), meta.len())?;
            out.push(Found { rel, real });
        } else {
            return Err(ArchiveError::NotRegular {
                path,
                kind: file_kind(&meta),
            });
        }
    }
    Ok(())
}

/// A tar entry type, in words, for refusals.
fn entry_kind(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char | tar::EntryType::Block => "device".into(),
        tar::EntryType::Fifo => "fifo".into(),
        tar::EntryType::GNUSparse => "GNU sparse file".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// Unpacks archive bytes into `dest` (created if missing), after checking they match `expected`.
///
/// Only regular files and directories are unpacked: a symlink, hard link, device, fifo or GNU
/// sparse entry is refused, as is an entry whose path is absolute or has `..` (or `.`), so
/// nothing is written outside `dest`. At most [`MAX_ENTRIES`] entries, [`MAX_FILE_BYTES`] per
/// file and [`MAX_TOTAL_BYTES`] in all are unpacked, from at most [`MAX_ARCHIVE_BYTES`] of
/// archive. On an error, what was already unpacked stays in `dest`: callers unpack into a
/// fresh directory and remove it.
pub fn unpack(bytes: &[u8], expected: &str, dest: &Path) -> Result<(), ArchiveError> {
    unpack_limited(bytes, expected, dest, LIMITS)
}

/// [`unpack`] with the given caps.
fn unpack_limited(
    bytes: &[u8],
    expected: &str,
    dest: &Path,
    limits: Limits,
) -> Result<(), ArchiveError> {
    if bytes.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(ArchiveError::ArchiveTooLarge {
            max: MAX_ARCHIVE_BYTES,
        });
    }
    let actual = digest(bytes);
    if actual != expected {
        return Err(ArchiveError::DigestMismatch {
            expected: expected.to_string(),
            actual,
        });
    }
    fs::create_dir_all(dest).map_err(io_err(dest))?;
    let mut archive = tar::Archive::new(bytes);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    let mut budget = Budget::new(limits);
    for entry in archive.entries().map_err(io_err(dest))? {
        let mut entry = entry.map_err(io_err(dest))?;
        budget.entry()?;
        let path = entry.path().map_err(io_err(dest))?.into_owned();
        let shown = path.display().to_string();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(ArchiveError::EntryEscapes(shown));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular => budget.file(&shown, entry.size())?,
            tar::EntryType::Directory => {}
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    path: shown,
                    kind: entry_kind(other),
                })
            }
        }
        if !entry.unpack_in(dest).map_err(io_err(&dest.join(&path)))? {
            return Err(ArchiveError::EntryEscapes(shown));
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

    /// Tar bytes with entries written as given, unchecked, as an attacker would write them:
    /// `(path, type, content, link target)`.
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(*kind);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// Unpacks `bytes` into `<tmp>/dest` with `limits`; returns the error and the temp dir, so a
    /// test can check nothing landed beside `dest`.
    fn refused(bytes: &[u8], limits: Limits) -> (ArchiveError, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let err = unpack_limited(bytes, &digest(bytes), &tmp.path().join("dest"), limits)
            .expect_err("the archive should be refused");
        (err, tmp)
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn unpack_refuses_symlink_entries() {
        let bytes = raw_tar(&[(
            "pack.yaml",
            tar::EntryType::Symlink,
            b"",
            "/proc/self/environ",
        )]);
        let (err, tmp) = refused(&bytes, LIMITS);
        assert_eq!(
            err.to_string(),
            "archive entry \"pack.yaml\" is a symlink; only regular files and directories are unpacked"
        );
        assert!(err.is_bad_input());
        assert!(names(&tmp.path().join("dest")).is_empty());
    }

    #[test]
    fn unpack_refuses_hard_links() {
        let bytes = raw_tar(&[
            ("a", tar::EntryType::Regular, b"x", ""),
            ("pack.yaml", tar::EntryType::Link, b"", "/etc/passwd"),
        ]);
        let (err, _tmp) = refused(&bytes, LIMITS);
        assert!(
            matches!(&err, ArchiveError::UnsupportedEntry { kind, .. } if kind == "hard link"),
            "{err}"
        );
    }

    #[test]
    fn unpack_refuses_devices_and_fifos() {
        for (kind, word) in [
            (tar::EntryType::Char, "device"),
            (tar::EntryType::Block, "device"),
            (tar::EntryType::Fifo, "fifo"),
        ] {
            let (err, tmp) = refused(&raw_tar(&[("dev", kind, b"", "")]), LIMITS);
            assert!(
                matches!(&err, ArchiveError::UnsupportedEntry { kind, .. } if kind == word),
                "{err}"
            );
            assert!(names(&tmp.path().join("dest")).is_empty());
        }
    }

    #[test]
    fn unpack_refuses_gnu_sparse_entries() {
        // A sparse file of 1 GiB holding one byte at its end: 2 KiB in the archive, 1 GiB on disk.
        let mut header = tar::Header::new_gnu();
        header.set_path("big").unwrap();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::GNUSparse);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.realsize.copy_from_slice(b"10000000000\0");
        gnu.sparse[0].offset.copy_from_slice(b"07777777777\0");
        gnu.sparse[0].numbytes.copy_from_slice(b"00000000001\0");
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.push(b'x');
        bytes.resize(512 * 4, 0);
        let (err, _tmp) = refused(&bytes, LIMITS);
        assert!(
            matches!(&err, ArchiveError::UnsupportedEntry { kind, .. } if kind == "GNU sparse file"),
            "{err}"
        );
    }

    #[test]
    fn unpack_never_writes_outside_the_destination() {
        for path in ["../evil", "a/../../evil", "/tmp/attune-evil", "./evil"] {
            let bytes = raw_tar(&[(path, tar::EntryType::Regular, b"pwned", "")]);
            let (err, tmp) = refused(&bytes, LIMITS);
            assert!(
                matches!(err, ArchiveError::EntryEscapes(_)),
                "{path}: {err}"
            );
            assert!(err.to_string().contains("escapes the pack directory"));
            assert_eq!(names(tmp.path()), ["dest"], "{path}");
            assert!(names(&tmp.path().join("dest")).is_empty(), "{path}");
        }
        assert!(!Path::new("/tmp/attune-evil").exists());
    }

    #[test]
    fn unpack_refuses_too_many_entries() {
        let entries: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
        let raw: Vec<_> = entries
            .iter()
            .map(|n| (n.as_str(), tar::EntryType::Regular, &b""[..], ""))
            .collect();
        let limits = Limits {
            entries: 5,
            ..LIMITS
        };
        let (err, _tmp) = refused(&raw_tar(&raw), limits);
        assert_eq!(err.to_string(), "pack has more than 5 entries");
    }

    #[test]
    fn unpack_refuses_a_file_over_the_cap_before_reading_it() {
        // The header claims 64 MiB + 1; the content is not even there.
        let mut header = tar::Header::new_gnu();
        header.set_path("huge").unwrap();
        header.set_size(MAX_FILE_BYTES + 1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let bytes = header.as_bytes().to_vec();
        let (err, _tmp) = refused(&bytes, LIMITS);
        assert!(
            matches!(err, ArchiveError::FileTooLarge { size, max, .. } if size == MAX_FILE_BYTES + 1 && max == MAX_FILE_BYTES),
            "{err}"
        );
    }

    #[test]
    fn unpack_refuses_more_than_the_total_cap() {
        let bytes = raw_tar(&[
            ("a", tar::EntryType::Regular, b"123456", ""),
            ("b", tar::EntryType::Regular, b"123456", ""),
        ]);
        let limits = Limits {
            total_bytes: 10,
            ..LIMITS
        };
        let (err, _tmp) = refused(&bytes, limits);
        assert_eq!(
            err.to_string(),
            "pack files hold more than 10 bytes together"
        );
    }

    #[tokio::test]
    async fn reading_an_archive_stops_at_the_cap() {
        let err = read_limited(tokio::io::repeat(0), 1024).await.unwrap_err();
        assert!(matches!(err, ArchiveError::ArchiveTooLarge { max: 1024 }));
        let ok = read_limited(&b"abc"[..], 1024).await.unwrap();
        assert_eq!(ok, b"abc");
    }

    #[cfg(unix)]
    #[test]
    fn pack_dir_archives_a_symlink_inside_the_pack_as_a_file() {
        let src = sample();
        std::os::unix::fs::symlink("a.sh", src.path().join("actions/b.sh")).unwrap();
        let (bytes, d) = pack_dir(src.path()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        unpack(&bytes, &d, dest.path()).unwrap();
        let b = dest.path().join("actions/b.sh");
        assert!(b.symlink_metadata().unwrap().is_file());
        assert_eq!(fs::read_to_string(b).unwrap(), "echo hi\n");
    }

    #[cfg(unix)]
    #[test]
    fn pack_dir_refuses_a_symlink_loop() {
        let src = sample();
        std::os::unix::fs::symlink("..", src.path().join("actions/up")).unwrap();
        let err = pack_dir(src.path()).unwrap_err();
        assert!(matches!(err, ArchiveError::SymlinkLoop(_)), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn pack_dir_refuses_a_fifo() {
        let src = sample();
        let fifo = src.path().join("actions/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = pack_dir(src.path()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::NotRegular { kind: "fifo", .. }),
            "{err}"
        );
    }

    #[test]
    fn pack_dir_refuses_a_sparse_file_over_the_cap_without_reading_it() {
        let src = sample();
        let f = fs::File::create(src.path().join("actions/huge.bin")).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let started = std::time::Instant::now();
        let err = pack_dir(src.path()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            matches!(&err, ArchiveError::FileTooLarge { path, .. } if path == "actions/huge.bin"),
            "{err}"
        );
    }

    #[test]
    fn pack_dir_applies_the_entry_and_total_caps() {
        let src = sample();
        let entries = Limits {
            entries: 2,
            ..LIMITS
        };
        assert!(matches!(
            pack_dir_limited(src.path(), entries).unwrap_err(),
            ArchiveError::TooManyEntries { max: 2 }
        ));
        let total = Limits {
            total_bytes: 10,
            ..LIMITS
        };
        assert!(matches!(
            pack_dir_limited(src.path(), total).unwrap_err(),
            ArchiveError::TotalTooLarge { max: 10 }
        ));
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
