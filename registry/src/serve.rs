//! Wiring: start the registry, keep it running, stop it cleanly.
//!
//! [`start`] opens the store, registers the `--packs` directories, provisions every JetStream
//! resource and publishes everything ([`crate::provision`], the only code that creates them), and only
//! then starts the KV watches, the router, the API and the supervisor — so when it returns the
//! registry is serving with a complete projection. [`RunningRegistry::stop`] (or the shutdown
//! future given to [`serve`]) stops every task and waits for them, after which the redb file is
//! closed and may be opened again.
//!
//! The supervisor republishes when a publish failed earlier and when a bucket or the object store
//! has vanished (a wiped JetStream, a server that lost its store). The KV watches follow the
//! re-created buckets by themselves ([`KvFollower`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use attune_nats::connect::JetStreamDomain;
use attune_nats::jetstream::{Bucket, StoreOptions};
use attune_nats::shutdown::{self, Shutdown, ShutdownTrigger};
use attune_nats::watch::{KvChange, KvFollower};
use attune_nats::{Action, Namespace, Runtime};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::pack::discover;
use crate::publish::Publisher;
use crate::registry::{Registry, RegistryError};
use crate::store::Store;
use crate::{api, availability, router};

/// Everything `attune registry serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Holds `registry.redb` (the source of truth) and scratch space for uploads.
    pub data_dir: PathBuf,
    /// Pack directories, or directories of packs, registered (upserted) at start.
    pub packs: Vec<PathBuf>,
    /// Subject prefix and the bucket names derived from it.
    pub namespace: Namespace,
    /// Replicas, TTLs and limits of the buckets, object stores and streams the registry creates.
    pub store: StoreOptions,
    /// Directories `pack.register` with a path may name packs inside (`--allow-register-from`);
    /// empty: registration by path is refused and packs are registered by upload only.
    pub allow_register_from: Vec<PathBuf>,
    /// How often the supervisor checks that JetStream still has the buckets, and how often
    /// expired heartbeats are swept.
    pub check_interval: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the JetStream resources it provisions live: the account's own JetStream unless the
    /// registry connects through a leaf node to a hub in another domain (`--js-domain`).
    pub jetstream_domain: JetStreamDomain,
}

impl ServeConfig {
    /// A configuration with the defaults for everything but the directories and namespace.
    pub fn new(data_dir: PathBuf, packs: Vec<PathBuf>, namespace: Namespace) -> Self {
        ServeConfig {
            data_dir,
            packs,
            namespace,
            store: StoreOptions::default(),
            allow_register_from: Vec::new(),
            check_interval: Duration::from_millis(500),
            metrics_addr: None,
            jetstream_domain: JetStreamDomain::local(),
        }
    }
}

/// A started registry. Dropping it without [`stop`](Self::stop) leaves its tasks running.
pub struct RunningRegistry {
    registry: Arc<Registry>,
    stop: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
    started_in: Duration,
    fired: Arc<crate::fire::FireCounts>,
}

impl RunningRegistry {
    /// The registry core (store, view, liveness), for in-process callers and tests.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// What rule evaluation has done since start.
    pub fn fired(&self) -> &crate::fire::FireCounts {
        &self.fired
    }

    /// How long [`start`] took, from opening the store to serving.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Stops every task, answers requests already taken, and closes the store.
    pub async fn stop(self) {
        self.stop.trigger();
        for task in self.tasks {
            let _ = task.await;
        }
        info!("registry stopped");
    }
}

/// The first wait before publishing again when JetStream refused the registry's resources.
const PUBLISH_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Starts the registry on `client` and returns once it is serving (waiting, and saying why, while
/// JetStream cannot take its resources yet).
pub async fn start(config: ServeConfig, client: Client) -> Result<RunningRegistry, RegistryError> {
    let began = Instant::now();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RegistryError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let db_path = config.data_dir.join("registry.redb");
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path))
        .await
        .expect("opening the store does not panic")?;
    let js = config.jetstream_domain.context(client.clone());
    let publisher = Publisher::new(js, config.namespace.clone(), config.store.clone());
    let registry = Arc::new(
        Registry::new(config.namespace.clone(), store, publisher, &config.data_dir)
            .allow_register_from(&config.allow_register_from)?,
    );

    let dirs = discover(&config.packs).map_err(RegistryError::Discover)?;
    for dir in dirs {
        let done = registry.load_and_store(dir).await?;
        for w in &done.warnings {
            warn!(pack = %done.pack.reference, "{w}");
        }
    }
    // JetStream may not take the resources yet: a cluster still forming (or missing a node) has
    // no peers to place three replicas on. A service keeps trying, saying why, rather than exit;
    // `serve` stops the wait on a shutdown.
    let mut delay = PUBLISH_RETRY_FIRST;
    loop {
        match registry.republish().await {
            Ok(()) => break,
            Err(RegistryError::Publish(e)) => {
                let error = attune_nats::reply::error_chain(&e);
                warn!(%error, retry_in = ?delay, "JetStream cannot take the registry's buckets and streams yet (a cluster still forming, or a node down?); retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PUBLISH_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }

    let (stop, shutdown) = shutdown::channel();
    let mut tasks = Vec::new();
    for bucket in [Bucket::Runtimes, Bucket::Actions] {
        tasks.push(tokio::spawn(watch_view(
            registry.clone(),
            bucket,
            config.check_interval,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::routes::run(
        registry.clone(),
        config.check_interval,
        shutdown.clone(),
    )));
    let fired = Arc::new(crate::fire::FireCounts::default());
    tasks.push(tokio::spawn(crate::fire::run(
        registry.clone(),
        fired.clone(),
        shutdown.clone(),
    )));
    if let Some(addr) = config.metrics_addr {
        let queues = Arc::new(crate::metrics::JobQueues::default());
        tasks.push(tokio::spawn(crate::metrics::sample_jobs(
            registry.clone(),
            queues.clone(),
            shutdown.clone(),
        )));
        let (view, counts) = (registry.view.clone(), fired.clone());
        let render = Arc::new(move || crate::metrics::render(&view, &counts, &queues));
        let served = attune_nats::metrics::serve(addr, render, shutdown.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(format!("--metrics-addr {addr}: {e}")))?;
        tasks.push(served);
    }
    tasks.push(tokio::spawn(availability::run(
        registry.clone(),
        config.check_interval,
        shutdown.clone(),
    )));
    let requests = router::subscribe(&client, &config.namespace)
        .await
        .map_err(|e| RegistryError::Nats {
            what: "subscribing the router",
            source: e.into(),
        })?;
    tasks.push(tokio::spawn(router::run(
        client.clone(),
        registry.publisher.jetstream().clone(),
        config.namespace.clone(),
        registry.view.clone(),
        requests,
        shutdown.clone(),
    )));
    tasks.push(api::start(&client, registry.clone(), shutdown.clone()).await?);
    tasks.push(tokio::spawn(supervise(
        registry.clone(),
        config.check_interval,
        shutdown,
    )));
    // Subscriptions are only certain on the server after a round trip.
    client.flush().await.map_err(|e| RegistryError::Nats {
        what: "flushing subscriptions",
        source: e.into(),
    })?;
    let started_in = began.elapsed();
    info!(
        ms = started_in.as_secs_f64() * 1000.0,
        actions = registry.view.action_count(),
        "registry serving"
    );
    Ok(RunningRegistry {
        registry,
        stop,
        tasks,
        started_in,
        fired,
    })
}

/// Runs the registry until `shutdown` resolves, then stops it cleanly.
pub async fn serve(
    config: ServeConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistryError> {
    tokio::pin!(shutdown);
    let running = tokio::select! {
        started = start(config, client) => started?,
        // Stopped while start-up still waited for JetStream.
        _ = &mut shutdown => return Ok(()),
    };
    shutdown.await;
    running.stop().await;
    Ok(())
}

/// Republishes after failed publishes and vanished buckets.
async fn supervise(registry: Arc<Registry>, every: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tick.tick() => {}
        }
        let wiped = !registry.publisher.all_present().await;
        if !wiped && !registry.is_dirty() {
            continue;
        }
        if wiped {
            warn!("JetStream lost registry buckets; republishing from the store");
        }
        match registry.republish().await {
            Ok(()) if wiped => info!("republished after a JetStream wipe"),
            Ok(()) => {}
            Err(e) => warn!(error = %e, "republish failed; will retry"),
        }
    }
}

/// Keeps the view's runtimes or actions in step with their KV bucket (changes made by other
/// registry instances sharing the buckets arrive this way), through errors and wipes.
async fn watch_view(
    registry: Arc<Registry>,
    bucket: Bucket,
    check_every: Duration,
    mut shutdown: Shutdown,
) {
    let mut follower = KvFollower::new(
        registry.publisher.jetstream().clone(),
        bucket.name(&registry.ns),
    )
    .with_check_interval(check_every.max(Duration::from_secs(1)));
    loop {
        let change = tokio::select! {
            _ = shutdown.recv() => break,
            change = follower.next() => change,
        };
        match (bucket, change) {
            (Bucket::Runtimes, KvChange::Put { key, value, .. }) => {
                match serde_json::from_slice::<Runtime>(&value) {
                    Ok(rt) => registry.view.set_runtime(&key, Some(rt)),
                    Err(e) => warn!(%key, error = %e, "unreadable runtime in KV ignored"),
                }
            }
            (Bucket::Runtimes, KvChange::Delete { key }) => registry.view.set_runtime(&key, None),
            (Bucket::Actions, KvChange::Put { key, value, .. }) => {
                match serde_json::from_slice::<Action>(&value) {
                    Ok(a) => registry.view.set_action(&key, Some(a)),
                    Err(e) => warn!(%key, error = %e, "unreadable action in KV ignored"),
                }
            }
            (Bucket::Actions, KvChange::Delete { key }) => registry.view.set_action(&key, None),
            _ => {}
        }
    }
}
