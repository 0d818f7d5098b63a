//! The JetStream resources Attune uses, with the one configuration every component creates them
//! with.
//!
//! Registry, runners and CLI all call [`ensure_kv`] / [`ensure_pack_files`] instead of creating
//! buckets themselves, so whichever starts first creates them the same way, and settings that two
//! sides must agree on (the heartbeat TTL above all) are stated once.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};

use crate::subject::Namespace;

/// How often a runner writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a heartbeat counts: a runner that misses three beats is gone.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(6);
/// Default retention of asynchronous results.
pub const RESULTS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The KV buckets (docs/protocol.md, *JetStream*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `attune-runtimes`: runtimes with versions and availability.
    Runtimes,
    /// `attune-actions`: actions by `<pack>.<action>`.
    Actions,
    /// `attune-packs`: pack metadata and digest.
    Packs,
    /// `attune-runners`: heartbeats, expiring after [`HEARTBEAT_TTL`].
    Runners,
    /// `attune-results`: asynchronous results, expiring after the results TTL.
    Results,
}

/// Settings an operator may change for a NATS cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Replicas of every bucket and stream (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// Retention of asynchronous results.
    pub results_ttl: Duration,
    /// Oldest a queued job may get before the jobs stream drops it (zero: no limit).
    pub jobs_max_age: Duration,
    /// Most bytes the jobs stream holds; a full stream refuses new jobs (`None`: no limit).
    pub jobs_max_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            replicas: 1,
            results_ttl: RESULTS_TTL,
            jobs_max_age: Duration::ZERO,
            jobs_max_bytes: None,
        }
    }
}

/// Why a JetStream resource could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening JetStream {kind} \"{name}\": {message}")]
pub struct StoreError {
    /// `KV bucket` or `object store`.
    pub kind: &'static str,
    /// The bucket name.
    pub name: String,
    /// The server's or client's explanation.
    pub message: String,
}

impl Bucket {
    /// The bucket's name in `ns`.
    pub fn name(self, ns: &Namespace) -> String {
        match self {
            Bucket::Runtimes => ns.kv_runtimes(),
            Bucket::Actions => ns.kv_actions(),
            Bucket::Packs => ns.kv_packs(),
            Bucket::Runners => ns.kv_runners(),
            Bucket::Results => ns.kv_results(),
        }
    }

    fn config(self, ns: &Namespace, opts: &StoreOptions) -> kv::Config {
        let (description, max_age) = match self {
            Bucket::Runtimes => ("Attune runtimes and their versions", Duration::ZERO),
            Bucket::Actions => ("Attune actions", Duration::ZERO),
            Bucket::Packs => ("Attune pack metadata", Duration::ZERO),
            Bucket::Runners => ("Attune runner heartbeats", HEARTBEAT_TTL),
            Bucket::Results => ("Attune asynchronous results", opts.results_ttl),
        };
        kv::Config {
            bucket: self.name(ns),
            description: description.to_string(),
            history: 1,
            max_age,
            num_replicas: opts.replicas.max(1),
            ..Default::default()
        }
    }
}

/// Opens a KV bucket, creating it (or updating its settings) as needed. Idempotent.
pub async fn ensure_kv(
    js: &jetstream::Context,
    ns: &Namespace,
    bucket: Bucket,
    opts: &StoreOptions,
) -> Result<kv::Store, StoreError> {
    let config = bucket.config(ns, opts);
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        let status = store.status().await.map_err(|e| StoreError {
            kind: "KV bucket",
            name: name.clone(),
            message: e.to_string(),
        })?;
        let current = &status.info.config;
        if current.max_age == config.max_age && current.num_replicas == config.num_replicas {
            return Ok(store);
        }
    }
    js.create_or_update_key_value(config)
        .await
        .map_err(|e| StoreError {
            kind: "KV bucket",
            name,
            message: e.to_string(),
        })
}

/// Opens the object store of pack archives, creating it if needed. Idempotent.
pub async fn ensure_pack_files(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<object_store::ObjectStore, StoreError> {
    ensure_object_store(
        js,
        ns.object_pack_files(),
        "Attune pack archives by content digest",
        Duration::ZERO,
        opts,
    )
    .await
}

/// Opens object store `name`, creating it with these settings if it does not exist yet.
pub(crate) async fn ensure_object_store(
    js: &jetstream::Context,
    name: String,
    description: &str,
    max_age: Duration,
    opts: &StoreOptions,
) -> Result<object_store::ObjectStore, StoreError> {
    if let Ok(store) = js.get_object_store(&name).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: name.clone(),
        description: Some(description.to_string()),
        max_age,
        num_replicas: opts.replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| StoreError {
        kind: "object store",
        name,
        message: e.to_string(),
    })
}
