//! `attune`: the one binary users run.
//!
//! The binary is thin on purpose, in the manner of ripgrep: it parses arguments, calls the library
//! crates (`attune-registry`, `attune-runner`) and prints. No business logic lives here.
//!
//! # Layout
//! - [`global`]: options every command shares (the `nats` CLI's connection options such as
//!   `--server`, `--creds`, `--context`; `--prefix`, `-o`) and the NATS connection they describe.
//! - `cmd/*`: one file per command group, each with its clap arguments and a `run` function.
//! - [`service`]: connect-with-retry and stop signals for the long-running commands.
//! - [`output`]: tables, JSON, and the exit codes every command shares.
//! - [`error`]: [`error::CliError`], the errors that stop a command, and their exit codes.
//!
//! # Errors
//! Every command returns `Result<ExitCode, CliError>`. `main` is the one place the process
//! exits: `Ok(code)` is the command's outcome, `Err(err)` is printed once on stderr as
//! `error: message: cause: cause` and exits with [`error::CliError::exit_code`].

mod cmd;
mod error;
mod global;
mod output;
mod service;

use std::process::ExitCode;

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

/// Parses the arguments, runs the command, and turns its result into the exit code.
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap formats its own usage errors, `--help` and `--version` (exit 2 or 0).
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(output::code::USAGE));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    match runtime.block_on(cmd::run(cli.global, cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error::report(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
