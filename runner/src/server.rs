//! The runner's life: start-up in order, then drain.
//!
//! [`start`] connects the pieces and returns a [`RunnerHandle`] once the runner serves: open the
//! buckets, object stores and jobs stream the registry provisions (waiting, with backoff and a
//! clear log line, while it has not: a runner never creates or changes them), read a snapshot of runtimes, actions and packs, converge once (verify, fetch, build,
//! serve: [`crate::reconcile`]), heartbeat, and hand the KV followers ([`crate::follow`]) to the
//! reconciler. [`run`] is start + wait for a shutdown future + drain, what `attune runner start`
//! calls; [`RunnerHandle::drain`] stops taking work, lets accepted work finish and leaves.
//!
//! Start-up also makes the runner a child subreaper and prepares its private `0700` directory,
//! killing the process groups a crashed predecessor recorded there ([`crate::contain`],
//! [`crate::private`]). Neither start-up (under [`run`]) nor drain waits for a hung environment
//! build: each build step has a time limit, and shutdown drops the build, killing its processes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store::ObjectStore, stream};
use attune_nats::jetstream::{open_kv, open_pack_files, Bucket, OpenError, StoreError};
use attune_nats::jobs::{open_jobs_stream, open_results_files};
use attune_nats::shutdown::{self, ShutdownTrigger};
use attune_nats::watch::WatchError;
use attune_nats::Namespace;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, instrument, warn};

use crate::admission::Tracker;
use crate::catalog::Catalog;
use crate::config::RunnerConfig;
use crate::endpoints::Endpoints;
use crate::env::HostLock;
use crate::follow::{self, Kind};
use crate::heartbeat::Heartbeat;
use crate::jobs::Jobs;
use crate::packs::PackCache;
use crate::procenv::base_env;
use crate::reconcile::Reconciler;
use crate::service::Dispatcher;

/// Longest wait for NATS in one drain step (heartbeat, flush), so a drain ends without a server.
const NATS_STEP: Duration = Duration::from_secs(5);
/// First wait before looking again for JetStream resources the registry has not created yet.
const REGISTRY_WAIT_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two looks for them.
const REGISTRY_WAIT_MAX: Duration = Duration::from_secs(5);

/// Why the runner could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A jobs consumer could not be created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading KV at start-up failed.
    #[error("at start-up: {0}")]
    Kv(#[from] WatchError),
    /// The micro service could not start.
    #[error("starting the attune-runner service: {0}")]
    Service(#[source] attune_nats::micro::MicroError),
    /// The cache dir is unusable or used by another runner.
    #[error("cache dir {path}: {message}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// What to do about it.
        message: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid runner configuration: {0}")]
    Config(String),
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
    /// Ends waits for cluster-wide slots when the drain starts.
    stopping: watch::Sender<bool>,
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

    /// Whether this runner knows action `action` and has its pack's current files: what a
    /// pack registration must reach before the action runs here (the scale simulation times
    /// it across runners).
    pub fn ready_for(&self, action: &str) -> bool {
        self.dispatcher.catalog.read(|s| {
            s.actions
                .get(action)
                .is_some_and(|a| s.pack_dirs.contains_key(&a.action.pack))
        })
    }

    /// Execution records this runner could not store since it started.
    pub fn records_dropped(&self) -> u64 {
        self.dispatcher.history.dropped()
    }

    /// Turns execution records and live output on or off from now on (`--no-record` starts
    /// with them off). Meant for measuring what they cost; an operator sets the flag.
    pub fn set_recording(&self, on: bool) {
        self.dispatcher
            .recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
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
        self.stopping.send_replace(true);
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
        self.dispatcher.warm.stop_all();
        // The last execution records go out before the connection does.
        self.dispatcher.history.flush(NATS_STEP).await;
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
    tokio::pin!(shutdown);
    // A shutdown during start-up (a long first environment build) stops at once: dropping
    // `start` kills whatever it was running.
    let handle = tokio::select! {
        h = start(config, client) => h?,
        () = &mut shutdown => {
            info!("shutdown during start-up");
            return Ok(());
        }
    };
    shutdown.await;
    handle.drain().await;
    Ok(())
}

/// The JetStream resources a runner uses, all provisioned by the registry and only opened here.
struct Resources {
    /// KV `attune-runners`, where the heartbeat goes.
    runners: kv::Store,
    /// Object store `attune-pack-files`, where pack archives come from.
    pack_files: ObjectStore,
    /// KV `attune-results`, where async results go.
    results: kv::Store,
    /// Object store `attune-results-files`, for results too large for a message.
    results_files: ObjectStore,
    /// Stream `ATTUNE_JOBS`, to create the jobs consumers on.
    jobs: stream::Stream,
    /// KV `attune-sensors`, the sensor leases.
    sensors: kv::Store,
    /// KV `attune-slots`, the concurrency slots of limited actions.
    slots: kv::Store,
}

impl Resources {
    /// Opens every resource by name; the first one missing or different is the error.
    async fn open(js: &jetstream::Context, ns: &Namespace) -> Result<Self, OpenError> {
        // Read through watches later; opened here so a missing one is reported now, by name.
        for bucket in [Bucket::Runtimes, Bucket::Actions, Bucket::Packs] {
            open_kv(js, ns, bucket).await?;
        }
        Ok(Resources {
            runners: open_kv(js, ns, Bucket::Runners).await?,
            pack_files: open_pack_files(js, ns).await?,
            results: open_kv(js, ns, Bucket::Results).await?,
            results_files: open_results_files(js, ns).await?,
            jobs: open_jobs_stream(js, ns).await?,
            sensors: open_kv(js, ns, Bucket::Sensors).await?,
            slots: open_kv(js, ns, Bucket::Slots).await?,
        })
    }

    /// Opens every resource, waiting (with backoff, logging what is missing) while the registry
    /// has not provisioned them: a runner may start before the registry, or while JetStream is
    /// still recovering after a server restart. A service keeps trying rather than exit; a
    /// shutdown ends the wait through [`run`], which drops this future.
    async fn wait_for_registry(js: &jetstream::Context, ns: &Namespace) -> Self {
        let mut delay = REGISTRY_WAIT_FIRST;
        loop {
            match Self::open(js, ns).await {
                Ok(r) => return r,
                Err(e) if e.needs_registry() => {
                    warn!(error = %e, retry_in = ?delay, "waiting for the registry to provision JetStream");
                }
                Err(e) => {
                    let error = attune_nats::reply::error_chain(&e);
                    warn!(%error, retry_in = ?delay, "JetStream did not answer; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(REGISTRY_WAIT_MAX);
        }
    }
}

/// Starts a runner: open the registry's JetStream resources (waiting for the registry if it has
/// not created them yet), load KV, verify, fetch packs, build environments, serve, heartbeat.
/// Returns once the runner serves every version it verified.
#[instrument(skip_all, fields(runner = %config.name))]
pub async fn start(
    config: RunnerConfig,
    client: async_nats::Client,
) -> Result<RunnerHandle, RunnerError> {
    if config.concurrency == 0 {
        return Err(RunnerError::Config("concurrency must be at least 1".into()));
    }
    let cache_lock = lock_cache_dir(&config).await?;
    // Orphans of our processes come back to us, not to init (see `contain`).
    crate::contain::become_subreaper();
    let params_dir = config.cache_dir.join("params");
    // Ours alone now (the lock): kill what a crashed runner left, remove its files.
    crate::private::prepare(&params_dir).map_err(|source| RunnerError::CacheDir {
        path: params_dir.clone(),
        message: "cannot prepare the private parameters directory",
        source,
    })?;
    let js = config.jetstream_domain.context(client.clone());
    let resources = Resources::wait_for_registry(&js, &config.namespace).await;

    let (abort_tx, abort_rx) = watch::channel(false);
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let catalog = Arc::new(Catalog::default());
    let dispatcher = Arc::new(Dispatcher {
        results_files: resources.results_files.clone(),
        reply_limit: attune_nats::reply::body_limit(client.server_info().max_payload),
        slots: Semaphore::new(config.concurrency),
        tracker: Arc::new(Tracker::default()),
        base_env: base_env(&config.path),
        abort: abort_rx,
        params_dir,
        catalog: catalog.clone(),
        warm: crate::warm::Pools::new(config.warm, &config.cache_dir),
        live: crate::live::Live::start(client.clone()),
        metrics: crate::metrics::Metrics::default(),
        cluster: crate::concurrency::ClusterSlots::start(
            js.clone(),
            resources.slots.clone(),
            config.name.clone(),
        ),
        parking: Semaphore::new(config.concurrency),
        stopping: stopping_rx,
        recording: std::sync::atomic::AtomicBool::new(config.record),
        history: crate::history::History::start(
            js.clone(),
            config.namespace.clone(),
            config.name.clone(),
        ),
        config,
    });
    let endpoints = Arc::new(
        Endpoints::start(&client, &dispatcher.config)
            .await
            .map_err(RunnerError::Service)?,
    );
    let jobs = Arc::new(Jobs::new(
        &client,
        &dispatcher.config.namespace,
        resources.jobs,
        resources.results,
        resources.results_files,
    ));
    let mut reconciler = Reconciler {
        dispatcher: dispatcher.clone(),
        endpoints: endpoints.clone(),
        jobs: jobs.clone(),
        packs: PackCache::new(&dispatcher.config.cache_dir, resources.pack_files),
    };

    // Start-up is the first convergence over a snapshot of the three buckets; the followers
    // then carry on from there.
    let (tx, rx) = mpsc::channel(1024);
    let (shutdown_tx, shutdown_rx) = shutdown::channel();
    let mut tasks = Vec::new();
    for (bucket, kind) in [
        (Bucket::Runtimes, Kind::Runtime),
        (Bucket::Actions, Kind::Action),
        (Bucket::Packs, Kind::Pack),
    ] {
        let name = bucket.name(&dispatcher.config.namespace);
        let (follower, changes) = follow::snapshot(&js, name, kind).await?;
        for change in changes {
            reconciler.apply(change);
        }
        tasks.push(tokio::spawn(follow::forward(
            follower,
            kind,
            tx.clone(),
            shutdown_rx.clone(),
        )));
    }
    // Requests arriving while environments are built wait for them rather than being refused.
    dispatcher.catalog.begin_converging();
    reconciler.converge().await;
    dispatcher.catalog.end_converging();

    let started_at = time::OffsetDateTime::now_utc();
    let heartbeat = Heartbeat {
        store: resources.runners,
        catalog,
        dispatcher: dispatcher.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        started_at,
    };
    let (heartbeat_stop, heartbeat_rx) = shutdown::channel();
    heartbeat.beat().await;
    tasks.push(tokio::spawn(heartbeat.clone().run(heartbeat_rx)));
    let (ask_tx, ask_rx) = mpsc::channel(64);
    tasks.push(tokio::spawn(crate::reverify::listen(
        client.clone(),
        dispatcher.config.clone(),
        ask_tx,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(reconciler.run(
        rx,
        ask_rx,
        shutdown_rx.clone(),
    )));
    if let Some(addr) = dispatcher.config.metrics_addr {
        let d = dispatcher.clone();
        let render = Arc::new(move || crate::metrics::render(&d));
        let served = attune_nats::metrics::serve(addr, render, shutdown_rx.clone())
            .await
            .map_err(|e| RunnerError::Config(format!("--metrics-addr {addr}: {e}")))?;
        tasks.push(served);
    }
    // Drain stops the sensors first and releases their leases for another runner.
    let sensors = crate::sensors::Sensors::new(dispatcher.clone(), js.clone(), resources.sensors);
    tasks.push(tokio::spawn(sensors.run(shutdown_rx.clone())));
    let mut reaper_stop = shutdown_rx;
    tasks.push(tokio::spawn(crate::contain::reaper(async move {
        reaper_stop.recv().await
    })));
    info!(versions = ?dispatcher.catalog.verified_versions().iter().map(|v| format!("{} {}", v.runtime, v.version)).collect::<Vec<_>>(), "runner serving");
    Ok(RunnerHandle {
        dispatcher,
        endpoints,
        jobs,
        shutdown: shutdown_tx,
        heartbeat_stop,
        heartbeat,
        abort: abort_tx,
        stopping: stopping_tx,
        tasks,
        client,
        _cache_lock: cache_lock,
    })
}

/// Takes the cache dir for this runner alone: two runners sharing one would delete each other's
/// superseded pack files.
async fn lock_cache_dir(config: &RunnerConfig) -> Result<HostLock, RunnerError> {
    let path = config.cache_dir.clone();
    let lock = path.join(".runner.lock");
    tokio::task::spawn_blocking(move || HostLock::try_acquire(&lock))
        .await
        .expect("lock task does not panic")
        .map_err(|source| RunnerError::CacheDir {
            message: if source.kind() == std::io::ErrorKind::WouldBlock {
                "in use by another runner on this host: give each runner its own --cache-dir"
            } else {
                "cannot be used"
            },
            path,
            source,
        })
}
