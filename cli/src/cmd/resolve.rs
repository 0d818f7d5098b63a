//! `attune resolve`: which version an action would run on now, on which subject, and why.

use std::process::ExitCode;

use attune_nats::client::{Client, ClientError};
use attune_nats::resolve::Mode;
use clap::Args;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Show the version and subject an invocation would use right now, and why each registered
/// version was or was not chosen. Nothing is run.
///
/// Examples:
///   attune resolve core.py_info
///   attune resolve core.py_echo --constraint '~3.11'
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The action ref, `<pack>.<action>`.
    pub action: String,
    /// Try another constraint instead of the action's own.
    #[arg(long)]
    pub constraint: Option<String>,
}

/// Runs the command. Exits 69 when no available version fits, like `attune invoke` would.
pub async fn run(
    global: &Global,
    client: &Client,
    args: ResolveArgs,
) -> Result<ExitCode, CliError> {
    let resolved = client
        .resolve(&args.action, args.constraint.as_deref(), Mode::Sync)
        .await?;
    let report = resolved.report(client.namespace());
    if global.output == Output::Json {
        output::json(&report);
    } else {
        println!("action:     {}", report.action);
        println!("runtime:    {}", report.runtime);
        println!(
            "constraint: {}",
            if report.constraint.is_empty() {
                "*"
            } else {
                &report.constraint
            }
        );
        match (&report.version, &report.error) {
            (Some(version), _) => {
                println!("version:    {version}");
                println!(
                    "subject:    {}",
                    report.subject.as_deref().unwrap_or_default()
                );
                println!("why:        {}", report.reason);
            }
            (None, error) => println!(
                "version:    none — {}",
                error.as_deref().unwrap_or(&report.reason)
            ),
        }
        println!();
        let mut table = Table::new(&["version", "default", "enabled", "available", "verdict"]);
        let flag = |b: bool| if b { "yes" } else { "no" }.to_string();
        for c in &report.candidates {
            table.row(vec![
                c.version.clone(),
                flag(c.is_default),
                flag(c.enabled),
                flag(c.available),
                c.explanation.clone(),
            ]);
        }
        table.print("(no registered versions)");
    }
    match resolved.key() {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // With -o json the "error" field above already says why; only the exit code is left.
        Err(refusal) if global.output == Output::Json => Ok(ExitCode::from(
            CliError::from(ClientError::from(refusal)).exit_code(),
        )),
        Err(refusal) => Err(ClientError::from(refusal).into()),
    }
}
