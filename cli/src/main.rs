//! `attune`: the one binary users run.
//!
//! The binary is thin on purpose, in the manner of ripgrep: it parses arguments, calls the library
//! crates (`attune-registry`, `attune-runner`) and prints. No business logic lives here.
//!
//! # Layout
//! - [`global`]: options every command shares (`--server`, `--creds`, `--prefix`, `-o`) and the
//!   NATS connection they describe.
//! - `cmd/*`: one file per command group, each with its clap arguments and a `run` function.
//! - [`service`]: connect-with-retry and stop signals for the long-running commands.
//! - [`output`]: tables, JSON, and the exit codes every command shares.

mod cmd;
mod global;
mod output;
mod service;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Attune: a NATS-driven function runner. Actions live in packs; runners on many hosts verify
/// which interpreter versions they really have and serve exactly those.
#[derive(Parser)]
#[command(name = "attune", version)]
struct Cli {
    #[command(flatten)]
    global: global::Global,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    runtime.block_on(cmd::run(cli.global, cli.command))
}
