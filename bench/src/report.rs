//! Rows of figures, the targets (docs/performance.md) checked against them, the table, the JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::measure::{median, percentile, Route, Throughput};
use crate::stack::{Startup, Target};

/// Added p50 latency over direct spawn that an invocation may cost (docs/performance.md).
pub const TARGET_ADDED_P50_MS: f64 = 1.0;
/// Throughput at concurrency 8 relative to direct spawn that an invocation must reach.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.95;
/// What the by-name route may add, p50, over the invoke subject.
pub const TARGET_ROUTER_P50_MS: f64 = 0.2;
/// Runner start-up to serving with environments built.
pub const TARGET_WARM_START_MS: f64 = 500.0;
/// A warm no-op's p50 relative to a direct spawn of the same interpreter, at most.
pub const TARGET_WARM_P50_RATIO: f64 = 0.2;
/// Warm python calls per second at concurrency 8, at least, and relative to direct spawn.
pub const TARGET_WARM_PY_THROUGHPUT: f64 = 1000.0;
/// Warm python throughput relative to direct spawn, at least.
pub const TARGET_WARM_PY_THROUGHPUT_RATIO: f64 = 5.0;
/// What a preloaded heavy import may add to the warm no-op's p50.
pub const TARGET_HEAVY_ADDED_MS: f64 = 1.0;
/// What the `attune invoke` CLI may add, p50, over a request on the invoke subject.
pub const TARGET_CLI_ADDED_MS: f64 = 5.0;
/// Most p50 that recording executions (history and live output) may add, in ms.
pub const TARGET_RECORDING_P50_MS: f64 = 0.1;
/// Most host CPU per call with recording, as a ratio to without it.
pub const TARGET_RECORDING_CPU_RATIO: f64 = 1.10;

/// The counts a run used.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    /// Warm-up calls per route.
    pub warmup: usize,
    /// Sequential calls per route (sh, python).
    pub calls: usize,
    /// Throughput calls per route (sh, python).
    pub throughput_calls: usize,
    /// Concurrent callers, and the runner's concurrency.
    pub concurrency: usize,
    /// Runs of the sh measurement.
    pub sh_repeats: usize,
    /// Sequential calls per route for node.
    pub node_calls: usize,
    /// Throughput calls per route for node.
    pub node_throughput_calls: usize,
    /// Sequential CLI calls.
    pub cli_calls: usize,
    /// Throughput CLI calls.
    pub cli_throughput_calls: usize,
    /// Whether this was a `--quick` smoke run.
    pub quick: bool,
}

/// One route of one runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `sh`, `python`, `node`.
    pub runtime: String,
    /// The version the action ran on.
    pub version: String,
    /// How it was reached.
    pub route: Route,
    /// Sequential calls measured.
    pub sequential_calls: usize,
    /// Calls in the throughput measurement.
    pub throughput_calls: usize,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Runs this row is the median of.
    pub runs: usize,
    /// Median sequential latency.
    pub p50_ms: f64,
    /// 99th percentile sequential latency.
    pub p99_ms: f64,
    /// Calls per second at `concurrency`.
    pub throughput_per_s: f64,
    /// CPU time of the bench process (client, registry, runner; not children) per call, at
    /// concurrency: what the route costs beyond the child process itself.
    pub cpu_us_per_call: f64,
    /// CPU time of the whole host (every process) per call, at concurrency.
    pub host_cpu_ms_per_call: f64,
    /// `p50_ms` minus the direct spawn's.
    pub added_p50_ms: f64,
    /// `p50_ms` over the direct spawn's.
    pub p50_ratio: f64,
    /// `throughput_per_s` over the direct spawn's.
    pub throughput_ratio: f64,
}

impl Row {
    /// The Celery row, from `celery_bench.py`'s JSON; ratios against `base` (the python direct
    /// spawn of the same run).
    pub fn celery(v: &Value, base: &Row) -> Option<Row> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let (p50, thr) = (f("p50_ms")?, f("throughput_per_s")?);
        Some(Row {
            runtime: "celery".into(),
            version: v
                .get("celery")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .into(),
            route: Route::Celery,
            sequential_calls: f("calls")? as usize,
            throughput_calls: f("throughput_calls")? as usize,
            concurrency: base.concurrency,
            runs: 1,
            p50_ms: p50,
            p99_ms: f("p99_ms")?,
            throughput_per_s: thr,
            cpu_us_per_call: 0.0,
            host_cpu_ms_per_call: f("host_cpu_ms_per_call")?,
            added_p50_ms: p50 - base.p50_ms,
            p50_ratio: p50 / base.p50_ms,
            throughput_ratio: thr / base.throughput_per_s,
        })
    }

    /// A row from samples; ratios against `base` (none: this is the baseline).
    pub fn measured(
        t: &Target,
        route: Route,
        samples: &[Duration],
        throughput: Throughput,
        throughput_calls: usize,
        concurrency: usize,
        base: Option<&Row>,
    ) -> Row {
        let p50 = percentile(samples, 50.0);
        let (bp50, bthr) = base.map_or((p50, throughput.per_s), |b| (b.p50_ms, b.throughput_per_s));
        Row {
            runtime: t.label.to_string(),
            version: t.version.clone(),
            route,
            sequential_calls: samples.len(),
            throughput_calls,
            concurrency,
            runs: 1,
            p50_ms: p50,
            p99_ms: percentile(samples, 99.0),
            throughput_per_s: throughput.per_s,
            cpu_us_per_call: throughput.cpu_us_per_call,
            host_cpu_ms_per_call: throughput.host_cpu_ms_per_call,
            added_p50_ms: p50 - bp50,
            p50_ratio: p50 / bp50,
            throughput_ratio: throughput.per_s / bthr,
        }
    }

    /// The median of each figure over runs of the same route (ratios are medians of the
    /// per-run ratios, each taken against the baseline of its own run).
    pub fn median(runs: &[Row]) -> Row {
        let m = |f: fn(&Row) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Row {
            runs: runs.len(),
            p50_ms: m(|r| r.p50_ms),
            p99_ms: m(|r| r.p99_ms),
            throughput_per_s: m(|r| r.throughput_per_s),
            cpu_us_per_call: m(|r| r.cpu_us_per_call),
            host_cpu_ms_per_call: m(|r| r.host_cpu_ms_per_call),
            added_p50_ms: m(|r| r.added_p50_ms),
            p50_ratio: m(|r| r.p50_ratio),
            throughput_ratio: m(|r| r.throughput_ratio),
            ..runs[0].clone()
        }
    }
}

/// One target of docs/performance.md and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is required.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

impl Check {
    /// A target on milliseconds added over a baseline: met when `added` is at most `limit`.
    fn added(target: String, added: f64, limit: f64) -> Check {
        Check {
            target,
            measured: format!("{added:+.3} ms"),
            met: added <= limit,
        }
    }
}

/// The added cost of recording (history and live output) on one target: the same sequential
/// invoke calls with recording on and off, in interleaved blocks.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingCost {
    /// The target's label.
    pub runtime: String,
    /// Calls per mode.
    pub calls: usize,
    /// p50 / p99 with recording on, ms.
    pub on_p50_ms: f64,
    /// p99 with recording on, ms.
    pub on_p99_ms: f64,
    /// p50 with recording off, ms.
    pub off_p50_ms: f64,
    /// p99 with recording off, ms.
    pub off_p99_ms: f64,
    /// CPU of the bench process per call, on and off, µs.
    pub on_cpu_us: f64,
    /// CPU of the bench process per call with recording off, µs.
    pub off_cpu_us: f64,
    /// CPU of the whole host per call, on, ms.
    pub on_host_ms: f64,
    /// CPU of the whole host per call, off, ms.
    pub off_host_ms: f64,
}

impl RecordingCost {
    /// The figures of `on` and `off` for target `runtime`.
    pub fn new(
        runtime: &str,
        on: &crate::measure::Sequential,
        off: &crate::measure::Sequential,
    ) -> Self {
        RecordingCost {
            runtime: runtime.to_string(),
            calls: on.samples.len(),
            on_p50_ms: percentile(&on.samples, 50.0),
            on_p99_ms: percentile(&on.samples, 99.0),
            off_p50_ms: percentile(&off.samples, 50.0),
            off_p99_ms: percentile(&off.samples, 99.0),
            on_cpu_us: on.cpu_us_per_call(),
            off_cpu_us: off.cpu_us_per_call(),
            on_host_ms: on.host_ms_per_call(),
            off_host_ms: off.host_ms_per_call(),
        }
    }
}

/// The whole result of a run.
pub struct Report {
    recording: Vec<RecordingCost>,
    rows: Vec<Row>,
    runs: Vec<Row>,
    counts: Counts,
    startup: Startup,
    checks: Vec<Check>,
    targets: Vec<Value>,
    elapsed: Duration,
}

impl Report {
    /// Builds the report and checks the targets.
    pub fn new(
        rows: Vec<Row>,
        recording: Vec<RecordingCost>,
        runs: Vec<Row>,
        counts: Counts,
        startup: Startup,
        targets: &[Target],
        elapsed: Duration,
    ) -> Report {
        let mut checks = Vec::new();
        let find =
            |rt: &str, route: Route| rows.iter().find(|r| r.runtime == rt && r.route == route);
        for t in targets.iter().filter(|t| t.warm) {
            let Some(invoke) = find(t.label, Route::Invoke) else {
                continue;
            };
            checks.push(Check {
                target: format!(
                    "{}: warm invoke p50 <= {TARGET_WARM_P50_RATIO}x direct spawn",
                    t.label
                ),
                measured: format!("{:.3}x ({:.2} ms)", invoke.p50_ratio, invoke.p50_ms),
                met: invoke.p50_ratio <= TARGET_WARM_P50_RATIO,
            });
        }
        if let Some(warm) = find("python warm", Route::Invoke) {
            checks.push(Check {
                target: format!(
                    "python warm: >= {TARGET_WARM_PY_THROUGHPUT} calls/s @{} and >= {TARGET_WARM_PY_THROUGHPUT_RATIO}x direct",
                    warm.concurrency
                ),
                measured: format!("{:.0}/s, {:.2}x", warm.throughput_per_s, warm.throughput_ratio),
                met: warm.throughput_per_s >= TARGET_WARM_PY_THROUGHPUT
                    && warm.throughput_ratio >= TARGET_WARM_PY_THROUGHPUT_RATIO,
            });
            let celery = rows.iter().find(|r| r.route == Route::Celery);
            checks.push(Check {
                target: "python warm: invoke p50 below the Celery task's p50".into(),
                measured: celery.map_or("celery not measured".into(), |c| {
                    format!("{:.2} ms vs {:.2} ms", warm.p50_ms, c.p50_ms)
                }),
                met: celery.is_some_and(|c| warm.p50_ms < c.p50_ms),
            });
            if let Some(heavy) = find("py heavy warm", Route::Invoke) {
                checks.push(Check::added(
                    format!(
                        "py heavy warm (preloaded): p50 within {TARGET_HEAVY_ADDED_MS} ms of the warm no-op"
                    ),
                    heavy.p50_ms - warm.p50_ms,
                    TARGET_HEAVY_ADDED_MS,
                ));
            }
            if let Some(cli) = find("python warm", Route::Cli) {
                checks.push(Check::added(
                    format!(
                        "attune invoke CLI adds p50 <= {TARGET_CLI_ADDED_MS} ms over the invoke subject"
                    ),
                    cli.p50_ms - warm.p50_ms,
                    TARGET_CLI_ADDED_MS,
                ));
            }
        }
        for t in targets.iter().filter(|t| !t.warm) {
            let (Some(invoke), Some(by_name)) =
                (find(t.label, Route::Invoke), find(t.label, Route::ByName))
            else {
                continue;
            };
            checks.push(Check::added(
                format!(
                    "{}: invoke adds p50 <= {TARGET_ADDED_P50_MS} ms over direct spawn",
                    t.label
                ),
                invoke.added_p50_ms,
                TARGET_ADDED_P50_MS,
            ));
            checks.push(Check {
                target: format!(
                    "{}: invoke throughput @{} >= {TARGET_THROUGHPUT_RATIO}x direct spawn",
                    t.label, invoke.concurrency
                ),
                measured: format!("{:.3}x", invoke.throughput_ratio),
                met: invoke.throughput_ratio >= TARGET_THROUGHPUT_RATIO,
            });
            checks.push(Check::added(
                format!(
                    "{}: by-name adds p50 <= {TARGET_ROUTER_P50_MS} ms over invoke",
                    t.label
                ),
                by_name.added_p50_ms - invoke.added_p50_ms,
                TARGET_ROUTER_P50_MS,
            ));
        }
        for r in &recording {
            checks.push(Check::added(
                format!(
                    "{}: recording adds p50 <= {TARGET_RECORDING_P50_MS} ms (on vs off)",
                    r.runtime
                ),
                r.on_p50_ms - r.off_p50_ms,
                TARGET_RECORDING_P50_MS,
            ));
            let ratio = r.on_host_ms / r.off_host_ms;
            checks.push(Check {
                target: format!(
                    "{}: recording adds <= {:.0}% host CPU per call",
                    r.runtime,
                    (TARGET_RECORDING_CPU_RATIO - 1.0) * 100.0
                ),
                measured: format!(
                    "{:+.1}% ({:.3} vs {:.3} ms)",
                    (ratio - 1.0) * 100.0,
                    r.on_host_ms,
                    r.off_host_ms
                ),
                met: ratio <= TARGET_RECORDING_CPU_RATIO,
            });
        }
        let warm = if startup.runner_warm_ms.is_empty() {
            None
        } else {
            Some(median(&startup.runner_warm_ms))
        };
        if let Some(warm) = warm {
            checks.push(Check {
                target: format!(
                    "runner start-up to serving, environments built, <= {TARGET_WARM_START_MS} ms"
                ),
                measured: format!("{warm:.0} ms (median of {})", startup.runner_warm_ms.len()),
                met: warm <= TARGET_WARM_START_MS,
            });
        }
        let targets = targets
            .iter()
            .map(|t| {
                json!({
                    "runtime": t.label, "action": t.action, "subject_runtime": t.runtime,
                    "version": t.version, "program": t.program, "args": t.args,
                })
            })
            .collect();
        Report {
            recording,
            rows,
            runs,
            counts,
            startup,
            checks,
            targets,
            elapsed,
        }
    }

    /// Whether every target was met.
    pub fn all_met(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<16} {:<24} {:>9} {:>9} {:>9} {:>10} {:>7} {:>10} {:>7} {:>8} {:>9}",
            "runtime",
            "route",
            "calls",
            "p50 ms",
            "p99 ms",
            "+p50 ms",
            "p50 x",
            "calls/s@8",
            "thr x",
            "cpu us",
            "host ms"
        );
        let _ = writeln!(out, "{}", "-".repeat(130));
        let mut last = "";
        for r in &self.rows {
            if !last.is_empty() && last != r.runtime {
                let _ = writeln!(out);
            }
            last = &r.runtime;
            let calls = format!("{}/{}", r.sequential_calls, r.throughput_calls);
            let (added, ratio, thr) = if r.route == Route::Direct {
                ("-".to_string(), "1.00".to_string(), "1.00".to_string())
            } else {
                (
                    format!("{:+.3}", r.added_p50_ms),
                    format!("{:.2}", r.p50_ratio),
                    format!("{:.3}", r.throughput_ratio),
                )
            };
            let label = if r.runs > 1 {
                format!("{} (med {})", r.route.label(), r.runs)
            } else {
                r.route.label().to_string()
            };
            let _ = writeln!(
                out,
                "{:<16} {:<24} {:>9} {:>9.3} {:>9.3} {:>10} {:>7} {:>10.1} {:>7} {:>8.0} {:>9.2}",
                format!(
                    "{} {}",
                    r.runtime,
                    if r.version == "default" {
                        ""
                    } else {
                        &r.version
                    }
                )
                .trim(),
                label,
                calls,
                r.p50_ms,
                r.p99_ms,
                added,
                ratio,
                r.throughput_per_s,
                thr,
                r.cpu_us_per_call,
                r.host_cpu_ms_per_call
            );
        }
        let s = &self.startup;
        let _ = writeln!(
            out,
            "\ncalls = sequential (after {} warm-up) / at concurrency {}; '(med N)' = median of N runs;\n\
             cpu us = CPU of the bench process (client + registry + runner, not the children) per call;\n\
             host ms = CPU of the whole host (every process: servers, interpreters, zygotes, Celery) per call;\n\
             ratios of the celery row are against the python direct spawn of this run",
            self.counts.warmup, self.counts.concurrency
        );
        let _ = writeln!(
            out,
            "start-up: registry {:.0} ms; runner first start (verify + build environments) {:.0} ms; \
             runner with environments built {} ms",
            s.registry_ms,
            s.runner_first_ms,
            s.runner_warm_ms
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        if !self.recording.is_empty() {
            let _ = writeln!(
                out,
                "\nrecording (history + live output), invoke subject, interleaved blocks on/off:\n\
                 {:<16} {:>7} {:>15} {:>15} {:>9} {:>17} {:>17}",
                "runtime",
                "calls",
                "p50 on/off ms",
                "p99 on/off ms",
                "+p50 ms",
                "cpu us on/off",
                "host ms on/off"
            );
            for r in &self.recording {
                let _ = writeln!(
                    out,
                    "{:<16} {:>7} {:>15} {:>15} {:>+9.3} {:>17} {:>17}",
                    r.runtime,
                    r.calls,
                    format!("{:.3}/{:.3}", r.on_p50_ms, r.off_p50_ms),
                    format!("{:.3}/{:.3}", r.on_p99_ms, r.off_p99_ms),
                    r.on_p50_ms - r.off_p50_ms,
                    format!("{:.0}/{:.0}", r.on_cpu_us, r.off_cpu_us),
                    format!("{:.3}/{:.3}", r.on_host_ms, r.off_host_ms),
                );
            }
        }
        let _ = writeln!(out, "\ntargets:");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{}] {:<66} {}",
                if c.met { "met" } else { "MISSED" },
                c.target,
                c.measured
            );
        }
        let _ = writeln!(out, "\ntotal run time {:.0} s", self.elapsed.as_secs_f64());
        out
    }

    /// The document written for tracking.
    pub fn json(&self) -> Value {
        json!({
            "format": 1,
            "finished_at": attune_nats::time::now_rfc3339(),
            "host": attune_runner::config::hostname(),
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "counts": self.counts,
            "targets": self.targets,
            "startup": self.startup,
            "rows": self.rows,
            "recording": self.recording,
            "runs": self.runs,
            "checks": self.checks,
            "all_met": self.all_met(),
            "total_seconds": self.elapsed.as_secs_f64(),
        })
    }
}
