//! The command groups, one file each, and the dispatch between them.

use std::process::ExitCode;

use clap::Subcommand;

use crate::global::Global;

/// Every top-level command.
#[derive(Subcommand)]
pub enum Command {}

/// Runs one command and turns its outcome into the process exit code.
pub async fn run(global: Global, command: Command) -> ExitCode {
    let _ = global;
    match command {}
}
