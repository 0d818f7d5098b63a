//! The runner's life: start-up (in docs/runner.md's order), reconciliation on KV changes, drain.
//!
//! [`start`] connects the pieces and returns a [`RunnerHandle`] once the runner serves;
//! [`run`] is start + wait for a shutdown future + drain, what `attune runner start` calls.
//!
//! One reconciler task owns every change: KV watch tasks only forward entries to it. After each
//! batch of changes it *converges*: verifies versions not yet verified (or whose definition
//! changed), fetches packs whose digest changed, sets up the environments those need, then
//! publishes the new state and starts endpoints for newly verified versions. Doing it in one
//! place means no two environment builds of one runner ever race, and start-up is simply the
//! first convergence.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use attune_nats::jetstream::{ensure_kv, ensure_pack_files, Bucket, StoreError};
use attune_nats::model::RuntimeVersion;
use attune_nats::{Action, PackMeta, Runtime};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, instrument, warn};

use crate::catalog::{env_key, Catalog, EnvReady, Served};
use crate::check::PreparedAction;
use crate::config::RunnerConfig;
use crate::env::{self, EnvRequest, HostLock};
use crate::heartbeat::Heartbeat;
use crate::jobs::Jobs;
use crate::packs::{PackCache, PackDir};
use crate::service::{base_env, Dispatcher, Endpoints, Tracker};
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::verify;

/// How many environments one runner builds at the same time.
const ENV_BUILDS_AT_ONCE: usize = 4;

/// Longest wait for NATS in one drain step (heartbeat, flush), so a drain ends without a server.
const NATS_STEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the runner could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A bucket or the object store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading KV at start-up failed.
    #[error("reading {bucket} at start-up: {message}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// The client's explanation.
        message: String,
    },
    /// The micro service could not start.
    #[error("starting the attune-runner service: {0}")]
    Service(String),
    /// The cache dir is unusable or used by another runner.
    #[error("cache dir {path}: {message}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The configuration cannot work.
    #[error("invalid runner configuration: {0}")]
    Config(String),
}

/// A change seen on KV.
#[derive(Debug)]
enum Change {
    /// A runtime was put (`Some`) or deleted (`None`).
    Runtime(String, Option<Runtime>),
    /// An action was put or deleted.
    Action(String, Option<Action>),
    /// A pack's metadata was put or deleted.
    Pack(String, Option<PackMeta>),
}

/// A running runner. Drop it only after [`RunnerHandle::drain`].
#[derive(Debug)]
pub struct RunnerHandle {
    /// The shared invocation state.
    dispatcher: Arc<Dispatcher>,
    /// The served endpoints.
    endpoints: Arc<Endpoints>,
    /// The async job pull loops.
    jobs: Arc<Jobs>,
    /// Stops the reconciler and watches.
    shutdown: ShutdownTrigger,
    /// Stops the heartbeat loop (after drain).
    heartbeat_stop: ShutdownTrigger,
    /// The heartbeat writer.
    heartbeat: Heartbeat,
    /// Kills running processes when the drain grace is over.
    abort: watch::Sender<bool>,
    /// Background tasks, joined on drain.
    tasks: Vec<JoinHandle<()>>,
    /// The client, flushed on drain so every reply leaves.
    client: async_nats::Client,
    /// Holds the cache dir's lock for the runner's life.
    _cache_lock: HostLock,
}

impl RunnerHandle {
    /// The runner id.
    pub fn id(&self) -> &str {
        &self.dispatcher.config.name
    }

    /// The versions served now.
    pub fn verified(&self) -> Vec<attune_nats::wire::VerifiedVersion> {
        self.dispatcher.catalog.verified_versions()
    }

    /// Invocations accepted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.dispatcher.tracker.count()
    }

    /// Drains: stop taking work, let accepted invocations finish (up to the drain grace, then
    /// kill them and answer `failed`), remove the heartbeat.
    #[instrument(skip_all, fields(runner = %self.dispatcher.config.name))]
    pub async fn drain(self) {
        info!("draining");
        self.heartbeat.draining.store(true, Ordering::Release);
        self.shutdown.trigger();
        self.endpoints.stop().await;
        self.jobs.stop().await;
        // NATS may be gone while we drain: nothing here may wait for it forever.
        let _ = tokio::time::timeout(NATS_STEP, self.heartbeat.beat()).await;
        let grace = self.dispatcher.config.drain_grace;
        if tokio::time::timeout(grace, self.dispatcher.tracker.idle())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                left = self.dispatcher.tracker.count(),
                "drain grace over: killing in-flight work"
            );
            self.abort.send_replace(true);
            self.dispatcher.tracker.idle().await;
        }
        self.heartbeat_stop.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = tokio::time::timeout(NATS_STEP, self.heartbeat.remove()).await;
        let _ = tokio::time::timeout(NATS_STEP, self.client.flush()).await;
        info!("drained");
    }
}

/// Starts a runner and waits for `shutdown`, then drains. What `attune runner start` runs.
pub async fn run(
    config: RunnerConfig,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunnerError> {
    let handle = start(config, client).await?;
    shutdown.await;
    handle.drain().await;
    Ok(())
}

/// Starts a runner: load KV, verify, fetch packs, build environments, serve, heartbeat. Returns
/// once the runner serves every version it verified.
#[instrument(skip_all, fields(runner = %config.name))]
pub async fn start(
    config: RunnerConfig,
    client: async_nats::Client,
) -> Result<RunnerHandle, RunnerError> {
    if config.concurrency == 0 {
        return Err(RunnerError::Config("concurrency must be at least 1".into()));
    }
    let cache_lock = lock_cache_dir(&config).await?;
    let js = jetstream::new(client.clone());
    let ns = &config.namespace;
    let runtimes_kv = ensure_kv(&js, ns, Bucket::Runtimes, &config.store).await?;
    let actions_kv = ensure_kv(&js, ns, Bucket::Actions, &config.store).await?;
    let packs_kv = ensure_kv(&js, ns, Bucket::Packs, &config.store).await?;
    let runners_kv = ensure_kv(&js, ns, Bucket::Runners, &config.store).await?;
    let pack_files = ensure_pack_files(&js, ns, &config.store).await?;

    let (abort_tx, abort_rx) = watch::channel(false);
    let catalog = Arc::new(Catalog::default());
    let dispatcher = Arc::new(Dispatcher {
        slots: Semaphore::new(config.concurrency),
        tracker: Arc::new(Tracker::default()),
        base_env: base_env(&config.path),
        abort: abort_rx,
        params_dir: config.cache_dir.join("params"),
        catalog: catalog.clone(),
        config,
    });
    let endpoints = Arc::new(
        Endpoints::start(&client, &dispatcher.config)
            .await
            .map_err(|e| RunnerError::Service(e.to_string()))?,
    );
    let jobs = Arc::new(Jobs::start(&client, &dispatcher.config).await?);
    let mut reconciler = Reconciler {
        dispatcher: dispatcher.clone(),
        endpoints: endpoints.clone(),
        jobs: jobs.clone(),
        packs: PackCache::new(&dispatcher.config.cache_dir, pack_files),
    };

    // Start-up is the first convergence over a snapshot of the three buckets; the watches then
    // continue from the revision each snapshot ended at.
    let (tx, rx) = mpsc::channel(1024);
    let (shutdown_tx, shutdown_rx) = shutdown::channel();
    let mut tasks = Vec::new();
    let mut snapshot = Vec::new();
    for (store, kind) in [
        (&runtimes_kv, Kind::Runtime),
        (&actions_kv, Kind::Action),
        (&packs_kv, Kind::Pack),
    ] {
        let (entries, revision) = read_all(store).await?;
        snapshot.extend(entries.into_iter().map(|(k, v)| kind.change(k, Some(v))));
        tasks.push(tokio::spawn(watch_bucket(
            store.clone(),
            revision,
            kind,
            tx.clone(),
            shutdown_rx.clone(),
        )));
    }
    for change in snapshot {
        reconciler.apply(change);
    }
    reconciler.converge().await;

    let started_at = attune_nats::time::now_rfc3339();
    let heartbeat = Heartbeat {
        store: runners_kv,
        catalog,
        dispatcher: dispatcher.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        started_at,
    };
    let (heartbeat_stop, heartbeat_rx) = shutdown::channel();
    heartbeat.beat().await;
    tasks.push(tokio::spawn(heartbeat.clone().run(heartbeat_rx)));
    tasks.push(tokio::spawn(reconciler.run(rx, shutdown_rx)));
    info!(versions = ?dispatcher.catalog.verified_versions().iter().map(|v| format!("{} {}", v.runtime, v.version)).collect::<Vec<_>>(), "runner serving");
    Ok(RunnerHandle {
        dispatcher,
        endpoints,
        jobs,
        shutdown: shutdown_tx,
        heartbeat_stop,
        heartbeat,
        abort: abort_tx,
        tasks,
        client,
        _cache_lock: cache_lock,
    })
}

/// Takes the cache dir for this runner alone: two runners sharing one would delete each other's
/// superseded pack files.
async fn lock_cache_dir(config: &RunnerConfig) -> Result<HostLock, RunnerError> {
    let path = config.cache_dir.clone();
    let err = |message: String| RunnerError::CacheDir {
        path: path.clone(),
        message,
    };
    std::fs::create_dir_all(&path).map_err(|e| err(e.to_string()))?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(".runner.lock"))
        .map_err(|e| err(e.to_string()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid while `file` lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(err(
            "in use by another runner on this host: give each runner its own --cache-dir".into(),
        ));
    }
    drop(file);
    // Re-taken through HostLock so the guard type is the same as environments use.
    tokio::task::spawn_blocking(move || HostLock::acquire(&path.join(".runner.lock")))
        .await
        .expect("lock task does not panic")
        .map_err(|e| RunnerError::CacheDir {
            path: config.cache_dir.clone(),
            message: e.to_string(),
        })
}

/// Which bucket a watch reads.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Runtime,
    Action,
    Pack,
}

impl Kind {
    fn change(self, key: String, value: Option<bytes::Bytes>) -> Change {
        fn parse<T: serde::de::DeserializeOwned>(key: &str, v: Option<bytes::Bytes>) -> Option<T> {
            let v = v?;
            match serde_json::from_slice(&v) {
                Ok(t) => Some(t),
                Err(e) => {
                    error!(%key, error = %e, "ignoring a KV value that does not parse");
                    None
                }
            }
        }
        match self {
            Kind::Runtime => {
                let rt = parse::<Runtime>(&key, value).map(|mut r| {
                    r.normalize();
                    r
                });
                Change::Runtime(key, rt)
            }
            Kind::Action => {
                let a = parse(&key, value);
                Change::Action(key, a)
            }
            Kind::Pack => {
                let p = parse(&key, value);
                Change::Pack(key, p)
            }
        }
    }
}

/// Every key's current value and the bucket revision they reflect.
async fn read_all(store: &kv::Store) -> Result<(Vec<(String, bytes::Bytes)>, u64), RunnerError> {
    let err = |e: &dyn std::fmt::Display| RunnerError::Kv {
        bucket: store.name.clone(),
        message: e.to_string(),
    };
    let mut status = store.status().await.map_err(|e| err(&e))?;
    let revision = status.info.state.last_sequence;
    let _ = &mut status;
    let keys: Vec<String> = match store.keys().await {
        Ok(k) => k.try_collect().await.map_err(|e| err(&e))?,
        Err(e) => return Err(err(&e)),
    };
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(v) = store.get(&key).await.map_err(|e| err(&e))? {
            out.push((key, v));
        }
    }
    Ok((out, revision))
}

/// Forwards every change after `revision` to the reconciler until shutdown.
async fn watch_bucket(
    store: kv::Store,
    revision: u64,
    kind: Kind,
    tx: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    let mut watch = match store.watch_all_from_revision(revision + 1).await {
        Ok(w) => w,
        Err(e) => {
            error!(bucket = %store.name, error = %e, "cannot watch: changes will not be seen until restart");
            return;
        }
    };
    loop {
        let entry = tokio::select! {
            _ = shutdown.recv() => break,
            e = watch.next() => e,
        };
        match entry {
            Some(Ok(entry)) => {
                let value = matches!(entry.operation, kv::Operation::Put).then_some(entry.value);
                if tx.send(kind.change(entry.key, value)).await.is_err() {
                    break;
                }
            }
            Some(Err(e)) => warn!(bucket = %store.name, error = %e, "watch error"),
            None => {
                error!(bucket = %store.name, "watch ended");
                break;
            }
        }
    }
}

/// Applies KV changes and converges the runner's state on them.
struct Reconciler {
    /// Shared invocation state (config, catalog).
    dispatcher: Arc<Dispatcher>,
    /// Where new endpoints are added.
    endpoints: Arc<Endpoints>,
    /// Where pull loops of newly served versions are started.
    jobs: Arc<Jobs>,
    /// Pack fetching.
    packs: PackCache,
}

/// A version's definition as text, to notice when it changes (registry-kept state excluded).
fn definition(v: &RuntimeVersion) -> String {
    let mut v = v.clone();
    v.available = false;
    v.verified_at = None;
    v.enabled = true;
    v.is_default = false;
    serde_json::to_string(&v).expect("a version serialises")
}

impl Reconciler {
    async fn run(mut self, mut rx: mpsc::Receiver<Change>, mut shutdown: Shutdown) {
        loop {
            let change = tokio::select! {
                _ = shutdown.recv() => break,
                c = rx.recv() => match c { Some(c) => c, None => break },
            };
            self.dispatcher.catalog.begin_converging();
            self.apply(change);
            // Take everything already queued, so a burst of registrations converges once.
            while let Ok(more) = rx.try_recv() {
                self.apply(more);
            }
            self.converge().await;
            self.dispatcher.catalog.end_converging();
        }
        debug!("reconciler stopped");
    }

    fn apply(&mut self, change: Change) {
        debug!(?change, "KV change");
        self.dispatcher.catalog.write(|s| match change {
            Change::Runtime(name, Some(rt)) => {
                s.runtimes.insert(name, rt);
            }
            Change::Runtime(name, None) => {
                s.runtimes.remove(&name);
            }
            Change::Action(key, Some(a)) => match PreparedAction::new(a) {
                Ok(p) => {
                    s.actions.insert(key, Arc::new(p));
                }
                Err(e) => {
                    error!(error = %e, "action cannot be served");
                    s.actions.remove(&key);
                }
            },
            Change::Action(key, None) => {
                s.actions.remove(&key);
            }
            Change::Pack(key, Some(meta)) => {
                s.pack_meta.insert(key, meta);
            }
            Change::Pack(key, None) => {
                s.pack_meta.remove(&key);
                if let Some(old) = s.pack_dirs.remove(&key) {
                    old.supersede();
                }
                s.envs.remove(&key);
            }
        });
    }

    /// Brings verification, pack files, environments and endpoints in line with the catalog.
    #[instrument(skip_all)]
    async fn converge(&mut self) {
        let config = &self.dispatcher.config;
        let catalog = &self.dispatcher.catalog;

        // 1. Verify versions that are new or changed, for the runtimes this runner may serve.
        let (to_verify, gone) = catalog.read(|s| {
            let mut todo = Vec::new();
            let mut wanted = HashSet::new();
            for rt in s.runtimes.values() {
                if !config.runtimes.is_empty() && !config.runtimes.iter().any(|n| rt.answers_to(n))
                {
                    continue;
                }
                for v in &rt.versions {
                    wanted.insert((rt.name.clone(), v.version.clone()));
                    let def = definition(v);
                    let served_same = s
                        .served
                        .get(&rt.name)
                        .and_then(|m| m.get(&v.version))
                        .is_some_and(|sv| sv.definition == def);
                    let failed_same = s
                        .unavailable
                        .get(&(rt.name.clone(), v.version.clone()))
                        .is_some_and(|(d, _)| *d == def);
                    if !served_same && !failed_same {
                        todo.push((rt.name.clone(), v.clone(), def));
                    }
                }
            }
            let gone: Vec<(String, String)> = s
                .served
                .iter()
                .flat_map(|(r, m)| m.keys().map(move |v| (r.clone(), v.clone())))
                .filter(|k| !wanted.contains(k))
                .collect();
            (todo, gone)
        });
        let base_env = &self.dispatcher.base_env;
        let results = futures::future::join_all(to_verify.iter().map(|(rt, v, _)| {
            verify::verify_version(rt, v, base_env, &config.path, config.verify_timeout)
        }))
        .await;
        let mut newly_served = Vec::new();
        catalog.write(|s| {
            for (rt, v) in &gone {
                info!(runtime = %rt, version = %v, "no longer registered: not served");
                if let Some(m) = s.served.get_mut(rt) {
                    m.remove(v);
                }
            }
            for ((rt, v, def), result) in to_verify.into_iter().zip(results) {
                let key = (rt.clone(), v.version.clone());
                match result {
                    Ok(verified) => {
                        s.unavailable.remove(&key);
                        let served = Arc::new(Served {
                            verified,
                            config: v
                                .execution_config
                                .clone()
                                .expect("verified versions have a config"),
                            definition: def,
                            live: AtomicBool::new(false),
                        });
                        newly_served.push(served.clone());
                        s.served
                            .entry(rt)
                            .or_default()
                            .insert(v.version.clone(), served);
                    }
                    Err(why) => {
                        if let Some(m) = s.served.get_mut(&rt) {
                            m.remove(&v.version);
                        }
                        s.unavailable.insert(key, (def, why.reason));
                    }
                }
            }
        });

        // 2. Fetch packs whose digest changed (published only after their environments).
        let metas: Vec<PackMeta> = catalog.read(|s| {
            s.pack_meta
                .values()
                .filter(|m| {
                    s.pack_dirs
                        .get(&m.reference)
                        .is_none_or(|d| d.digest != m.digest)
                })
                .cloned()
                .collect()
        });
        let mut fresh: HashMap<String, Arc<PackDir>> = HashMap::new();
        for meta in metas {
            match self.packs.fetch(&meta).await {
                Ok(dir) => {
                    fresh.insert(meta.reference.clone(), Arc::new(dir));
                }
                Err(e) => error!(error = %e, "pack not fetched"),
            }
        }

        // 3. Environments for every (pack, served version) an action of the pack can use.
        let jobs = catalog.read(|s| {
            let mut jobs = Vec::new();
            let mut seen = HashSet::new();
            for prepared in s.actions.values() {
                let a = &prepared.action;
                let Some(dir) = fresh.get(&a.pack).or_else(|| s.pack_dirs.get(&a.pack)) else {
                    continue;
                };
                let Some(versions) = s.served.get(&a.runtime) else {
                    continue;
                };
                for (vname, served) in versions {
                    if !env::wants_env(&served.config) || !prepared.accepts_version(vname) {
                        continue;
                    }
                    let key = env_key(&a.runtime, vname);
                    if !seen.insert((a.pack.clone(), key.clone())) {
                        continue;
                    }
                    let current = s.envs.get(&a.pack).and_then(|m| m.get(&key));
                    if current.is_some_and(|e| {
                        e.digest == dir.digest && e.binary == served.verified.binary
                    }) {
                        continue;
                    }
                    jobs.push((dir.clone(), served.clone()));
                }
            }
            jobs
        });
        // Builds are mostly waiting on child processes (venv, pip): run a few at once.
        let builds = jobs.into_iter().map(|(dir, served)| async move {
            let v = &served.verified;
            let req = EnvRequest {
                envs_dir: &config.envs_dir,
                pack: &dir.pack,
                runtime: &v.runtime,
                version: &v.version,
                config: &served.config,
                interpreter: &v.binary,
                pack_dir: &dir.path,
                env: base_env,
            };
            match env::ensure(&req).await {
                Ok(Some(interpreter)) => Some((
                    dir.pack.clone(),
                    env_key(&v.runtime, &v.version),
                    EnvReady {
                        interpreter,
                        digest: dir.digest.clone(),
                        binary: v.binary.clone(),
                    },
                )),
                Ok(None) => None,
                Err(e) => {
                    error!(error = %e, "environment not ready");
                    None
                }
            }
        });
        let built: Vec<_> = futures::stream::iter(builds)
            .buffer_unordered(ENV_BUILDS_AT_ONCE)
            .filter_map(|b| async move { b })
            .collect()
            .await;

        // 4. Publish, then serve the newly verified versions.
        catalog.write(|s| {
            for (pack, key, ready) in built {
                s.envs.entry(pack).or_default().insert(key, ready);
            }
            for (pack, dir) in fresh {
                if let Some(old) = s.pack_dirs.insert(pack, dir) {
                    old.supersede();
                }
            }
        });
        for served in newly_served {
            // Jobs first: once the endpoint is live the version is advertised as available.
            if let Err(e) = self.jobs.add(&self.dispatcher, &served).await {
                error!(error = %e, runtime = %served.verified.runtime, version = %served.verified.version, "not pulling jobs");
            }
            match self.endpoints.add(&self.dispatcher, &served).await {
                Ok(()) => served.live.store(true, Ordering::Release),
                Err(e) => {
                    error!(error = %e, runtime = %served.verified.runtime, version = %served.verified.version, "endpoint not started")
                }
            }
        }
    }
}
