//! `attune-bench --scale 1,10,100`: what grows with the number of runners.
//!
//! For each runner count N, a fresh nats-server, the registry (in process) and N real runners
//! (the runner library, in this process) that each verify ten stub versions of a generated
//! runtime `simsh` (small scripts that print a version and otherwise run `/bin/sh`), heartbeat,
//! pull jobs and serve. Measured at each N:
//!
//! - **idle load**: CPU of this process per second while nothing is invoked (heartbeats, pull
//!   loops, watches), and how many writes the registry makes to `attune-runtimes` meanwhile —
//!   availability must not be republished per heartbeat;
//! - **availability update**: the registry's bookkeeping per heartbeat received
//!   ([`attune_registry::liveness::Liveness`] `observe` + `availability`), timed in process over
//!   N synthetic runners of ten versions;
//! - **router**: p50 / p99 of invocations on the invoke subject and by name (through the
//!   registry's router), interleaved;
//! - **watch fan-out**: from the reply of `pack.register` of a new pack to the moment every
//!   runner has the new action and its files;
//! - **runner list**: the `runner.list` operation, and `attune runner list` as a process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_nats::api::{Empty, PackRegisterRequest, RunnerListReply};
use attune_nats::client::Client;
use attune_nats::subject::RegistryOp;
use attune_nats::watch::KvChange;
use attune_nats::wire::VerifiedVersion;
use attune_nats::{InvocationRequest, Namespace, RunnerHeartbeat, Status};
use attune_registry::liveness::Liveness;
use attune_registry::ServeConfig;
use attune_runner::{RunnerConfig, RunnerHandle};
use attune_testkit::{poll_until, NatsServer};
use serde::Serialize;

use crate::measure::{percentile, process_cpu};

/// Versions of `simsh` every runner serves.
pub const VERSIONS: usize = 10;
/// Sequential calls per route for the router figures.
const ROUTER_CALLS: usize = 300;
/// How long the idle load is watched.
const IDLE_WINDOW: Duration = Duration::from_secs(6);

/// The figures of one runner count.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Runners.
    pub runners: usize,
    /// Time to start all of them (in parallel) until the registry lists them all.
    pub start_s: f64,
    /// CPU of this process (registry + runners + client) per second of idle time, in ms.
    pub idle_cpu_ms_per_s: f64,
    /// Heartbeats written per second meanwhile.
    pub heartbeats_per_s: f64,
    /// Writes to `attune-runtimes` (availability) during the idle window.
    pub runtime_writes: u64,
    /// Registry bookkeeping per heartbeat that renews a runner, µs.
    pub availability_us_per_heartbeat: f64,
    /// One recomputation of the available set over every runner, µs (on a change, or every
    /// 5 s for `verified_at`).
    pub availability_recompute_us: f64,
    /// Invoke subject p50 / p99, ms.
    pub invoke_p50_ms: f64,
    /// Invoke subject p99, ms.
    pub invoke_p99_ms: f64,
    /// By-name p50, ms.
    pub by_name_p50_ms: f64,
    /// By-name p99, ms.
    pub by_name_p99_ms: f64,
    /// Pack registration reply to the first / median / last runner ready, ms.
    pub fanout_first_ms: f64,
    /// Median runner ready, ms.
    pub fanout_p50_ms: f64,
    /// Last runner ready, ms.
    pub fanout_last_ms: f64,
    /// `runner.list` round trip, median of 20, ms.
    pub runner_list_api_ms: f64,
    /// Bytes of the `runner.list` reply.
    pub runner_list_bytes: usize,
    /// `attune runner list` as a process, median of 5, ms (absent without the binary).
    pub runner_list_cli_ms: Option<f64>,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Stub interpreters `simsh-1.0` … `simsh-1.9` in `bin`, plus `sh` for the stubs themselves.
fn write_stubs(bin: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for v in 0..VERSIONS {
        let path = bin.join(format!("simsh-1.{v}"));
        write(
            &path,
            &format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"simsh 1.{v}\"; exit 0; fi\nexec /bin/sh \"$@\"\n"
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The pack `sim`: runtime `simsh` with ten versions, and `sim.noop`.
fn write_sim_pack(dir: &Path) -> Result<(), String> {
    write(&dir.join("pack.yaml"), "ref: sim\nversion: 1.0.0\n")?;
    let mut runtime = String::from("ref: sim.simsh\nname: simsh\nversions:\n");
    for v in 0..VERSIONS {
        runtime.push_str(&format!(
            "  - version: \"1.{v}\"\n    is_default: {}\n    distributions:\n      verification:\n        commands:\n          - {{ binary: simsh-1.{v}, args: [\"--version\"], exit_code: 0, pattern: 'simsh (1\\.{v})', priority: 1 }}\n    execution_config:\n      interpreter: {{ binary: simsh-1.{v}, args: [], file_extension: .sh }}\n",
            v == VERSIONS - 1
        ));
    }
    write(&dir.join("runtimes/simsh.yaml"), &runtime)?;
    write(
        &dir.join("actions/noop.yaml"),
        "name: noop\nrunner_type: simsh\nentry_point: noop.sh\noutput_format: text\n",
    )?;
    write(&dir.join("actions/noop.sh"), "echo ok\n")
}

/// The pack `sim2`, registered during the run to time the fan-out.
fn write_sim2_pack(dir: &Path) -> Result<(), String> {
    write(&dir.join("pack.yaml"), "ref: sim2\nversion: 1.0.0\n")?;
    write(
        &dir.join("actions/fresh.yaml"),
        "name: fresh\nrunner_type: simsh\nentry_point: fresh.sh\noutput_format: text\n",
    )?;
    write(&dir.join("actions/fresh.sh"), "echo fresh\n")
}

/// Runs the simulation for every count in `counts`; `attune` is the CLI binary, if built.
pub async fn run(counts: &[usize], attune: Option<PathBuf>) -> Result<Vec<ScaleRow>, String> {
    let mut rows = Vec::new();
    for &n in counts {
        eprintln!("scale: {n} runner(s) × {VERSIONS} versions...");
        let row = one(n, attune.as_deref()).await?;
        eprintln!("  {row:?}");
        rows.push(row);
    }
    Ok(rows)
}

/// One runner count, on a fresh stack.
async fn one(n: usize, attune: Option<&Path>) -> Result<ScaleRow, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let server = NatsServer::start();
    let ns = Namespace::default();
    let bin = root.join("bin");
    write_stubs(&bin)?;
    let packs = root.join("packs");
    write_sim_pack(&packs.join("sim"))?;
    write_sim2_pack(&packs.join("sim2"))?;
    let core = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packs/core"))
        .map_err(|e| format!("the core pack: {e}"))?;
    let mut serve = ServeConfig::new(
        root.join("registry"),
        vec![core, packs.join("sim")],
        ns.clone(),
    );
    serve.allow_register_from = vec![packs.clone()];
    let registry = attune_registry::start(serve, server.connect().await)
        .await
        .map_err(|e| format!("starting the registry: {e}"))?;
    let client = Client::new(server.connect().await, ns.clone());

    // N runners, started together, each with its own connection, cache and environments.
    let began = Instant::now();
    let starts = (0..n).map(|i| {
        let mut c = RunnerConfig::new(
            root.join(format!("r{i}/envs")),
            root.join(format!("r{i}/cache")),
        );
        c.namespace = ns.clone();
        c.name = format!("sim-{i:03}");
        c.runtimes = vec!["simsh".into()];
        c.concurrency = 2;
        c.path = format!("{}:/usr/bin:/bin", bin.display());
        let url = server.url();
        async move {
            let nats = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            attune_runner::start(c, nats)
                .await
                .map_err(|e| e.to_string())
        }
    });
    let runners: Vec<RunnerHandle> = futures::future::try_join_all(starts).await?;
    let listed = poll_until(Duration::from_secs(120), || async {
        let live: RunnerListReply = client.api(RegistryOp::RunnerList, &Empty {}).await.ok()?;
        (live.runners.len() == n).then_some(())
    })
    .await;
    listed.ok_or_else(|| format!("the registry did not list {n} runners"))?;
    let start_s = began.elapsed().as_secs_f64();
    // Every runner ready for the action before anything is timed.
    poll_until(Duration::from_secs(120), || async {
        runners
            .iter()
            .all(|r| r.ready_for("sim.noop"))
            .then_some(())
    })
    .await
    .ok_or("the runners did not all get sim.noop")?;

    // Idle: CPU, heartbeats and availability writes.
    let js = async_nats::jetstream::new(server.connect().await);
    let writes = count_puts(&js, &ns.kv_runtimes()).await?;
    let beats = count_puts(&js, &ns.kv_runners()).await?;
    let cpu0 = process_cpu();
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = process_cpu().saturating_sub(cpu0);
    let runtime_writes = writes.stop();
    let heartbeats = beats.stop();

    // Router: invoke subject and by name, interleaved.
    let resolved = client
        .resolve("sim.noop", None, attune_nats::resolve::Mode::Sync)
        .await
        .map_err(|e| e.to_string())?;
    let subject = resolved
        .key()
        .map_err(|e| e.to_string())?
        .invoke_subject(&ns);
    let request = InvocationRequest {
        id: None,
        action: "sim.noop".into(),
        parameters: Default::default(),
        timeout_seconds: None,
    };
    let body = serde_json::to_vec(&request).expect("a request serialises");
    let nats = server.connect().await;
    let by_name_subject = ns.action("sim.noop");
    let (mut invoke, mut by_name) = (Vec::new(), Vec::new());
    for i in 0..ROUTER_CALLS + 20 {
        for (subject, samples) in [(&subject, &mut invoke), (&by_name_subject, &mut by_name)] {
            let t = Instant::now();
            let reply = nats
                .request(subject.clone(), body.clone().into())
                .await
                .map_err(|e| format!("{subject}: {e}"))?;
            let reply: attune_nats::InvocationReply =
                serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
            if reply.status != Status::Succeeded {
                return Err(format!("{subject}: {reply:?}"));
            }
            if i >= 20 {
                samples.push(t.elapsed());
            }
        }
    }

    // Fan-out of a pack registration to every runner.
    let t = Instant::now();
    let _: attune_nats::api::PackRegisterReply = client
        .api(
            RegistryOp::PackRegister,
            &PackRegisterRequest {
                path: Some(packs.join("sim2").display().to_string()),
                digest: None,
            },
        )
        .await
        .map_err(|e| format!("registering sim2: {e}"))?;
    let registered = Instant::now();
    let mut ready: Vec<Option<Duration>> = vec![None; n];
    while ready.iter().any(Option::is_none) {
        if t.elapsed() > Duration::from_secs(120) {
            return Err("sim2 did not reach every runner in 120 s".into());
        }
        for (i, r) in runners.iter().enumerate() {
            if ready[i].is_none() && r.ready_for("sim2.fresh") {
                ready[i] = Some(registered.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready: Vec<Duration> = ready.into_iter().flatten().collect();

    // runner.list, by API and by CLI.
    let mut api = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let reply = nats
            .request(
                ns.registry(RegistryOp::RunnerList),
                serde_json::to_vec(&Empty {}).expect("serialises").into(),
            )
            .await
            .map_err(|e| e.to_string())?;
        api.push(t.elapsed());
        bytes = reply.payload.len();
    }
    let cli = match attune {
        Some(bin) if bin.is_file() => {
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let out = std::process::Command::new(bin)
                    .args(["--server", &server.url(), "runner", "list"])
                    .output()
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "attune runner list: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                times.push(t.elapsed());
            }
            Some(percentile(&times, 50.0))
        }
        _ => None,
    };

    let (per_beat, recompute) = availability_cost(n);
    let row = ScaleRow {
        runners: n,
        start_s,
        idle_cpu_ms_per_s: idle_cpu.as_secs_f64() * 1e3 / IDLE_WINDOW.as_secs_f64(),
        heartbeats_per_s: heartbeats as f64 / IDLE_WINDOW.as_secs_f64(),
        runtime_writes,
        availability_us_per_heartbeat: per_beat,
        availability_recompute_us: recompute,
        invoke_p50_ms: percentile(&invoke, 50.0),
        invoke_p99_ms: percentile(&invoke, 99.0),
        by_name_p50_ms: percentile(&by_name, 50.0),
        by_name_p99_ms: percentile(&by_name, 99.0),
        fanout_first_ms: percentile(&ready, 0.0),
        fanout_p50_ms: percentile(&ready, 50.0),
        fanout_last_ms: percentile(&ready, 100.0),
        runner_list_api_ms: percentile(&api, 50.0),
        runner_list_bytes: bytes,
        runner_list_cli_ms: cli,
    };
    futures::future::join_all(runners.into_iter().map(RunnerHandle::drain)).await;
    registry.stop().await;
    Ok(row)
}

/// Counts the writes to a KV bucket from now until [`Counting::stop`].
struct Counting {
    count: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Counting {
    fn stop(self) -> u64 {
        self.task.abort();
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn count_puts(js: &async_nats::jetstream::Context, bucket: &str) -> Result<Counting, String> {
    use futures::StreamExt;
    let kv = js
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("{bucket}: {e}"))?;
    let mut watch = kv.watch_all().await.map_err(|e| format!("{bucket}: {e}"))?;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            if entry.operation == async_nats::jetstream::kv::Operation::Put {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    Ok(Counting { count, task })
}

/// The registry's bookkeeping with `n` live runners of [`VERSIONS`] versions, in µs: per
/// heartbeat that renews a runner (`observe`: parse, compare, store), and per recomputation of
/// the available set (`availability`, over every runner and version), which the registry does
/// on a change or every 5 s, not per heartbeat.
fn availability_cost(n: usize) -> (f64, f64) {
    let liveness = Liveness::default();
    let now = time::OffsetDateTime::now_utc();
    let beat = |i: usize| {
        let heartbeat = RunnerHeartbeat::new(
            &format!("sim-{i:03}"),
            "sim",
            (0..VERSIONS)
                .map(|v| VerifiedVersion {
                    runtime: "simsh".into(),
                    version: format!("1.{v}"),
                    detected_version: Some(format!("1.{v}")),
                    binary: format!("/sim/bin/simsh-1.{v}"),
                })
                .collect(),
            2,
        );
        KvChange::Put {
            key: heartbeat.id.clone(),
            value: serde_json::to_vec(&heartbeat).expect("serialises").into(),
            created: now,
        }
    };
    let beats: Vec<KvChange> = (0..n).map(beat).collect();
    for b in &beats {
        liveness.observe(b);
    }
    let rounds = 20_000;
    let t = Instant::now();
    for r in 0..rounds {
        // A renewal: the same versions, so no recomputation follows.
        assert!(!liveness.observe(&beats[r % n]));
    }
    let per_beat = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    let rounds = (20_000 / n).max(10);
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(liveness.availability());
    }
    let recompute = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    (per_beat, recompute)
}

/// The rows as a table for people.
pub fn table(rows: &[ScaleRow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:>7} {:>8} {:>12} {:>9} {:>9} {:>11} {:>11} {:>15} {:>15} {:>21} {:>14} {:>9}",
        "runners",
        "start s",
        "idle cpu ms/s",
        "beats/s",
        "rt writes",
        "avail us/hb",
        "recompute us",
        "invoke p50/p99",
        "by-name p50/p99",
        "fan-out first/p50/max",
        "list api/cli",
        "list KiB"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>7} {:>8.1} {:>12.1} {:>9.1} {:>9} {:>11.1} {:>11.1} {:>15} {:>15} {:>21} {:>14} {:>9.1}",
            r.runners,
            r.start_s,
            r.idle_cpu_ms_per_s,
            r.heartbeats_per_s,
            r.runtime_writes,
            r.availability_us_per_heartbeat,
            r.availability_recompute_us,
            format!("{:.2}/{:.2}", r.invoke_p50_ms, r.invoke_p99_ms),
            format!("{:.2}/{:.2}", r.by_name_p50_ms, r.by_name_p99_ms),
            format!(
                "{:.0}/{:.0}/{:.0}",
                r.fanout_first_ms, r.fanout_p50_ms, r.fanout_last_ms
            ),
            format!(
                "{:.1}/{}",
                r.runner_list_api_ms,
                r.runner_list_cli_ms
                    .map_or("-".to_string(), |c| format!("{c:.0}"))
            ),
            r.runner_list_bytes as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nidle cpu = CPU of this process (registry + runners + client) per second with nothing invoked;\n\
         rt writes = writes to attune-runtimes (availability) in {} s of idle; avail us/hb = the registry's\n\
         bookkeeping per renewing heartbeat; recompute us = one recomputation of the available set\n\
         (on a change, or every 5 s); fan-out = pack.register reply to runners having the new action, ms;\n\
         times in ms unless marked",
        IDLE_WINDOW.as_secs()
    );
    out
}
