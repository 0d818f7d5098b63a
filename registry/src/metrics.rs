//! The registry's Prometheus metrics (`--metrics-addr`): rule evaluation, the versions it routes
//! to, and the depth of each version's job queue. Read from memory on each scrape; the queue
//! depths are sampled from JetStream in the background, so a scrape never waits on NATS.
//! `docs/operations.md` lists each metric.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attune_nats::metrics::Exposition;
use attune_nats::shutdown::Shutdown;
use futures::StreamExt;
use tracing::debug;

use crate::fire::FireCounts;
use crate::registry::Registry;
use crate::view::View;

/// How often the job queues are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One version's job queue, as its durable consumer on `ATTUNE_JOBS` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The runtime.
    pub runtime: String,
    /// The version.
    pub version: String,
    /// Jobs stored and not yet delivered to any runner.
    pub pending: u64,
    /// Jobs delivered and not yet acknowledged: running, waiting for a concurrency slot, or
    /// waiting to be retried.
    pub in_flight: u64,
}

/// The latest sample of every version's job queue.
#[derive(Debug, Default)]
pub struct JobQueues(Mutex<Vec<QueueDepth>>);

/// Samples the job queues every [`SAMPLE_EVERY`] until `shutdown`.
pub async fn sample_jobs(registry: Arc<Registry>, queues: Arc<JobQueues>, mut shutdown: Shutdown) {
    loop {
        match sample(&registry).await {
            Ok(depths) => *queues.0.lock().expect("never poisoned") = depths,
            Err(e) => debug!(error = %e, "could not sample the job queues"),
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// Every durable consumer of the jobs stream, as a queue depth.
async fn sample(registry: &Registry) -> Result<Vec<QueueDepth>, async_nats::Error> {
    let js = registry.publisher.jetstream();
    let stream = attune_nats::jobs::open_jobs_stream(js, &registry.ns).await?;
    let mut consumers = stream.consumers();
    let mut out = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info?;
        let Some((runtime, version)) = registry.ns.parse_jobs(&info.config.filter_subject) else {
            continue;
        };
        out.push(QueueDepth {
            runtime: runtime.to_string(),
            version: version.to_string(),
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
        });
    }
    out.sort_by(|a, b| (&a.runtime, &a.version).cmp(&(&b.runtime, &b.version)));
    Ok(out)
}

/// The metrics page of a registry with `view`, rule evaluation counts `fired` and job queue
/// depths `queues`.
pub fn render(view: &View, fired: &FireCounts, queues: &JobQueues) -> String {
    let mut p = Exposition::new();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    p.by_label(
        "attune_registry_events_total",
        "counter",
        "Events this registry took from the stream: evaluated, or refused (malformed, unknown trigger type, payload against its schema).",
        "outcome",
        &[("evaluated", load(&fired.events)), ("refused", load(&fired.invalid))],
    );
    p.by_label(
        "attune_registry_rule_matches_total",
        "counter",
        "Rule matches: enqueued as a job, or refused (recorded as a refused execution).",
        "outcome",
        &[
            ("enqueued", load(&fired.jobs)),
            ("refused", load(&fired.skipped)),
        ],
    );
    p.declare(
        "attune_registry_version_available",
        "gauge",
        "1 when a live runner serves the version (and it is enabled), else 0.",
    );
    for (runtime, version, enabled, available) in view.versions() {
        p.sample(
            "attune_registry_version_available",
            &[("runtime", &runtime), ("version", &version)],
            if enabled && available { 1.0 } else { 0.0 },
        );
    }
    p.declare("attune_registry_actions", "gauge", "Actions registered.")
        .sample("attune_registry_actions", &[], view.action_count() as f64);
    let depths = queues.0.lock().expect("never poisoned").clone();
    for (name, help, value) in [
        (
            "attune_registry_jobs_pending",
            "Jobs queued for a version and not yet delivered to a runner (sampled every 5 s).",
            (|d: &QueueDepth| d.pending) as fn(&QueueDepth) -> u64,
        ),
        (
            "attune_registry_jobs_in_flight",
            "Jobs delivered to a runner and not yet acknowledged: running, waiting for a concurrency slot, or waiting to be retried (sampled every 5 s).",
            |d| d.in_flight,
        ),
    ] {
        p.declare(name, "gauge", help);
        for d in &depths {
            p.sample(
                name,
                &[("runtime", &d.runtime), ("version", &d.version)],
                value(d) as f64,
            );
        }
    }
    p.finish()
}
