//! The runner's private scratch directory (`<cache_dir>/params`): parameter files and the
//! records of running process groups, readable by the runner's user alone.
//!
//! Parameter files can hold secrets, so the directory is `0700`: created with that mode, and
//! narrowed if it exists with a wider one (or refused if it is not a directory the runner owns).
//! At start-up, whatever a crashed runner left there is dealt with: the process groups it
//! recorded are killed ([`crate::contain::kill_recorded`]) and every file is removed.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The only mode the directory may have.
pub const MODE: u32 = 0o700;

/// Makes sure `dir` exists as a directory of this user with mode `0700`.
pub fn ensure(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Not followed: a symlink planted in the cache dir must not redirect parameter files.
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by this user: refusing to keep parameter files there",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o7777 != MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(MODE))?;
    }
    Ok(())
}

/// Prepares the directory at start-up: `0700`, the recorded groups of a previous runner killed,
/// every leftover file removed. Returns how many files were removed.
pub fn prepare(dir: &Path) -> std::io::Result<usize> {
    ensure(dir)?;
    crate::contain::kill_recorded(dir);
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let gone = if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match gone {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed files left by a previous runner");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_directory_is_narrowed_and_leftovers_go() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache").join("params");
        ensure(&dir).unwrap();
        let mode = |d: &Path| std::fs::metadata(d).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(dir.join("stale.json"), "{}").unwrap();
        assert_eq!(prepare(&dir).unwrap(), 1);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        let link = root.path().join("link");
        std::os::unix::fs::symlink(root.path(), &link).unwrap();
        assert!(ensure(&link).is_err(), "a symlink is refused");
    }
}
