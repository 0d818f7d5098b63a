//! The four ways of running one action, and the two measurements made of each.
//!
//! Latency is measured with the paths interleaved call by call (direct, invoke, by-name, direct,
//! …), so a noisy neighbour on this shared machine hits every path alike and the differences
//! between them stay meaningful. Throughput is measured per path: `calls` calls by `concurrency`
//! workers, each starting its next call when the last one returns.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_nats::client::Client;
use attune_nats::{InvocationRequest, Status};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::stack::Target;

/// How an action is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// The baseline: spawn the interpreter on the script from this process, like the runner.
    Direct,
    /// A request on `attune.invoke.<runtime>.<version>` from a Rust client: the runner's cost.
    Invoke,
    /// A request on `attune.action.<pack>.<action>`: adds the registry's router.
    ByName,
    /// An `attune invoke` process: adds process start, connection and resolution.
    Cli,
    /// The same no-op as a Celery task, `delay().get()` through Redis (measured by
    /// `bench/celery/celery_bench.py`).
    Celery,
}

impl Route {
    /// The label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct spawn",
            Route::Invoke => "invoke subject",
            Route::ByName => "by-name route",
            Route::Cli => "attune invoke CLI",
            Route::Celery => "celery task (redis)",
        }
    }
}

/// What every call needs; cheap to clone.
#[derive(Clone)]
pub struct Driver {
    /// Client of the system under test.
    pub client: Client,
    /// The `attune` binary, for [`Route::Cli`].
    pub attune: PathBuf,
    /// The NATS URL the CLI connects to.
    pub url: String,
    /// Environment of a direct spawn (the runner's minimal one: PATH, HOME, LANG).
    pub env: Arc<Vec<(String, String)>>,
}

/// The parameters every call sends: an empty object, on stdin for a direct spawn too.
const PARAMS: &[u8] = b"{}";

impl Driver {
    /// One call, end to end; an error when it did not succeed.
    pub async fn call(&self, route: Route, t: &Target) -> Result<(), String> {
        match route {
            Route::Direct => self.spawn(t).await,
            Route::Invoke => {
                let subject = self.client.namespace().invoke(&t.runtime, &t.version);
                self.request(&subject, t).await
            }
            Route::ByName => {
                let subject = self.client.namespace().action(&t.action);
                self.request(&subject, t).await
            }
            Route::Celery => Err("the Celery route is measured by its own script".into()),
            Route::Cli => {
                let out = Command::new(&self.attune)
                    .arg("--server")
                    .arg(&self.url)
                    .arg("invoke")
                    .arg(&t.action)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .await
                    .map_err(|e| format!("running {}: {e}", self.attune.display()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "attune invoke {}: {}: {}",
                        t.action,
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            }
        }
    }

    async fn request(&self, subject: &str, t: &Target) -> Result<(), String> {
        let request = InvocationRequest {
            id: None,
            action: t.action.clone(),
            parameters: Default::default(),
            timeout_seconds: None,
        };
        let reply = self
            .client
            .invoke_subject(subject, &request, None)
            .await
            .map_err(|e| format!("{subject}: {e}"))?;
        if reply.status == Status::Succeeded {
            Ok(())
        } else {
            Err(format!(
                "{subject}: {}: {}",
                reply.status.as_str(),
                reply.error.unwrap_or_default()
            ))
        }
    }

    /// What the runner does for one execution, minus Attune: spawn, parameters on stdin,
    /// stdout and stderr captured, wait.
    async fn spawn(&self, t: &Target) -> Result<(), String> {
        let mut child = Command::new(&t.program)
            .args(&t.args)
            .current_dir(&t.cwd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", t.program.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(PARAMS).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for {}: {e}", t.program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} exited with {}",
                t.program.display(),
                out.status
            ))
        }
    }

    /// Sequential latency of each route, interleaved call by call after `warmup` rounds.
    pub async fn latency(
        &self,
        routes: &[Route],
        t: &Target,
        warmup: usize,
        calls: usize,
    ) -> Result<Vec<Vec<Duration>>, String> {
        for _ in 0..warmup {
            for &r in routes {
                self.call(r, t).await?;
            }
        }
        let mut samples = vec![Vec::with_capacity(calls); routes.len()];
        for _ in 0..calls {
            for (i, &r) in routes.iter().enumerate() {
                let began = Instant::now();
                self.call(r, t).await?;
                samples[i].push(began.elapsed());
            }
        }
        Ok(samples)
    }

    /// Calls per second of `calls` calls made by `concurrency` workers.
    pub async fn throughput(
        &self,
        route: Route,
        t: &Target,
        calls: usize,
        concurrency: usize,
    ) -> Result<f64, String> {
        let next = Arc::new(AtomicUsize::new(0));
        let began = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (this, t, next) = (self.clone(), t.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < calls {
                        this.call(route, &t).await?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for w in workers {
            w.await.map_err(|e| e.to_string())??;
        }
        Ok(calls as f64 / began.elapsed().as_secs_f64())
    }
}

impl Driver {
    /// Throughput of each route, measured in `blocks` turns per route (direct, invoke, by-name,
    /// direct, …) of `calls / blocks` calls each; calls per second over all of a route's turns.
    pub async fn throughput_interleaved(
        &self,
        routes: &[Route],
        t: &Target,
        calls: usize,
        concurrency: usize,
        blocks: usize,
    ) -> Result<Vec<Throughput>, String> {
        let blocks = blocks.clamp(1, calls.max(1));
        let mut busy = vec![Duration::ZERO; routes.len()];
        let mut cpu = vec![Duration::ZERO; routes.len()];
        let mut host = vec![Duration::ZERO; routes.len()];
        let mut done = vec![0usize; routes.len()];
        for b in 0..blocks {
            let n = calls / blocks + usize::from(b < calls % blocks);
            for (i, &r) in routes.iter().enumerate() {
                let (cpu_before, host_before) = (process_cpu(), host_cpu());
                let rate = self.throughput(r, t, n, concurrency).await?;
                cpu[i] += process_cpu().saturating_sub(cpu_before);
                host[i] += host_cpu().saturating_sub(host_before);
                busy[i] += Duration::from_secs_f64(n as f64 / rate);
                done[i] += n;
            }
        }
        Ok((0..routes.len())
            .map(|i| Throughput {
                per_s: done[i] as f64 / busy[i].as_secs_f64(),
                cpu_us_per_call: cpu[i].as_secs_f64() * 1e6 / done[i] as f64,
                host_cpu_ms_per_call: host[i].as_secs_f64() * 1e3 / done[i] as f64,
            })
            .collect())
    }
}

impl Driver {
    /// What recording executions (history and live output) costs on `t`'s invoke subject:
    /// `blocks` turns of `calls` sequential calls with recording on and then off (`set` switches
    /// it; the order alternates from block to block), each call timed and each turn's CPU taken.
    /// Returns (on, off).
    pub async fn recording_cost(
        &self,
        t: &Target,
        set: &dyn Fn(bool),
        blocks: usize,
        calls: usize,
    ) -> Result<(Sequential, Sequential), String> {
        let mut modes = [Sequential::default(), Sequential::default()];
        for b in 0..blocks {
            let order = if b % 2 == 0 { [0, 1] } else { [1, 0] };
            for m in order {
                set(m == 0);
                // One call untimed: the switch applies from the next invocation.
                self.call(Route::Invoke, t).await?;
                let (cpu_before, host_before) = (process_cpu(), host_cpu());
                for _ in 0..calls {
                    let began = Instant::now();
                    self.call(Route::Invoke, t).await?;
                    modes[m].samples.push(began.elapsed());
                }
                modes[m].cpu += process_cpu().saturating_sub(cpu_before);
                modes[m].host += host_cpu().saturating_sub(host_before);
            }
        }
        set(true);
        let [on, off] = modes;
        Ok((on, off))
    }
}

/// Sequential calls of one mode: each call's time, and the CPU all of them used.
#[derive(Debug, Clone, Default)]
pub struct Sequential {
    /// Each call's wall time.
    pub samples: Vec<Duration>,
    /// CPU of this process (client, registry, runner) over the calls.
    pub cpu: Duration,
    /// CPU of the whole host over the calls.
    pub host: Duration,
}

impl Sequential {
    /// This process's CPU per call, in microseconds.
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.samples.len().max(1) as f64
    }

    /// The host's CPU per call, in milliseconds.
    pub fn host_ms_per_call(&self) -> f64 {
        self.host.as_secs_f64() * 1e3 / self.samples.len().max(1) as f64
    }
}

/// One route's throughput figures.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Calls per second.
    pub per_s: f64,
    /// CPU time of this process (client, registry and runner; not the children) per call.
    pub cpu_us_per_call: f64,
    /// CPU time of the whole host (every process: client, nats-server, runner, interpreters,
    /// zygotes) per call.
    pub host_cpu_ms_per_call: f64,
}

/// Busy CPU time of the whole host (user, nice, system, irq, softirq, steal; all CPUs), from
/// `/proc/stat`: what every process together used, children and servers included.
pub fn host_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v.max(1) as u64);
    Duration::from_micros(busy * 1_000_000 / hz)
}

/// User + system CPU time this process has used (its threads, not its children).
pub fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let us = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    Duration::from_micros(us.max(0) as u64)
}

/// The `p`-th percentile (nearest rank) of `samples`, in milliseconds.
pub fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut sorted: Vec<Duration> = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// The median of some figures.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
