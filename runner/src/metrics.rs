//! The runner's Prometheus metrics (`--metrics-addr`): what it ran and how long it took, its
//! slots and the cluster-wide slots of limited actions, the versions it serves, its warm pools, its sensors and its execution records.
//! Counters are kept as invocations end; everything else is read from the runner's state when
//! the page is scraped. `docs/operations.md` lists each metric.

use std::sync::atomic::{AtomicU64, Ordering};

use attune_nats::metrics::{Exposition, Family, Histogram};
use attune_nats::InvocationReply;

use crate::service::Dispatcher;

/// What the runner counts as it works.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ended invocations by (action, version, status).
    invocations: Family<(String, String, String), u64>,
    /// Their durations by (action, version).
    durations: Family<(String, String), Histogram>,
    /// Job deliveries this runner finished, by outcome (`succeeded`, `dead_letter`, `retrying`).
    jobs: Family<String, u64>,
    /// Sensors this runner holds the lease of.
    pub sensors_running: AtomicU64,
    /// Sensor lines published as events.
    pub sensor_events: AtomicU64,
    /// Sensor lines refused.
    pub sensor_refused: AtomicU64,
}

impl Metrics {
    /// Counts one job delivery that ended in `outcome`.
    pub fn job(&self, outcome: &str) {
        self.jobs.update(outcome.to_string(), |n| *n += 1);
    }

    /// Counts one ended (or refused) invocation.
    pub fn observe(&self, reply: &InvocationReply) {
        let version = reply.version.clone().unwrap_or_default();
        self.invocations.update(
            (
                reply.action.clone(),
                version.clone(),
                reply.status.as_str().to_string(),
            ),
            |n| *n += 1,
        );
        if reply.started_at.is_some() {
            self.durations.update((reply.action.clone(), version), |h| {
                h.observe(reply.duration_ms / 1000.0)
            });
        }
    }
}

/// The metrics page of the runner of `d`.
pub fn render(d: &Dispatcher) -> String {
    let m = &d.metrics;
    let mut p = Exposition::new();
    p.declare(
        "attune_runner_invocations_total",
        "counter",
        "Invocations this runner ended, by action, version and status (rejected included).",
    );
    for ((action, version, status), n) in m.invocations.snapshot() {
        p.sample(
            "attune_runner_invocations_total",
            &[
                ("action", &action),
                ("version", &version),
                ("status", &status),
            ],
            n as f64,
        );
    }
    p.declare(
        "attune_runner_invocation_duration_seconds",
        "histogram",
        "Wall time of the processes this runner ran, by action and version.",
    );
    for ((action, version), h) in m.durations.snapshot() {
        p.histogram(
            "attune_runner_invocation_duration_seconds",
            &[("action", &action), ("version", &version)],
            &h,
        );
    }
    p.declare(
        "attune_runner_jobs_total",
        "counter",
        "Job attempts this runner recorded, by outcome: succeeded, dead_letter (final and not succeeded), retrying.",
    );
    for (outcome, n) in m.jobs.snapshot() {
        p.sample(
            "attune_runner_jobs_total",
            &[("outcome", &outcome)],
            n as f64,
        );
    }
    let capacity = d.config.concurrency;
    let running = capacity - d.slots.available_permits();
    let accepted = d.tracker.count();
    p.declare(
        "attune_runner_slots",
        "gauge",
        "Invocations that may run at once.",
    )
    .sample("attune_runner_slots", &[], capacity as f64);
    p.declare(
        "attune_runner_slots_in_use",
        "gauge",
        "Invocations running now.",
    )
    .sample("attune_runner_slots_in_use", &[], running as f64);
    p.declare(
        "attune_runner_waiting",
        "gauge",
        "Accepted invocations waiting for a slot.",
    )
    .sample(
        "attune_runner_waiting",
        &[],
        accepted.saturating_sub(running) as f64,
    );
    let limited = d.cluster.stats();
    for (name, help, value) in [
        (
            "attune_runner_concurrency_slots_held",
            "Cluster-wide slots of limited actions this runner holds, by action.",
            (|s: &crate::concurrency::SlotStats| s.held) as fn(&_) -> usize,
        ),
        (
            "attune_runner_concurrency_waiting",
            "Invocations on this runner waiting for a cluster-wide slot of their action.",
            |s| s.waiting,
        ),
        (
            "attune_runner_concurrency_slots_taken",
            "Cluster-wide slots of limited actions taken by any runner, as this runner sees them.",
            |s| s.taken,
        ),
    ] {
        p.declare(name, "gauge", help);
        for s in &limited {
            p.sample(name, &[("action", &s.action)], value(s) as f64);
        }
    }
    p.declare(
        "attune_runner_version_verified",
        "gauge",
        "1 for each version this runner verified and serves, 0 for one that failed verification.",
    );
    let (served, failed) = d.catalog.read(|s| {
        let served: Vec<(String, String)> = s
            .served
            .keys()
            .map(|k| (k.runtime.clone(), k.version.clone()))
            .collect();
        let failed: Vec<(String, String)> = s
            .unavailable
            .keys()
            .map(|k| (k.runtime.clone(), k.version.clone()))
            .collect();
        (served, failed)
    });
    for (list, value) in [(served, 1.0), (failed, 0.0)] {
        for (runtime, version) in list {
            p.sample(
                "attune_runner_version_verified",
                &[("runtime", &runtime), ("version", &version)],
                value,
            );
        }
    }
    p.declare(
        "attune_runner_warm_pools",
        "gauge",
        "Warm pools by runtime, version and state.",
    );
    let mut pools: std::collections::BTreeMap<(String, String, String), u64> = Default::default();
    for pool in d.warm.report() {
        *pools
            .entry((pool.runtime, pool.version, pool.state))
            .or_default() += 1;
    }
    for ((runtime, version, state), n) in pools {
        p.sample(
            "attune_runner_warm_pools",
            &[
                ("runtime", &runtime),
                ("version", &version),
                ("state", &state),
            ],
            n as f64,
        );
    }
    p.declare(
        "attune_runner_sensors_running",
        "gauge",
        "Sensors this runner runs now.",
    )
    .sample(
        "attune_runner_sensors_running",
        &[],
        m.sensors_running.load(Ordering::Relaxed) as f64,
    );
    p.by_label(
        "attune_runner_sensor_lines_total",
        "counter",
        "Lines of the sensors this runner ran: published as events, or refused.",
        "outcome",
        &[
            ("published", m.sensor_events.load(Ordering::Relaxed)),
            ("refused", m.sensor_refused.load(Ordering::Relaxed)),
        ],
    );
    p.declare(
        "attune_runner_execution_records_dropped_total",
        "counter",
        "Execution records this runner could not store.",
    )
    .sample(
        "attune_runner_execution_records_dropped_total",
        &[],
        d.history.dropped() as f64,
    );
    p.finish()
}
