//! Pack code on this runner: fetched from the object store by digest into the runner's own cache.
//!
//! No disk is shared with the registry. Each pack version lives in
//! `<cache_dir>/packs/<pack>/<digest>/`, unpacked into a temporary sibling and renamed into place,
//! so a directory that exists is complete. When a new digest arrives the old directory is only
//! marked superseded: it is removed when the last [`PackDir`] handle is dropped, so an execution
//! that started on the old files keeps them until it ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_nats::jetstream::object_store::ObjectStore;
use attune_nats::archive;
use attune_nats::PackMeta;
use tracing::{debug, info, instrument};

/// One unpacked pack version. Shared by the catalog and every execution using it.
#[derive(Debug)]
pub struct PackDir {
    /// The pack ref.
    pub pack: String,
    /// The archive digest the files came from.
    pub digest: String,
    /// `<cache_dir>/packs/<pack>/<digest>`.
    pub path: PathBuf,
    /// Set when a newer digest replaced this one: the directory goes with the last handle.
    superseded: AtomicBool,
    /// Entry points already resolved and found inside the pack (entry point → script). The
    /// files of one digest never change, so each is resolved once, not per invocation.
    scripts: Mutex<HashMap<String, PathBuf>>,
}

impl PackDir {
    /// The files of `pack` at `digest`, unpacked at `path`.
    pub fn new(pack: impl Into<String>, digest: impl Into<String>, path: PathBuf) -> Self {
        PackDir {
            pack: pack.into(),
            digest: digest.into(),
            path,
            superseded: AtomicBool::new(false),
            scripts: Mutex::default(),
        }
    }

    /// `actions/<entry_point>` resolved, refused if it lands outside the pack (a symlink
    /// pointing out) or does not exist. Successes are remembered: this digest's files are fixed.
    pub fn script(&self, entry_point: &str) -> Result<PathBuf, String> {
        self.script_in("actions", entry_point)
    }

    /// `sensors/<entry_point>` resolved, with the same checks as [`PackDir::script`].
    pub fn sensor_script(&self, entry_point: &str) -> Result<PathBuf, String> {
        self.script_in("sensors", entry_point)
    }

    fn script_in(&self, dir: &str, entry_point: &str) -> Result<PathBuf, String> {
        let key = format!("{dir}/{entry_point}");
        if let Some(s) = self.scripts.lock().expect("not poisoned").get(&key) {
            return Ok(s.clone());
        }
        let script = contained_script(&self.path, dir, entry_point)?;
        self.scripts
            .lock()
            .expect("not poisoned")
            .insert(key, script.clone());
        Ok(script)
    }

    /// Marks this version as replaced; its directory is deleted when no one uses it any more.
    pub fn supersede(&self) {
        self.superseded.store(true, Ordering::Release);
    }
}

impl Drop for PackDir {
    fn drop(&mut self) {
        if self.superseded.load(Ordering::Acquire) {
            debug!(path = %self.path.display(), "removing superseded pack files");
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `<pack>/<dir>/<entry_point>` (`dir`: `actions` or `sensors`), resolved, and refused if it lands outside the pack (a symlink
/// pointing out) or does not exist.
pub fn contained_script(pack_dir: &Path, dir: &str, entry_point: &str) -> Result<PathBuf, String> {
    let script = pack_dir.join(dir).join(entry_point);
    let resolved = script
        .canonicalize()
        .map_err(|e| format!("entry point {entry_point:?} not found in the pack: {e}"))?;
    if !resolved.starts_with(pack_dir) {
        return Err(format!("entry point {entry_point:?} escapes the pack"));
    }
    Ok(resolved)
}

/// Why a pack could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The metadata carries no digest (the registry has not uploaded it).
    #[error("pack {0} has no archive digest")]
    NoDigest(String),
    /// The object store did not give the archive.
    #[error("fetching pack {pack} archive {digest}: {message}")]
    Fetch {
        /// The pack ref.
        pack: String,
        /// The object name.
        digest: String,
        /// The client's explanation.
        message: String,
    },
    /// The archive is corrupt or escapes.
    #[error("unpacking pack {pack}: {source}")]
    Unpack {
        /// The pack ref.
        pack: String,
        /// Why.
        source: archive::ArchiveError,
    },
    /// A file operation in the cache failed.
    #[error("pack cache {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The cache of unpacked packs.
#[derive(Clone)]
pub struct PackCache {
    /// `<cache_dir>/packs`.
    root: PathBuf,
    /// `attune-pack-files`.
    store: ObjectStore,
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackCache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl PackCache {
    /// A cache under `cache_dir`, reading from `store`.
    pub fn new(cache_dir: &Path, store: ObjectStore) -> Self {
        PackCache {
            root: cache_dir.join("packs"),
            store,
        }
    }

    /// Makes the files of `meta`'s digest present locally and returns their directory.
    #[instrument(skip_all, fields(pack = %meta.reference, digest = %meta.digest))]
    pub async fn fetch(&self, meta: &PackMeta) -> Result<PackDir, PackError> {
        if meta.digest.is_empty() {
            return Err(PackError::NoDigest(meta.reference.clone()));
        }
        let path = self.root.join(&meta.reference).join(&meta.digest);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PackError::Io { path, source }
        };
        if !path.is_dir() {
            let fetch_err = |message: String| PackError::Fetch {
                pack: meta.reference.clone(),
                digest: meta.digest.clone(),
                message,
            };
            let object = self
                .store
                .get(&meta.digest)
                .await
                .map_err(|e| fetch_err(e.to_string()))?;
            let bytes = archive::read_archive(object)
                .await
                .map_err(|e| fetch_err(e.to_string()))?;
            let parent = path.parent().expect("has a parent");
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
            let tmp = parent.join(format!(".{}.tmp-{}", meta.digest, uuid::Uuid::new_v4()));
            let (pack, digest, tmp2, dest) = (
                meta.reference.clone(),
                meta.digest.clone(),
                tmp.clone(),
                path.clone(),
            );
            tokio::task::spawn_blocking(move || {
                archive::unpack(&bytes, &digest, &tmp2)
                    .map_err(|source| PackError::Unpack { pack, source })?;
                std::fs::rename(&tmp2, &dest).map_err(|source| PackError::Io {
                    path: dest.clone(),
                    source,
                })
            })
            .await
            .expect("unpack task does not panic")
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&tmp);
            })?;
            info!(path = %path.display(), "pack fetched");
        }
        // Canonical, so the executor's "does the script stay in the pack" check compares like
        // with like even when the cache dir is reached through a symlink.
        let path = path.canonicalize().map_err(io(&path))?;
        Ok(PackDir::new(&meta.reference, &meta.digest, path))
    }
}
