//! `attune registry serve`: the registry service. All the work is in crate `attune-registry`;
//! this file parses arguments, connects (retrying with backoff) and waits for SIGTERM / Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use attune_nats::jetstream::{
    StoreOptions, EXECUTIONS_MAX_AGE, EXECUTIONS_MAX_BYTES, JOBS_MAX_AGE, JOBS_MAX_BYTES,
    RESULTS_MAX_BYTES, RESULTS_TTL,
};
use attune_registry::ServeConfig;
use clap::{Args, Subcommand};

use crate::error::CliError;
use crate::global::Global;

/// Registry commands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Load packs into the registry database, publish them on NATS, and serve the registry API
    /// and the by-name router until SIGTERM / Ctrl-C.
    ///
    /// Examples:
    ///   attune registry serve --data-dir /var/lib/attune --packs packs
    ///   attune registry serve --data-dir ./data --packs packs/core packs/examples --replicas 3
    Serve(ServeArgs),
}

/// Options of `attune registry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Holds registry.redb, the source of truth. Default: $XDG_DATA_HOME/attune/registry.
    #[arg(long, env = "ATTUNE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Pack directories, or directories of packs, registered at start (core first).
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub packs: Vec<PathBuf>,
    /// Allow `pack register --on-registry-host PATH` for packs inside DIR (repeatable). Without
    /// it, registration by path is refused and packs are registered by upload only.
    #[arg(long, value_name = "DIR")]
    pub allow_register_from: Vec<PathBuf>,
    /// Replicas of every KV bucket, object store and stream (3 in a cluster). The registry is
    /// the only component that creates or updates them.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replicas: usize,
    /// Retention of asynchronous results (KV and object store), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = RESULTS_TTL.as_secs())]
    pub results_ttl: u64,
    /// Most bytes the results bucket holds (0: no limit); when full, new results wait.
    #[arg(long, value_name = "BYTES", default_value_t = RESULTS_MAX_BYTES)]
    pub results_max_bytes: u64,
    /// Oldest a queued job may get before it is dropped, in seconds (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = JOBS_MAX_AGE.as_secs())]
    pub jobs_max_age: u64,
    /// Most bytes of queued jobs (0: no limit); when full, new jobs are refused.
    #[arg(long, value_name = "BYTES", default_value_t = JOBS_MAX_BYTES)]
    pub jobs_max_bytes: u64,
    /// How long execution records are kept, in seconds (0: no limit).
    #[arg(long, value_name = "SECONDS", default_value_t = EXECUTIONS_MAX_AGE.as_secs())]
    pub executions_max_age: u64,
    /// Most bytes of execution records (0: no limit); the oldest go first.
    #[arg(long, value_name = "BYTES", default_value_t = EXECUTIONS_MAX_BYTES)]
    pub executions_max_bytes: u64,
    /// Serve Prometheus metrics on HOST:PORT at /metrics (off by default).
    #[arg(long, env = "ATTUNE_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs a registry command.
pub async fn run(global: &Global, command: RegistryCommand) -> Result<ExitCode, CliError> {
    match command {
        RegistryCommand::Serve(args) => serve(global, args).await,
    }
}

/// `attune registry serve`: serves until SIGTERM / Ctrl-C, then exits 0.
async fn serve(global: &Global, args: ServeArgs) -> Result<ExitCode, CliError> {
    let ns = global.namespace()?;
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."))
            .join("attune/registry")
    });
    let mut config = ServeConfig::new(data_dir, args.packs, ns);
    let limit = |bytes: u64| (bytes > 0).then_some(bytes);
    config.store = StoreOptions {
        replicas: args.replicas.max(1),
        results_ttl: Duration::from_secs(args.results_ttl),
        results_max_bytes: limit(args.results_max_bytes),
        jobs_max_age: Duration::from_secs(args.jobs_max_age),
        jobs_max_bytes: limit(args.jobs_max_bytes),
        executions_max_age: Duration::from_secs(args.executions_max_age),
        executions_max_bytes: limit(args.executions_max_bytes),
    };
    config.allow_register_from = args.allow_register_from;
    config.metrics_addr = args.metrics_addr;

    let connection = attune_nats::subject::REGISTRY_CONNECTION_NAME.to_string();
    let Some(conn) = crate::service::connect_until_stopped(global, connection).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    config.jetstream_domain = conn.jetstream_domain;
    attune_registry::serve(config, conn.client, conn.signal).await?;
    Ok(ExitCode::SUCCESS)
}
