//! `attune runner start`: serve the runtime versions this host verifies until SIGTERM / Ctrl-C,
//! then drain, and `attune runner list`. All the work is in crate `attune-runner`; this file parses
//! arguments, connects (retrying with backoff while NATS does not answer) and waits for the
//! signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use attune_runner::config::{
    parse_runtime_list, DEFAULT_DRAIN_GRACE, DEFAULT_ENV_BUILD_TIMEOUT, DEFAULT_MAX_PENDING,
    DEFAULT_OUTPUT_CAP, DEFAULT_REVERIFY, DEFAULT_VERIFY_TIMEOUT,
};
use attune_runner::warm;
use attune_runner::RunnerConfig;
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Runner commands.
#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Verify this host's interpreters and serve invocations for every version that passes.
    ///
    /// Examples:
    ///   attune runner start
    ///   attune runner start --runtimes python,shell --concurrency 16
    ///   ATTUNE_WORKER_RUNTIMES=node attune runner start --name node-box-1
    Start(Box<StartArgs>),
    /// List live runners: host, the versions they verified, capacity and load.
    ///
    /// Example: attune runner list
    List,
}

/// Options of `attune runner start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Runtimes this runner may serve, by name or alias, comma-separated (default: all).
    #[arg(long, env = "ATTUNE_WORKER_RUNTIMES", value_name = "LIST")]
    pub runtimes: Option<String>,
    /// Invocations run at once (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Requests that may wait for a free slot; beyond that the runner answers "overloaded".
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PENDING)]
    pub max_pending: usize,
    /// Per-pack environments; may be shared by the runners of one host.
    /// Default: $XDG_DATA_HOME/attune/envs (~/.local/share/attune/envs).
    #[arg(long, env = "ATTUNE_ENVS_DIR", value_name = "DIR")]
    pub envs_dir: Option<PathBuf>,
    /// This runner's private cache of pack files; one per runner.
    /// Default: $XDG_CACHE_HOME/attune/runner (~/.cache/attune/runner).
    #[arg(long, env = "ATTUNE_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Runner id in heartbeats and replies (default: <hostname>-<pid>).
    #[arg(long, env = "ATTUNE_RUNNER_NAME", value_name = "ID")]
    pub name: Option<String>,
    /// Seconds in-flight work may take to finish after SIGTERM before it is killed.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value_t = DEFAULT_DRAIN_GRACE.as_secs_f64())]
    pub drain_grace: f64,
    /// Seconds one verification command may run before the version counts as unavailable.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value_t = DEFAULT_VERIFY_TIMEOUT.as_secs_f64())]
    pub verify_timeout: f64,
    /// Seconds one environment build step (create, install) may run before that environment fails.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value_t = DEFAULT_ENV_BUILD_TIMEOUT.as_secs_f64())]
    pub env_build_timeout: f64,
    /// Seconds between re-verifications of every version this runner may serve (a version that
    /// failed may have been installed since, one that passed uninstalled); 0 turns it off.
    /// `attune runtime verify` asks for one at any time.
    #[arg(long, env = "ATTUNE_REVERIFY", value_name = "SECONDS", value_parser = seconds, default_value_t = DEFAULT_REVERIFY.as_secs_f64())]
    pub reverify: f64,
    /// Bytes of stdout, and of stderr, kept per invocation; the rest is dropped with a marker.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_OUTPUT_CAP)]
    pub output_cap: usize,
    /// Serve Prometheus metrics on HOST:PORT at /metrics (off by default).
    #[arg(long, env = "ATTUNE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Neither record executions in ATTUNE_EXECUTIONS nor stream their output live
    /// (`attune execution list|show|tail` and `invoke --follow` then see nothing of this runner).
    #[arg(long, env = "ATTUNE_NO_RECORD")]
    pub no_record: bool,
    /// Start every invocation in a fresh interpreter: no warm pools (the runtime's
    /// `execution_config.warm` is ignored).
    #[arg(long, env = "ATTUNE_NO_WARM")]
    pub no_warm: bool,
    /// Warm pools (one per pack and runtime version) this runner keeps at most; the least
    /// recently used one makes room.
    #[arg(long, value_name = "N", default_value_t = warm::DEFAULT_MAX_POOLS)]
    pub warm_pools: usize,
    /// Interpreters each warm pool keeps started and waiting.
    #[arg(long, value_name = "N", default_value_t = warm::DEFAULT_PREFORK)]
    pub warm_prefork: usize,
    /// Memory all warm pools may use together, in MiB (proportional set size); no new pool
    /// starts past it.
    #[arg(long, value_name = "MIB", default_value_t = warm::DEFAULT_MEMORY_MB)]
    pub warm_memory: u64,
    /// Invocations one python zygote serves before a fresh one replaces it (and with it, the
    /// hash seed its children share).
    #[arg(long, value_name = "N", default_value_t = warm::DEFAULT_RECYCLE)]
    pub warm_recycle: u64,
}

/// A number of seconds from the command line: finite and not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.0..1e9).contains(&s) => Ok(s),
        _ => Err(format!("\"{text}\" is not a number of seconds (0 or more)")),
    }
}

/// Runs a runner command.
pub async fn run(global: &Global, command: RunnerCommand) -> Result<ExitCode, CliError> {
    match command {
        RunnerCommand::Start(args) => start(global, *args).await,
        RunnerCommand::List => list(global).await,
    }
}

/// `attune runner list`: the live runners, from the registry.
async fn list(global: &Global) -> Result<ExitCode, CliError> {
    use attune_nats::api::RunnerListReply;
    let (client, mut violations) = super::connect(global).await?;
    let runners = super::watched(&mut violations, async { Ok(client.runners().await?) }).await?;
    let reply = RunnerListReply {
        runners,
        next: None,
    };
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["runner", "host", "load", "versions", "since"]);
    for r in &reply.runners {
        let mut versions: Vec<String> = r
            .versions
            .iter()
            .map(|v| match &v.detected_version {
                Some(d) => format!("{} {} ({d})", v.runtime, v.version),
                None => format!("{} {}", v.runtime, v.version),
            })
            .collect();
        if !r.unknown_runtimes.is_empty() {
            versions.push(format!(
                "unknown runtimes: {}",
                r.unknown_runtimes.join(", ")
            ));
        }
        // Only when history is incomplete: an operator must see that records went missing.
        if r.records_dropped > 0 {
            versions.push(format!("{} execution records dropped", r.records_dropped));
        }
        table.row(vec![
            r.id.clone(),
            r.host.clone(),
            format!(
                "{}/{}{}",
                r.in_flight,
                r.capacity,
                if r.draining { " draining" } else { "" }
            ),
            versions.join(", "),
            attune_nats::time::format(r.started_at),
        ]);
    }
    table.print("no live runners (start one with `attune runner start`)");
    // Warm pools, when any runner keeps some: which interpreters wait, in what state, at what
    // memory cost.
    let mut pools = Table::new(&[
        "runner", "pack", "version", "launcher", "state", "idle", "served", "memory",
    ]);
    let mut any = false;
    for r in &reply.runners {
        for p in &r.warm_pools {
            any = true;
            pools.row(vec![
                r.id.clone(),
                p.pack.clone(),
                format!("{} {}", p.runtime, p.version),
                p.launcher.clone(),
                p.state.clone(),
                p.idle.to_string(),
                p.served.to_string(),
                format!("{:.1} MiB", p.memory_bytes as f64 / (1024.0 * 1024.0)),
            ]);
        }
    }
    if any {
        println!("\nwarm pools:");
        pools.print("");
    }
    Ok(ExitCode::SUCCESS)
}

/// `$XDG_…/attune`, else `$HOME/<fallback>/attune`, else `.attune/attune`.
fn home_dir(xdg: &str, fallback: &str) -> PathBuf {
    std::env::var_os(xdg)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from(".attune"))
        .join("attune")
}

/// `attune runner start`: serves until SIGTERM / Ctrl-C, drains, then exits 0.
async fn start(global: &Global, args: StartArgs) -> Result<ExitCode, CliError> {
    let ns = global.namespace()?;
    let envs_dir = args
        .envs_dir
        .unwrap_or_else(|| home_dir("XDG_DATA_HOME", ".local/share").join("envs"));
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(|| home_dir("XDG_CACHE_HOME", ".cache").join("runner"));
    let mut config = RunnerConfig::new(envs_dir, cache_dir);
    config.namespace = ns;
    if let Some(list) = &args.runtimes {
        config.runtimes = parse_runtime_list(list);
    }
    if let Some(n) = args.concurrency {
        config.concurrency = n;
    }
    config.max_pending = args.max_pending;
    if let Some(name) = args.name {
        config.name = name;
    }
    config.drain_grace = Duration::from_secs_f64(args.drain_grace);
    config.verify_timeout = Duration::from_secs_f64(args.verify_timeout);
    config.env_build_timeout = Duration::from_secs_f64(args.env_build_timeout);
    config.output_cap = args.output_cap;
    config.metrics_addr = args.metrics_addr;
    config.record = !args.no_record;
    config.reverify = (args.reverify > 0.0).then(|| Duration::from_secs_f64(args.reverify));
    config.warm = warm::Settings {
        enabled: !args.no_warm,
        max_pools: args.warm_pools,
        prefork: args.warm_prefork,
        memory_limit: args.warm_memory.saturating_mul(1024 * 1024),
        recycle_after: args.warm_recycle.max(1),
    };

    let connection = attune_nats::subject::runner_connection_name(&config.name);
    let Some(conn) = crate::service::connect_until_stopped(global, connection).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    config.jetstream_domain = conn.jetstream_domain;
    attune_runner::run(config, conn.client, conn.signal).await?;
    Ok(ExitCode::SUCCESS)
}
