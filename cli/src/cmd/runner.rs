//! `attune runner start`: serve the runtime versions this host verifies until SIGTERM / Ctrl-C,
//! then drain. All the work is in crate `attune-runner`; this file parses arguments, connects
//! (retrying with backoff, see docs/runner.md) and waits for the signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use attune_runner::config::{parse_runtime_list, DEFAULT_DRAIN_GRACE, DEFAULT_MAX_PENDING};
use attune_runner::RunnerConfig;
use clap::{Args, Subcommand};

use crate::global::Global;
use crate::output::code;

/// Runner commands.
#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Verify this host's interpreters and serve invocations for every version that passes.
    ///
    /// Examples:
    ///   attune runner start
    ///   attune runner start --runtimes python,shell --concurrency 16
    ///   ATTUNE_WORKER_RUNTIMES=node attune runner start --name node-box-1
    Start(StartArgs),
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
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_GRACE.as_secs_f64())]
    pub drain_grace: f64,
}

/// Runs a runner command.
pub async fn run(global: &Global, command: RunnerCommand) -> ExitCode {
    match command {
        RunnerCommand::Start(args) => start(global, args).await,
        RunnerCommand::List => list(global).await,
    }
}

/// `attune runner list`: the live runners, from the registry.
async fn list(global: &Global) -> ExitCode {
    use crate::output::{self, Table};
    use attune_nats::api::{Empty, RunnerListReply};
    let client = match super::connect(global).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let reply: RunnerListReply = match client
        .api(attune_nats::RegistryOp::RunnerList, &Empty {})
        .await
    {
        Ok(r) => r,
        Err(e) => return output::fail(&e),
    };
    if global.output == crate::global::Output::Json {
        output::json(&reply);
        return ExitCode::SUCCESS;
    }
    let mut table = Table::new(&["runner", "host", "load", "versions", "since"]);
    for r in &reply.runners {
        let versions: Vec<String> = r
            .versions
            .iter()
            .map(|v| match &v.detected_version {
                Some(d) => format!("{} {} ({d})", v.runtime, v.version),
                None => format!("{} {}", v.runtime, v.version),
            })
            .collect();
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
            r.started_at.clone(),
        ]);
    }
    table.print("no live runners (start one with `attune runner start`)");
    ExitCode::SUCCESS
}

fn home_dir(xdg: &str, fallback: &str) -> PathBuf {
    std::env::var_os(xdg)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from(".attune"))
        .join("attune")
}

async fn start(global: &Global, args: StartArgs) -> ExitCode {
    let ns = match global.namespace() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(code::USAGE);
        }
    };
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
    if args.drain_grace.is_finite() && args.drain_grace >= 0.0 {
        config.drain_grace = Duration::from_secs_f64(args.drain_grace);
    }

    let (client, signal) = match crate::service::connect_until_stopped(global).await {
        Ok(pair) => pair,
        Err(exit) => return exit,
    };
    match attune_runner::run(config, client, signal).await {
        Ok(()) => ExitCode::from(code::OK),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(code::UNAVAILABLE)
        }
    }
}
