//! Wiring: start the registry, keep it running, stop it cleanly.
//!
//! [`start`] opens the store, registers the `--packs` directories, publishes everything, and only
//! then starts the KV watches, the router, the API and the supervisor — so when it returns the
//! registry is serving with a complete projection. [`RunningRegistry::stop`] (or the shutdown
//! future given to [`serve`]) stops every task and waits for them, after which the redb file is
//! closed and may be opened again.
//!
//! The supervisor republishes when a publish failed earlier and when a bucket or the object store
//! has vanished (a wiped JetStream, a server that lost its store); after such a wipe it also asks
//! every KV watch to start over on the re-created buckets.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use async_nats::Client;
use attune_nats::jetstream::{Bucket, StoreOptions};
use attune_nats::{Action, Namespace, Runtime};
use futures::StreamExt;
use tokio::sync::watch;
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
    /// Replicas and TTLs of the buckets the registry creates.
    pub store: StoreOptions,
    /// How often the supervisor checks that JetStream still has the buckets, and how often
    /// expired heartbeats are swept.
    pub check_interval: Duration,
}

impl ServeConfig {
    /// A configuration with the defaults for everything but the directories and namespace.
    pub fn new(data_dir: PathBuf, packs: Vec<PathBuf>, namespace: Namespace) -> Self {
        ServeConfig {
            data_dir,
            packs,
            namespace,
            store: StoreOptions::default(),
            check_interval: Duration::from_millis(500),
        }
    }
}

/// The one shutdown signal every task selects on. Cannot miss the signal: it is a state (a
/// `watch` value), not an event.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown has been requested (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A started registry. Dropping it without [`stop`](Self::stop) leaves its tasks running.
pub struct RunningRegistry {
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    started_in: Duration,
}

impl RunningRegistry {
    /// The registry core (store, view, liveness), for in-process callers and tests.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// How long [`start`] took, from opening the store to serving.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Stops every task, answers requests already taken, and closes the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("registry stopped");
    }
}

/// Starts the registry on `client` and returns once it is serving.
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
    let js = async_nats::jetstream::new(client.clone());
    let publisher = Publisher::new(js, config.namespace.clone(), config.store.clone());
    let registry = Arc::new(Registry::new(
        config.namespace.clone(),
        store,
        publisher,
        &config.data_dir,
    ));

    let dirs = discover(&config.packs).map_err(RegistryError::Discover)?;
    for dir in dirs {
        let done = registry.load_and_store(dir).await?;
        for w in &done.warnings {
            warn!(pack = %done.pack.reference, "{w}");
        }
    }
    registry.republish().await?;

    let (stop, stop_rx) = watch::channel(false);
    let shutdown = Shutdown(stop_rx);
    let (rewatch, rewatch_rx) = watch::channel(0u64);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(watch_view(
        registry.clone(),
        Bucket::Runtimes,
        rewatch_rx.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(watch_view(
        registry.clone(),
        Bucket::Actions,
        rewatch_rx.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(availability::run(
        registry.clone(),
        config.check_interval,
        rewatch_rx,
        shutdown.clone(),
    )));
    let requests = router::subscribe(&client, &config.namespace)
        .await
        .map_err(|e| RegistryError::Nats {
            what: "subscribing the router",
            message: e.to_string(),
        })?;
    tasks.push(tokio::spawn(router::run(
        client.clone(),
        config.namespace.clone(),
        registry.view.clone(),
        requests,
        shutdown.clone(),
    )));
    tasks.push(api::start(&client, registry.clone(), shutdown.clone()).await?);
    tasks.push(tokio::spawn(supervise(
        registry.clone(),
        config.check_interval,
        rewatch,
        shutdown,
    )));
    // Subscriptions are only certain on the server after a round trip.
    client.flush().await.map_err(|e| RegistryError::Nats {
        what: "flushing subscriptions",
        message: e.to_string(),
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
    })
}

/// Runs the registry until `shutdown` resolves, then stops it cleanly.
pub async fn serve(
    config: ServeConfig,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistryError> {
    let running = start(config, client).await?;
    shutdown.await;
    running.stop().await;
    Ok(())
}

/// Republishes after failed publishes and vanished buckets.
async fn supervise(
    registry: Arc<Registry>,
    every: Duration,
    rewatch: watch::Sender<u64>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
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
            Ok(()) => {
                if wiped {
                    rewatch.send_modify(|n| *n += 1);
                    info!("republished after a JetStream wipe");
                }
            }
            Err(e) => warn!(error = %e, "republish failed; will retry"),
        }
    }
}

/// Keeps the view's runtimes or actions in step with their KV bucket (changes made by other
/// registry instances sharing the buckets arrive this way).
async fn watch_view(
    registry: Arc<Registry>,
    bucket: Bucket,
    mut rewatch: watch::Receiver<u64>,
    mut shutdown: Shutdown,
) {
    'outer: loop {
        let watch = match registry.publisher.bucket(bucket).await {
            Ok(kv) => kv.watch_with_history(">").await.ok(),
            Err(_) => None,
        };
        let Some(mut watch) = watch else {
            tokio::select! {
                _ = shutdown.wait() => break 'outer,
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'outer,
            }
        };
        loop {
            let entry = tokio::select! {
                _ = shutdown.wait() => break 'outer,
                _ = rewatch.changed() => continue 'outer,
                entry = watch.next() => entry,
            };
            let entry = match entry {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    warn!(error = %e, ?bucket, "KV watch failed; re-creating it");
                    continue 'outer;
                }
                None => continue 'outer,
            };
            let deleted = matches!(entry.operation, Operation::Delete | Operation::Purge);
            match bucket {
                Bucket::Runtimes => {
                    let value = (!deleted)
                        .then(|| serde_json::from_slice::<Runtime>(&entry.value).ok())
                        .flatten();
                    if deleted || value.is_some() {
                        registry.view.set_runtime(&entry.key, value);
                    }
                }
                Bucket::Actions => {
                    let value = (!deleted)
                        .then(|| serde_json::from_slice::<Action>(&entry.value).ok())
                        .flatten();
                    if deleted || value.is_some() {
                        registry.view.set_action(&entry.key, value);
                    }
                }
                _ => {}
            }
        }
    }
}
