//! The registry's set-up step: the one place that creates or updates Attune's JetStream
//! resources.
//!
//! Runners and clients only open these by name (see [`attune_nats::jetstream`]), so the
//! operator's replicas, TTLs and limits given to the registry hold until the registry changes
//! them, and no other role needs permission to create streams. [`provision`] runs before every
//! publish, so a wiped JetStream gets everything back the same way it was first made.

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use attune_nats::events::provision_events;
use attune_nats::jetstream::{
    provision_kv, provision_pack_files, Bucket, StoreError, StoreOptions,
};
use attune_nats::jobs::{provision_jobs_stream, provision_results_files};
use attune_nats::Namespace;
use tracing::instrument;

/// Every resource [`provision`] made sure of, opened.
pub struct Provisioned {
    /// KV `attune-runtimes`.
    pub runtimes: kv::Store,
    /// KV `attune-actions`.
    pub actions: kv::Store,
    /// KV `attune-packs`.
    pub packs: kv::Store,
    /// KV `attune-runners` (written by runners, watched by the registry).
    pub runners: kv::Store,
    /// KV `attune-results` (written by runners).
    pub results: kv::Store,
    /// KV `attune-routes` (each action's current route, read by clients).
    pub routes: kv::Store,
    /// KV `attune-sensors` (sensor leases, written by runners).
    pub sensors: kv::Store,
    /// KV `attune-slots` (concurrency slots, taken by runners).
    pub slots: kv::Store,
    /// Object store `attune-pack-files`.
    pub pack_files: object_store::ObjectStore,
    /// Object store `attune-results-files` (written by runners).
    pub results_files: object_store::ObjectStore,
    /// Stream `ATTUNE_JOBS`.
    pub jobs: stream::Stream,
    /// Stream `ATTUNE_EXECUTIONS` (records written by runners).
    pub executions: stream::Stream,
    /// The registries' shared consumer of stream `ATTUNE_EVENTS`, which evaluates rules.
    pub rules: consumer::PullConsumer,
}

impl Provisioned {
    /// The opened store of one of the buckets.
    pub fn bucket(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Runtimes => &self.runtimes,
            Bucket::Actions => &self.actions,
            Bucket::Packs => &self.packs,
            Bucket::Runners => &self.runners,
            Bucket::Results => &self.results,
            Bucket::Routes => &self.routes,
            Bucket::Sensors => &self.sensors,
            Bucket::Slots => &self.slots,
        }
    }
}

/// Creates every KV bucket, object store and stream of `ns` with `opts`, or updates the settings
/// that differ. Idempotent; a few round trips when nothing changes. Each step is boxed: held
/// inline, eleven steps make a future (and, in debug builds, poll frames) large enough to
/// overflow a worker thread's stack deep inside an API call.
#[instrument(skip_all, fields(prefix = %ns.prefix()))]
pub async fn provision(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<Provisioned, StoreError> {
    Ok(Provisioned {
        runtimes: Box::pin(provision_kv(js, ns, Bucket::Runtimes, opts)).await?,
        actions: Box::pin(provision_kv(js, ns, Bucket::Actions, opts)).await?,
        packs: Box::pin(provision_kv(js, ns, Bucket::Packs, opts)).await?,
        runners: Box::pin(provision_kv(js, ns, Bucket::Runners, opts)).await?,
        results: Box::pin(provision_kv(js, ns, Bucket::Results, opts)).await?,
        routes: Box::pin(provision_kv(js, ns, Bucket::Routes, opts)).await?,
        sensors: Box::pin(provision_kv(js, ns, Bucket::Sensors, opts)).await?,
        slots: Box::pin(provision_kv(js, ns, Bucket::Slots, opts)).await?,
        pack_files: Box::pin(provision_pack_files(js, ns, opts)).await?,
        results_files: Box::pin(provision_results_files(js, ns, opts)).await?,
        jobs: Box::pin(provision_jobs_stream(js, ns, opts)).await?,
        executions: Box::pin(attune_nats::executions::provision_executions(js, ns, opts)).await?,
        rules: Box::pin(provision_events(js, ns, opts)).await?,
    })
}
