//! The JetStream resources Attune uses: who creates them, with which settings, and how everyone
//! else opens them.
//!
//! Only the registry *provisions* (creates or updates) KV buckets, object stores and streams,
//! with the operator's [`StoreOptions`]: the `provision_*` functions here and in [`crate::jobs`]
//! are called by its set-up step alone. Runners and clients *open* them by name ([`open_kv`],
//! [`open_pack_files`], [`crate::jobs::open_jobs_stream`], [`crate::jobs::open_results_files`])
//! and never change them. So a runner start cannot undo the operator's replicas, TTLs or limits,
//! and runners and clients need no permission to create or update streams.
//!
//! Opening checks what the opening side relies on (the runners bucket must expire entries after
//! exactly [`HEARTBEAT_TTL`]; the jobs stream must be a work queue over the jobs subjects) and,
//! when a resource is missing or different, says which one, what differs and what to do:
//! [`OpenError`]. Settings both sides must agree on are stated once, here.

use std::time::Duration;

use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::{self, kv, object_store, stream};

use crate::concurrency::SLOT_LEASE_TTL;
use crate::subject::Namespace;

/// How often a runner writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a heartbeat counts: a runner that misses three beats is gone.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(6);
/// How long a sensor lease holds unless its runner renews it: the takeover time when a runner
/// dies. Its holder stops the sensor itself once a lease this old could have expired.
pub const SENSOR_LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the holder renews a sensor lease, and how often runners look for free ones.
pub const SENSOR_LEASE_RENEW: Duration = Duration::from_secs(1);
/// Default retention of asynchronous results (KV `attune-results` and the results object store).
pub const RESULTS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default most bytes KV `attune-results` holds; a full bucket refuses new results until old
/// ones expire, so a flood of jobs cannot fill the server's disk.
pub const RESULTS_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Default oldest a queued job may get before the jobs stream drops it: a job nobody ran for a
/// week is stale, and keeping it forever would let an unserved version fill the stream.
pub const JOBS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default most bytes the jobs stream holds; a full stream refuses new jobs (the publisher is
/// told) rather than dropping queued ones.
pub const JOBS_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Default age after which the executions stream forgets an execution's record.
pub const EXECUTIONS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default most bytes the executions stream holds; the oldest records go first.
pub const EXECUTIONS_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// The KV buckets Attune keeps its state in (docs/protocol.md lists them).
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
    /// `attune-routes`: each action's current route ([`crate::wire::ActionRoute`]), written by
    /// the registry only when it changes.
    Routes,
    /// `attune-sensors`: one lease per running sensor ([`crate::wire::SensorLease`]), written
    /// by the runner that runs it and expiring after [`SENSOR_LEASE_TTL`] unless renewed.
    Sensors,
    /// `attune-slots`: the concurrency slots of limited actions ([`crate::concurrency`]), taken
    /// by runners and expiring after [`SLOT_LEASE_TTL`] unless renewed.
    Slots,
}

/// The settings an operator gives the registry (its flags) for the resources it provisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Replicas of every bucket, object store and stream (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// Retention of asynchronous results, in KV and in the results object store.
    pub results_ttl: Duration,
    /// Most bytes KV `attune-results` holds (`None`: no limit).
    pub results_max_bytes: Option<u64>,
    /// Oldest a queued job may get before the jobs stream drops it (zero: no limit).
    pub jobs_max_age: Duration,
    /// Most bytes the jobs stream holds; a full stream refuses new jobs (`None`: no limit).
    pub jobs_max_bytes: Option<u64>,
    /// Oldest an execution record may get before the executions stream forgets it.
    pub executions_max_age: Duration,
    /// Most bytes of execution records kept; the oldest go first (`None`: no limit).
    pub executions_max_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            replicas: 1,
            results_ttl: RESULTS_TTL,
            results_max_bytes: Some(RESULTS_MAX_BYTES),
            jobs_max_age: JOBS_MAX_AGE,
            jobs_max_bytes: Some(JOBS_MAX_BYTES),
            executions_max_age: EXECUTIONS_MAX_AGE,
            executions_max_bytes: Some(EXECUTIONS_MAX_BYTES),
        }
    }
}

/// Creates stream `config.name`, or updates it when a setting the operator controls (replicas,
/// age, size, messages per subject) differs. Idempotent. For the registry's set-up step only.
pub(crate) async fn provision_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, StoreError> {
    let name = config.name.clone();
    let err = |e: async_nats::Error| StoreError::new("stream", &name, e);
    if let Ok(s) = js.get_stream(&name).await {
        let current = &s.cached_info().config;
        if current.num_replicas == config.num_replicas
            && current.max_age == config.max_age
            && current.max_bytes == config.max_bytes
            && current.max_messages_per_subject == config.max_messages_per_subject
        {
            return Ok(s);
        }
        js.update_stream(config).await.map_err(|e| err(e.into()))?;
        return js.get_stream(&name).await.map_err(|e| err(e.into()));
    }
    js.get_or_create_stream(config)
        .await
        .map_err(|e| err(e.into()))
}

/// A byte limit as JetStream spells it: `-1` for none.
pub(crate) fn byte_limit(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
}

/// Why a JetStream resource could not be created or updated (by the registry), or written (a
/// runner's consumer or result object).
#[derive(Debug, thiserror::Error)]
#[error("JetStream {kind} \"{name}\"")]
pub struct StoreError {
    /// `KV bucket`, `object store` or `stream`.
    pub kind: &'static str,
    /// The bucket, store or stream name.
    pub name: String,
    /// The server's or client's explanation.
    #[source]
    pub source: async_nats::Error,
}

impl StoreError {
    /// A failure on `kind` `name`, keeping its cause.
    pub fn new(
        kind: &'static str,
        name: impl Into<String>,
        source: impl Into<async_nats::Error>,
    ) -> Self {
        StoreError {
            kind,
            name: name.into(),
            source: source.into(),
        }
    }
}

/// Why a runner or client could not open a JetStream resource the registry provisions.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Nobody has created it yet (or JetStream lost it): the registry creates it.
    #[error("JetStream {kind} \"{name}\" does not exist: start the registry first (`attune registry serve` or `attune up`); it creates every Attune bucket, object store and stream (connected to a leaf node whose server has JetStream of its own? give --js-domain with the hub's domain)")]
    Missing {
        /// `KV bucket`, `object store` or `stream`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// It exists, but not as this side relies on.
    #[error("JetStream {kind} \"{name}\" is configured differently from what Attune relies on: {differs}; start (or restart) an up-to-date registry, which updates it, or delete it so the registry re-creates it")]
    Mismatch {
        /// `KV bucket`, `object store` or `stream`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What differs, e.g. `entries expire after 10s, heartbeats need 6s`.
        differs: String,
    },
    /// The server did not answer, or refused (permissions).
    #[error("opening JetStream {kind} \"{name}\"")]
    Failed {
        /// `KV bucket`, `object store` or `stream`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The server's or client's explanation.
        #[source]
        source: async_nats::Error,
    },
}

impl OpenError {
    /// Whether the registry will fix this by provisioning (missing or differently configured),
    /// so a runner should wait for it rather than give up.
    pub fn needs_registry(&self) -> bool {
        matches!(self, OpenError::Missing { .. } | OpenError::Mismatch { .. })
    }

    /// Classifies a failed open of `kind` `name`: "stream not found" anywhere in the causes
    /// means missing; anything else is a failure.
    pub(crate) fn from_error(
        kind: &'static str,
        name: &str,
        err: impl Into<async_nats::Error>,
    ) -> Self {
        let err = err.into();
        if stream_not_found(&*err) {
            OpenError::Missing {
                kind,
                name: name.to_string(),
            }
        } else {
            OpenError::Failed {
                kind,
                name: name.to_string(),
                source: err,
            }
        }
    }
}

/// Whether `err` or one of its causes is JetStream's "stream not found" (the KV bucket, object
/// store or stream does not exist).
pub(crate) fn stream_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(get) = e.downcast_ref::<GetStreamError>() {
            if let GetStreamErrorKind::JetStream(js) = get.kind() {
                return js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND;
            }
        }
        cause = e.source();
    }
    false
}

/// The prefix of JetStream's API subjects.
pub const JS_API: &str = "$JS.API";

/// The JetStream stream behind KV bucket `bucket` (a NATS naming rule, stated once).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject of a direct get of the last value of `key` in KV bucket `bucket` of the
/// JetStream in `domain`: one request, no stream lookup first (every Attune bucket allows
/// direct gets).
pub fn kv_direct_get(domain: &crate::connect::JetStreamDomain, bucket: &str, key: &str) -> String {
    format!(
        "{}.DIRECT.GET.{}.$KV.{bucket}.{key}",
        domain.api_prefix(),
        kv_stream(bucket)
    )
}

/// The JetStream stream behind object store `name` (a NATS naming rule, stated once).
fn object_stream(name: &str) -> String {
    format!("OBJ_{name}")
}

impl Bucket {
    /// Every bucket, for whoever must treat them all alike (provisioning, permissions, checks).
    pub const ALL: [Bucket; 8] = [
        Bucket::Runtimes,
        Bucket::Actions,
        Bucket::Packs,
        Bucket::Runners,
        Bucket::Results,
        Bucket::Routes,
        Bucket::Sensors,
        Bucket::Slots,
    ];

    /// The bucket's name in `ns`.
    pub fn name(self, ns: &Namespace) -> String {
        match self {
            Bucket::Runtimes => ns.kv_runtimes(),
            Bucket::Actions => ns.kv_actions(),
            Bucket::Packs => ns.kv_packs(),
            Bucket::Runners => ns.kv_runners(),
            Bucket::Results => ns.kv_results(),
            Bucket::Routes => ns.kv_routes(),
            Bucket::Sensors => ns.kv_sensors(),
            Bucket::Slots => ns.kv_slots(),
        }
    }

    fn config(self, ns: &Namespace, opts: &StoreOptions) -> kv::Config {
        let (description, max_age, max_bytes) = match self {
            Bucket::Runtimes => ("Attune runtimes and their versions", Duration::ZERO, None),
            Bucket::Actions => ("Attune actions", Duration::ZERO, None),
            Bucket::Packs => ("Attune pack metadata", Duration::ZERO, None),
            Bucket::Routes => ("Attune action routes", Duration::ZERO, None),
            Bucket::Runners => ("Attune runner heartbeats", HEARTBEAT_TTL, None),
            Bucket::Sensors => ("Attune sensor leases", SENSOR_LEASE_TTL, None),
            Bucket::Slots => ("Attune concurrency slots", SLOT_LEASE_TTL, None),
            Bucket::Results => (
                "Attune asynchronous results",
                opts.results_ttl,
                opts.results_max_bytes,
            ),
        };
        kv::Config {
            bucket: self.name(ns),
            description: description.to_string(),
            history: 1,
            max_age,
            max_bytes: byte_limit(max_bytes),
            num_replicas: opts.replicas.max(1),
            // Runners waiting for a slot learn from the marker that an expired one is free.
            limit_markers: (self == Bucket::Slots).then_some(SLOT_LEASE_TTL),
            ..Default::default()
        }
    }

    /// What this side relies on in the bucket's settings, or what differs.
    fn check(self, config: &stream::Config) -> Result<(), String> {
        if self == Bucket::Runners && config.max_age != HEARTBEAT_TTL {
            return Err(format!(
                "entries expire after {:?}, but heartbeats need {:?}",
                config.max_age, HEARTBEAT_TTL
            ));
        }
        if self == Bucket::Sensors && config.max_age != SENSOR_LEASE_TTL {
            return Err(format!(
                "entries expire after {:?}, but sensor leases need {:?}",
                config.max_age, SENSOR_LEASE_TTL
            ));
        }
        if self == Bucket::Slots && config.max_age != SLOT_LEASE_TTL {
            return Err(format!(
                "entries expire after {:?}, but concurrency slots need {:?}",
                config.max_age, SLOT_LEASE_TTL
            ));
        }
        Ok(())
    }
}

/// Opens KV bucket `bucket`, which the registry provisions; never creates or changes it.
pub async fn open_kv(
    js: &jetstream::Context,
    ns: &Namespace,
    bucket: Bucket,
) -> Result<kv::Store, OpenError> {
    let name = bucket.name(ns);
    let store = js
        .get_key_value(&name)
        .await
        .map_err(|e| OpenError::from_error("KV bucket", &name, e))?;
    bucket
        .check(&store.stream.cached_info().config)
        .map_err(|differs| OpenError::Mismatch {
            kind: "KV bucket",
            name,
            differs,
        })?;
    Ok(store)
}

/// Opens the object store of pack archives, which the registry provisions.
pub async fn open_pack_files(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<object_store::ObjectStore, OpenError> {
    open_object_store(js, ns.object_pack_files()).await
}

/// Opens object store `name`; never creates or changes it.
pub(crate) async fn open_object_store(
    js: &jetstream::Context,
    name: String,
) -> Result<object_store::ObjectStore, OpenError> {
    js.get_object_store(&name)
        .await
        .map_err(|e| OpenError::from_error("object store", &name, e))
}

/// Creates KV bucket `bucket` with the operator's settings, or updates them when they differ.
/// Idempotent. For the registry's set-up step only.
pub async fn provision_kv(
    js: &jetstream::Context,
    ns: &Namespace,
    bucket: Bucket,
    opts: &StoreOptions,
) -> Result<kv::Store, StoreError> {
    let config = bucket.config(ns, opts);
    let name = config.bucket.clone();
    if let Ok(store) = js.get_key_value(&name).await {
        let current = &store.stream.cached_info().config;
        if current.max_age == config.max_age
            && current.num_replicas == config.num_replicas
            && current.max_bytes == config.max_bytes
        {
            return Ok(store);
        }
    }
    js.create_or_update_key_value(config)
        .await
        .map_err(|e| StoreError::new("KV bucket", name, e))
}

/// Creates the object store of pack archives, or updates its replicas. Idempotent. For the
/// registry's set-up step only.
pub async fn provision_pack_files(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<object_store::ObjectStore, StoreError> {
    provision_object_store(
        js,
        ns.object_pack_files(),
        "Attune pack archives by content digest",
        Duration::ZERO,
        opts,
    )
    .await
}

/// Creates object store `name` with these settings, or updates its age limit and replicas when
/// they differ (through its stream: the client has no object store update).
pub(crate) async fn provision_object_store(
    js: &jetstream::Context,
    name: String,
    description: &str,
    max_age: Duration,
    opts: &StoreOptions,
) -> Result<object_store::ObjectStore, StoreError> {
    let err = |e: async_nats::Error| StoreError::new("object store", &name, e);
    let replicas = opts.replicas.max(1);
    if let Ok(mut existing) = js.get_stream(object_stream(&name)).await {
        let mut config = existing
            .info()
            .await
            .map_err(|e| err(e.into()))?
            .config
            .clone();
        if config.max_age != max_age || config.num_replicas != replicas {
            config.max_age = max_age;
            config.num_replicas = replicas;
            js.update_stream(config).await.map_err(|e| err(e.into()))?;
        }
        return js.get_object_store(&name).await.map_err(|e| err(e.into()));
    }
    js.create_object_store(object_store::Config {
        bucket: name.clone(),
        description: Some(description.to_string()),
        max_age,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runners_bucket_with_another_ttl_is_named_as_different() {
        let config = stream::Config {
            max_age: Duration::from_secs(10),
            ..Default::default()
        };
        let differs = Bucket::Runners.check(&config).unwrap_err();
        assert_eq!(differs, "entries expire after 10s, but heartbeats need 6s");
        assert!(Bucket::Results.check(&config).is_ok());
        let ok = stream::Config {
            max_age: HEARTBEAT_TTL,
            ..Default::default()
        };
        assert!(Bucket::Runners.check(&ok).is_ok());
    }

    #[test]
    fn defaults_limit_jobs_and_results() {
        let o = StoreOptions::default();
        assert_eq!(o.jobs_max_age, JOBS_MAX_AGE);
        assert_eq!(byte_limit(o.jobs_max_bytes), JOBS_MAX_BYTES as i64);
        assert_eq!(byte_limit(o.results_max_bytes), RESULTS_MAX_BYTES as i64);
        assert_eq!(byte_limit(None), -1);
    }
}

/// Which messages [`read_stream`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The newest `n` kept (of those the decoder keeps), then it ends.
    Last(usize),
    /// Only messages published from now on, for as long as it is read.
    New,
}

/// Reads stream `stream` (messages on `filter_subject`), oldest first, through an ordered push
/// consumer delivering to this connection's inbox: nothing is acknowledged and no durable
/// consumer is disturbed, so any role allowed to follow the stream may read it. `decode` turns a
/// message into an item, or `None` to skip it (a filter). [`Window::Last`] reads every matching
/// message kept in the stream, holding only the newest `n` items.
pub async fn read_stream<T: Send + 'static>(
    js: &jetstream::Context,
    stream: &str,
    filter_subject: String,
    window: Window,
    decode: impl Fn(jetstream::Message) -> Option<T> + Send + Sync + 'static,
) -> Result<futures::stream::BoxStream<'static, Result<T, async_nats::Error>>, async_nats::Error> {
    use futures::StreamExt;
    let stream = js.get_stream(stream).await?;
    let deliver_policy = match window {
        Window::New => jetstream::consumer::DeliverPolicy::New,
        Window::Last(_) => jetstream::consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer.messages().await?;
    match window {
        Window::New => Ok(messages
            .filter_map(move |m| {
                let item = match m {
                    Ok(m) => decode(m).map(Ok),
                    Err(e) => Some(Err(e.into())),
                };
                futures::future::ready(item)
            })
            .boxed()),
        Window::Last(n) => {
            // Read to the end as it was when asked, keeping the newest `n`.
            let mut kept = std::collections::VecDeque::with_capacity(n.min(1024));
            let mut messages = messages.take(pending as usize);
            while let Some(m) = messages.next().await {
                let Some(item) = decode(m?) else { continue };
                if kept.len() == n {
                    kept.pop_front();
                }
                if n > 0 {
                    kept.push_back(item);
                }
            }
            Ok(futures::stream::iter(kept.into_iter().map(Ok)).boxed())
        }
    }
}
