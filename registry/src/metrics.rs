//! The registry's Prometheus metrics (`--metrics-addr`): rule evaluation and the versions it
//! routes to. Read from memory on each scrape. `docs/operations.md` lists each metric.

use std::sync::atomic::Ordering;

use attune_nats::metrics::Exposition;

use crate::fire::FireCounts;
use crate::view::View;

/// The metrics page of a registry with `view` and rule evaluation counts `fired`.
pub fn render(view: &View, fired: &FireCounts) -> String {
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
    p.finish()
}
