//! The registry's core: every change to what is registered goes through here.
//!
//! A change is: validate (the pack loader), commit (one redb transaction), publish (mirror the
//! store to KV and the object store) and refresh the in-memory [`View`]. One async mutex puts
//! changes and publishes in a single line, so two publishes never interleave their mirrors and a
//! publish always reflects a committed state.
//!
//! When publishing fails (NATS down, JetStream wiped), the change stays committed — redb is the
//! truth — and the registry is marked dirty; the supervisor in [`crate::serve`] republishes
//! until it succeeds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use attune_nats::api::code;
use attune_nats::archive::{self, ArchiveError};
use attune_nats::{Namespace, PackMeta, Runtime};
use tokio::sync::Mutex;
use tracing::{info, instrument, warn};

use crate::liveness::Liveness;
use crate::pack::{load_pack, LoadedPack, PackErrors, Problem};
use crate::publish::{PublishError, Publisher};
use crate::store::{Availability, Snapshot, Store, StoreError};
use crate::view::View;

/// Why a registry operation, or the registry itself, failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed, or refused the change (not found, conflict).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// JetStream could not be written.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The pack failed validation; nothing changed.
    #[error(transparent)]
    Rejected(#[from] PackErrors),
    /// A `--packs` path is neither a pack nor a directory of packs.
    #[error("{0}")]
    Discover(Problem),
    /// A pack could not be archived or an upload unpacked.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The registry's policy refuses the operation (registration by path).
    #[error("{0}")]
    Forbidden(String),
    /// Something the operation needs is missing (an uploaded archive).
    #[error("{0}")]
    Unavailable(String),
    /// Talking to NATS failed while starting.
    #[error("{what}: {source}")]
    Nats {
        /// What the registry was doing.
        what: &'static str,
        /// The client's explanation.
        #[source]
        source: async_nats::Error,
    },
    /// A file or directory of the registry's own could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl RegistryError {
    /// The API status code this error answers with (see [`attune_nats::api::code`]).
    pub fn code(&self) -> u16 {
        match self {
            RegistryError::Store(StoreError::NotFound(_)) => code::NOT_FOUND,
            RegistryError::Store(StoreError::Conflict(_)) => code::CONFLICT,
            RegistryError::Rejected(_) => code::PACK_REJECTED,
            RegistryError::BadRequest(_) | RegistryError::Discover(_) => code::BAD_REQUEST,
            RegistryError::Forbidden(_) => code::FORBIDDEN,
            RegistryError::Archive(e) if e.is_bad_input() => code::BAD_REQUEST,
            RegistryError::Unavailable(_) => code::UNAVAILABLE,
            _ => code::INTERNAL,
        }
    }
}

/// A registered pack and the warnings its load produced.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The pack as stored, with its digest.
    pub pack: PackMeta,
    /// `file:line: message` of each warning.
    pub warnings: Vec<String>,
}

/// The shared core behind the API, the router's view, availability and the supervisor.
pub struct Registry {
    /// The subject and bucket names.
    pub ns: Namespace,
    /// The source of truth.
    pub store: Store,
    /// The projection to JetStream.
    pub publisher: Publisher,
    /// What the router and `resolve` answer from.
    pub view: Arc<View>,
    /// The registered rules, compiled, that events are evaluated against.
    pub rules: crate::rule::RuleSet,
    /// Live runners from their heartbeats.
    pub liveness: Liveness,
    /// Where uploaded pack archives are unpacked to be loaded.
    uploads_dir: PathBuf,
    /// Directories (canonical) that `pack.register` with a path may name packs inside; empty:
    /// registration by path is refused, so a client cannot make the registry read its host's
    /// files.
    register_from: Vec<PathBuf>,
    /// Serialises changes and publishes.
    write: Mutex<()>,
    /// Set when a publish failed; the supervisor retries.
    dirty: AtomicBool,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("store work does not panic")
}

impl Registry {
    /// A registry over `store`, publishing with `publisher`.
    pub fn new(ns: Namespace, store: Store, publisher: Publisher, data_dir: &Path) -> Self {
        Registry {
            view: Arc::new(View::new(ns.clone())),
            rules: crate::rule::RuleSet::default(),
            ns,
            store,
            publisher,
            liveness: Liveness::default(),
            uploads_dir: data_dir.join("uploads"),
            register_from: Vec::new(),
            write: Mutex::new(()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Allows `pack.register` with a path to name packs inside `dirs` (each canonicalised here, so
    /// a symlink cannot widen it later); without this, registration by path is refused.
    pub fn allow_register_from(mut self, dirs: &[PathBuf]) -> Result<Self, RegistryError> {
        for dir in dirs {
            let real = dir.canonicalize().map_err(|source| RegistryError::Io {
                path: dir.clone(),
                source,
            })?;
            if !real.is_dir() {
                return Err(RegistryError::BadRequest(format!(
                    "--allow-register-from {}: not a directory",
                    dir.display()
                )));
            }
            self.register_from.push(real);
        }
        Ok(self)
    }

    /// The real path of `dir` when registration from it is allowed, else why not.
    fn allowed_dir(&self, dir: &Path) -> Result<PathBuf, RegistryError> {
        if self.register_from.is_empty() {
            return Err(RegistryError::Forbidden(
                "registering by path is disabled on this registry (it was not started with --allow-register-from DIR); upload the pack instead: `attune pack register DIR` without --on-registry-host".into(),
            ));
        }
        let inside = |p: &Path| self.register_from.iter().any(|a| p.starts_with(a));
        let outside = || {
            RegistryError::Forbidden(format!(
                "{}: outside every directory this registry allows registering from (--allow-register-from); upload the pack instead: `attune pack register DIR` without --on-registry-host",
                dir.display()
            ))
        };
        match dir.canonicalize() {
            Ok(real) if inside(&real) => Ok(real),
            Ok(_) => Err(outside()),
            // Says "missing" only inside an allowed directory: no probing the host's files.
            Err(_) if dir.is_absolute() && inside(dir) => Err(RegistryError::BadRequest(format!(
                "{}: no such pack directory on the registry's host",
                dir.display()
            ))),
            Err(_) => Err(outside()),
        }
    }

    /// Everything registered now.
    pub async fn snapshot(&self) -> Result<Snapshot, RegistryError> {
        let store = self.store.clone();
        blocking(move || Ok(store.snapshot()?)).await
    }

    /// Loads and stores the pack in `dir` without publishing (start-up registers every pack,
    /// then publishes once).
    pub async fn load_and_store(&self, dir: PathBuf) -> Result<Registered, RegistryError> {
        let store = self.store.clone();
        blocking(move || {
            if !dir.is_dir() {
                return Err(RegistryError::BadRequest(format!(
                    "{}: no such pack directory on the registry's host",
                    dir.display()
                )));
            }
            let registered = store.snapshot()?.runtimes;
            let loaded = load_pack(&dir, &registered)?;
            let (bytes, digest) = archive::pack_dir(&dir)?;
            store_loaded(&store, &loaded, &digest, &bytes)
        })
        .await
    }

    /// `pack.register` with a directory on this host: only inside the directories given to
    /// [`allow_register_from`](Self::allow_register_from), after resolving symlinks.
    #[instrument(skip(self), fields(dir = %dir.display()))]
    pub async fn register_dir(&self, dir: PathBuf) -> Result<Registered, RegistryError> {
        let dir = self.allowed_dir(&dir)?;
        let _write = self.write.lock().await;
        let done = self.load_and_store(dir).await?;
        info!(pack = %done.pack.reference, digest = %done.pack.digest, "pack registered");
        self.publish_locked().await;
        Ok(done)
    }

    /// `pack.register` with an archive the client put in the object store under `digest`.
    #[instrument(skip(self))]
    pub async fn register_upload(&self, digest: String) -> Result<Registered, RegistryError> {
        let valid = digest.starts_with("sha256-")
            && digest.len() > 7
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(RegistryError::BadRequest(format!(
                "\"{digest}\" is not a pack digest (sha256-<hex>)"
            )));
        }
        let files = self.publisher.pack_files().await?;
        let object = files.get(&digest).await.map_err(|e| {
            RegistryError::Unavailable(format!(
                "pack archive {digest} is not in the object store ({e}); upload it first"
            ))
        })?;
        let bytes = archive::read_archive(object).await.map_err(|e| match e {
            ArchiveError::Read { source } => {
                RegistryError::Unavailable(format!("reading pack archive {digest}: {source}"))
            }
            other => RegistryError::Archive(other),
        })?;

        let _write = self.write.lock().await;
        let store = self.store.clone();
        let dir = self.uploads_dir.join(&digest);
        let done = blocking(move || {
            // A leftover from an interrupted upload must not mix with this one.
            let _ = std::fs::remove_dir_all(&dir);
            let result = (|| {
                archive::unpack(&bytes, &digest, &dir)?;
                let registered = store.snapshot()?.runtimes;
                let loaded = load_pack(&dir, &registered)?;
                store_loaded(&store, &loaded, &digest, &bytes)
            })();
            // The archive bytes now live in redb; the unpacked copy was only for loading.
            let _ = std::fs::remove_dir_all(&dir);
            result
        })
        .await?;
        info!(pack = %done.pack.reference, "uploaded pack registered");
        self.publish_locked().await;
        Ok(done)
    }

    /// `pack.remove`.
    #[instrument(skip(self))]
    pub async fn remove_pack(&self, pack_ref: String) -> Result<(), RegistryError> {
        let _write = self.write.lock().await;
        let store = self.store.clone();
        blocking(move || Ok(store.remove_pack(&pack_ref)?)).await?;
        self.publish_locked().await;
        Ok(())
    }

    /// `version.set_default`; `runtime` may be an alias.
    #[instrument(skip(self))]
    pub async fn set_default(
        &self,
        runtime: &str,
        version: String,
    ) -> Result<Runtime, RegistryError> {
        let _write = self.write.lock().await;
        let name = self.runtime_name(runtime).await?;
        let store = self.store.clone();
        let n = name.clone();
        blocking(move || Ok(store.set_default(&n, &version)?)).await?;
        self.publish_locked().await;
        self.runtime(&name).await
    }

    /// `version.set_enabled`; `runtime` may be an alias.
    #[instrument(skip(self))]
    pub async fn set_enabled(
        &self,
        runtime: &str,
        version: String,
        enabled: bool,
    ) -> Result<Runtime, RegistryError> {
        let _write = self.write.lock().await;
        let name = self.runtime_name(runtime).await?;
        let store = self.store.clone();
        let n = name.clone();
        blocking(move || Ok(store.set_enabled(&n, &version, enabled)?)).await?;
        self.publish_locked().await;
        self.runtime(&name).await
    }

    /// Enables or disables a rule; the choice outlives re-registrations of its pack.
    pub async fn set_rule_enabled(
        &self,
        reference: String,
        enabled: bool,
    ) -> Result<attune_nats::Rule, RegistryError> {
        let _write = self.write.lock().await;
        let store = self.store.clone();
        let rule = blocking(move || Ok(store.set_rule_enabled(&reference, enabled)?)).await?;
        self.publish_locked().await;
        Ok(rule)
    }

    /// Enables or disables a sensor (in its pack's metadata too, which runners follow), and
    /// publishes.
    pub async fn set_sensor_enabled(
        &self,
        reference: String,
        enabled: bool,
    ) -> Result<attune_nats::Sensor, RegistryError> {
        let _write = self.write.lock().await;
        let store = self.store.clone();
        let (sensor, _meta) =
            blocking(move || Ok(store.set_sensor_enabled(&reference, enabled)?)).await?;
        self.publish_locked().await;
        Ok(sensor)
    }

    /// Records which versions live runners serve, and publishes if that changed anything.
    pub async fn apply_availability(&self, live: Availability) -> Result<(), RegistryError> {
        let _write = self.write.lock().await;
        let store = self.store.clone();
        let changed = blocking(move || Ok(store.set_availability(&live)?)).await?;
        if changed {
            self.publish_locked().await;
        }
        Ok(())
    }

    /// Publishes everything (start-up, a wiped JetStream, a retry after a failed publish).
    pub async fn republish(&self) -> Result<(), RegistryError> {
        let _write = self.write.lock().await;
        self.dirty.store(false, Ordering::SeqCst);
        let snap = self.snapshot().await?;
        self.remember(&snap);
        if let Err(e) = Box::pin(self.publisher.publish(&snap, &self.store)).await {
            self.dirty.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    /// Makes what is held in memory (the router's view, the compiled rules) the committed state.
    fn remember(&self, snap: &Snapshot) {
        self.view.replace(&snap.runtimes, &snap.actions);
        self.rules.replace(&snap.rules);
        self.rules.replace_triggers(&snap.triggers);
    }

    /// Whether a publish failed since the last successful one.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// One runtime by name or alias.
    pub async fn runtime(&self, name: &str) -> Result<Runtime, RegistryError> {
        let snap = self.snapshot().await?;
        snap.runtimes
            .into_iter()
            .find(|r| r.answers_to(name))
            .ok_or_else(|| {
                StoreError::NotFound(format!("no runtime \"{name}\" is registered")).into()
            })
    }

    async fn runtime_name(&self, name_or_alias: &str) -> Result<String, RegistryError> {
        Ok(self.runtime(name_or_alias).await?.name)
    }

    /// Publishes the committed state; called with the write lock held. A failure is logged and
    /// left to the supervisor, because the change itself has been committed.
    async fn publish_locked(&self) {
        let snap = match self.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "reading the store for publication failed");
                self.dirty.store(true, Ordering::SeqCst);
                return;
            }
        };
        // Memory first: the change steers the next by-name request even if JetStream is down.
        self.remember(&snap);
        if let Err(e) = Box::pin(self.publisher.publish(&snap, &self.store)).await {
            warn!(error = %e, "publishing failed; will retry");
            self.dirty.store(true, Ordering::SeqCst);
        }
    }
}

fn store_loaded(
    store: &Store,
    loaded: &LoadedPack,
    digest: &str,
    bytes: &[u8],
) -> Result<Registered, RegistryError> {
    let pack = store.upsert_pack(loaded, digest, bytes, time::OffsetDateTime::now_utc())?;
    Ok(Registered {
        pack,
        warnings: loaded.warnings.iter().map(ToString::to_string).collect(),
    })
}
