//! `attune-bench`: how much Attune adds to running a script, measured side by side in one run
//! (the targets are in docs/performance.md). `scripts/bench` builds and runs it.
//!
//! For each runtime (sh, python, node) the same no-op script is run four ways — spawned directly
//! (the baseline), through the runner's invoke subject, through the registry's by-name route, and
//! through the `attune invoke` CLI — and each way gets p50 / p99 of sequential calls after a
//! warm-up, calls per second at concurrency 8, and its ratios to the baseline. The runner's
//! start-up is timed too, cold and over built environments. Everything runs on loopback and is
//! stopped at the end; the table goes to stdout and the figures to a JSON file.
//!
//! # Layout
//! - [`stack`]: starts and stops nats-server, the registry and the runner; times start-up.
//! - [`measure`]: the four routes, latency (interleaved) and throughput, percentiles.
//! - [`report`]: rows, the targets of docs/performance.md, the table and the JSON document.

mod measure;
mod report;
mod scale;
mod stack;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use crate::measure::{Driver, Route};
use crate::report::{Counts, RecordingCost, Report, Row};

/// Measures Attune's cold path against direct spawn; prints a table and writes JSON.
#[derive(Debug, Parser)]
#[command(name = "attune-bench")]
struct Args {
    /// Sequential calls per route after warm-up (sh and python).
    #[arg(long, default_value_t = 500)]
    calls: usize,
    /// Warm-up calls per route before measuring.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Calls per route for the throughput measurement (sh and python).
    #[arg(long, default_value_t = 2000)]
    throughput_calls: usize,
    /// Concurrent callers for throughput, and the runner's concurrency.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Times the sh measurement (the cheapest and noisiest) is repeated; the median is reported.
    #[arg(long, default_value_t = 3)]
    sh_repeats: usize,
    /// Sequential and throughput calls for node, whose start-up alone costs ~65 ms of CPU: the
    /// full counts would take longer than the whole run may.
    #[arg(long, default_value_t = 100)]
    node_calls: usize,
    /// Throughput calls for node.
    #[arg(long, default_value_t = 400)]
    node_throughput_calls: usize,
    /// Sequential calls of the `attune invoke` CLI (each is a process), per runtime.
    #[arg(long, default_value_t = 100)]
    cli_calls: usize,
    /// Throughput calls of the CLI, per runtime.
    #[arg(long, default_value_t = 200)]
    cli_throughput_calls: usize,
    /// Runner restarts over built environments, to time start-up (the median is reported).
    #[arg(long, default_value_t = 3)]
    warm_starts: usize,
    /// The `attune` binary for the CLI route (default: next to this binary).
    #[arg(long)]
    attune: Option<PathBuf>,
    /// Skip the CLI route.
    #[arg(long)]
    no_cli: bool,
    /// The python that has Celery and redis-py installed; with `--redis-server`, the same no-op
    /// is measured as a Celery task (`scripts/bench` installs both).
    #[arg(long)]
    celery_python: Option<PathBuf>,
    /// The redis-server binary for the Celery measurement.
    #[arg(long)]
    redis_server: Option<PathBuf>,
    /// Divide every count by 10 (a smoke test of the harness, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Only these runtimes (comma list of sh, python, node).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// Instead of the latency benchmark, the scale simulation: for each runner count in the
    /// list (`1,10,100`), that many runners in this process serving ten versions each; its
    /// table goes to stdout and its JSON to target/bench/scale.json (docs/performance.md).
    #[arg(long, value_delimiter = ',', value_name = "COUNTS")]
    scale: Vec<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,attune_runner::verify=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    if args.quick {
        for n in [
            &mut args.calls,
            &mut args.throughput_calls,
            &mut args.node_calls,
            &mut args.node_throughput_calls,
            &mut args.cli_calls,
            &mut args.cli_throughput_calls,
        ] {
            *n = (*n / 10).max(5);
        }
        args.warmup = args.warmup.min(5);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    match runtime.block_on(bench(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs everything; `Ok(false)` when a target is missed.
async fn bench(args: Args) -> Result<bool, String> {
    let began = Instant::now();
    let attune = match &args.attune {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("attune"),
    };
    if !args.scale.is_empty() {
        let rows = scale::run(&args.scale, Some(attune)).await?;
        print!("{}", scale::table(&rows));
        let path = args.json.with_file_name("scale.json");
        let json = serde_json::to_string_pretty(&rows).expect("the rows serialise");
        std::fs::write(&path, json + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!(
            "wrote {} in {:.0} s",
            path.display(),
            began.elapsed().as_secs_f64()
        );
        return Ok(true);
    }
    if !args.no_cli && !attune.is_file() {
        return Err(format!(
            "{} is missing: build it (cargo build --release -p attune-cli), pass --attune, or --no-cli",
            attune.display()
        ));
    }

    eprintln!("starting nats-server, registry and runner...");
    let stack = stack::Stack::start(args.concurrency, args.warm_starts).await?;
    eprintln!(
        "  registry {:.0} ms; runner first start {:.0} ms; over built environments {:?} ms",
        stack.startup.registry_ms, stack.startup.runner_first_ms, stack.startup.runner_warm_ms
    );
    let driver = Driver {
        client: stack.client.clone(),
        attune,
        url: stack.server.url(),
        env: Arc::new(attune_runner::procenv::base_env(&stack.path)),
    };

    let set_recording = |on: bool| stack.set_recording(on);
    let result = measure_all(&args, &driver, &stack.targets, &set_recording).await;
    let startup = stack.startup.clone();
    let targets = stack.targets.clone();
    stack.stop().await;
    let (rows, recording, runs, counts) = result?;

    let report = Report::new(
        rows,
        recording,
        runs,
        counts,
        startup,
        &targets,
        began.elapsed(),
    );
    print!("{}", report.table());
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.json()).expect("the report serialises");
    std::fs::write(&args.json, json + "\n")
        .map_err(|e| format!("writing {}: {e}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    Ok(report.all_met())
}

/// Runs `bench/celery/celery_bench.py` with `python` (Celery and redis-py installed) and
/// `redis`; its JSON figures.
fn celery(
    python: &std::path::Path,
    redis: &std::path::Path,
    args: &Args,
    calls: usize,
    throughput_calls: usize,
) -> Result<serde_json::Value, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("celery")
        .join("celery_bench.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--redis-server")
        .arg(redis)
        .args(["--calls", &calls.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--throughput-calls", &throughput_calls.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", script.display(), out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("its output is not JSON: {e}"))
}

/// Throughput calls of each route are made in this many blocks, the routes taking turns, so
/// a slow patch of the shared machine does not land on one route only.
const THROUGHPUT_BLOCKS: usize = 8;

/// Blocks of the recording on/off comparison, and sequential calls per block and mode.
const RECORDING_BLOCKS: usize = 10;
const RECORDING_CALLS: usize = 100;

type Measured = (Vec<Row>, Vec<RecordingCost>, Vec<Row>, Counts);

/// Every runtime, every route: the reported rows (medians for repeated runtimes), every
/// individual run, and the counts used.
async fn measure_all(
    args: &Args,
    driver: &Driver,
    targets: &[stack::Target],
    set_recording: &dyn Fn(bool),
) -> Result<Measured, String> {
    let conc = args.concurrency;
    let mut rows = Vec::new();
    let mut recording = Vec::new();
    let mut all_runs = Vec::new();
    for t in targets {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == t.label) {
            continue;
        }
        // Cold python costs ~10x a warm call and node ~50x: they get the smaller counts.
        let (calls, thr_calls, repeats) = match t.label {
            "sh" => (args.calls, args.throughput_calls, args.sh_repeats.max(1)),
            "python warm" => (args.calls, args.throughput_calls, 1),
            _ => (args.node_calls, args.node_throughput_calls, 1),
        };
        // The by-name route is the router's cost, the same for any action: measured where the
        // spawn is cheap enough for it to show.
        let routes: &[Route] = match t.label {
            "sh" | "python warm" | "python cold" => &[Route::Direct, Route::Invoke, Route::ByName],
            _ => &[Route::Direct, Route::Invoke],
        };
        let mut runs: Vec<Vec<Row>> = Vec::new();
        for run in 0..repeats {
            let step = Instant::now();
            let samples = driver.latency(routes, t, args.warmup, calls).await?;
            let thr = driver
                .throughput_interleaved(routes, t, thr_calls, conc, THROUGHPUT_BLOCKS)
                .await?;
            let base = Row::measured(t, Route::Direct, &samples[0], thr[0], thr_calls, conc, None);
            let mut set = vec![base.clone()];
            for i in 1..routes.len() {
                set.push(Row::measured(
                    t,
                    routes[i],
                    &samples[i],
                    thr[i],
                    thr_calls,
                    conc,
                    Some(&base),
                ));
            }
            eprintln!(
                "  {} run {}/{repeats}: {:.1} s",
                t.label,
                run + 1,
                step.elapsed().as_secs_f64()
            );
            all_runs.extend(set.iter().cloned());
            runs.push(set);
        }
        let merged: Vec<Row> = (0..routes.len())
            .map(|i| Row::median(&runs.iter().map(|set| set[i].clone()).collect::<Vec<_>>()))
            .collect();
        let base = merged[0].clone();
        rows.extend(merged);
        // What recording costs, where a call is cheapest (so the cost shows most).
        if matches!(t.label, "sh" | "python warm") {
            let step = Instant::now();
            let per_block = if args.quick {
                RECORDING_CALLS / 10
            } else {
                RECORDING_CALLS
            };
            let (on, off) = driver
                .recording_cost(t, set_recording, RECORDING_BLOCKS, per_block)
                .await?;
            recording.push(RecordingCost::new(t.label, &on, &off));
            eprintln!(
                "  {} recording on/off: {:.1} s",
                t.label,
                step.elapsed().as_secs_f64()
            );
        }
        if t.label == "python warm" {
            if let (Some(py), Some(redis)) = (&args.celery_python, &args.redis_server) {
                let step = Instant::now();
                match celery(py, redis, args, calls, thr_calls) {
                    Ok(v) => rows.extend(Row::celery(&v, &base)),
                    Err(e) => eprintln!("  celery: not measured: {e}"),
                }
                eprintln!("  celery: {:.1} s", step.elapsed().as_secs_f64());
            }
        }
        // The CLI's cost is its own (start, connect, one lookup), the same for any action.
        if !args.no_cli && matches!(t.label, "sh" | "python warm") {
            let step = Instant::now();
            let (cli_calls, cli_thr) = (args.cli_calls, args.cli_throughput_calls);
            let samples = driver
                .latency(&[Route::Cli], t, args.warmup.min(5), cli_calls)
                .await?;
            let thr = driver
                .throughput_interleaved(&[Route::Cli], t, cli_thr, conc, 1)
                .await?[0];
            rows.push(Row::measured(
                t,
                Route::Cli,
                &samples[0],
                thr,
                cli_thr,
                conc,
                Some(&base),
            ));
            eprintln!("  {} CLI: {:.1} s", t.label, step.elapsed().as_secs_f64());
        }
    }
    let counts = Counts {
        warmup: args.warmup,
        calls: args.calls,
        throughput_calls: args.throughput_calls,
        concurrency: conc,
        sh_repeats: args.sh_repeats,
        node_calls: args.node_calls,
        node_throughput_calls: args.node_throughput_calls,
        cli_calls: args.cli_calls,
        cli_throughput_calls: args.cli_throughput_calls,
        quick: args.quick,
    };
    Ok((rows, recording, all_runs, counts))
}
