//! `attune resolve`: which version an action would run on now, on which subject, and why.

use std::process::ExitCode;

use attune_nats::client::{Client, ClientError};
use clap::Args;
use serde_json::json;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, code, Table};

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
        .resolve(&args.action, args.constraint.as_deref())
        .await?;
    let ns = client.namespace();
    let verdicts = match &resolved.outcome {
        Ok(sel) => &sel.verdicts,
        Err(no) => &no.verdicts,
    };
    if global.output == Output::Json {
        let candidates: Vec<_> = verdicts
            .iter()
            .map(|(name, verdict)| {
                let v = resolved.runtime.version(name);
                json!({
                    "version": name,
                    "verdict": verdict,
                    "explanation": verdict.explain(),
                    "is_default": v.is_some_and(|v| v.is_default),
                    "enabled": v.is_some_and(|v| v.enabled),
                    "available": v.is_some_and(|v| v.available),
                    "verified_at": v.and_then(|v| v.verified_at.clone()),
                })
            })
            .collect();
        output::json(&json!({
            "action": resolved.action.reference,
            "runtime": resolved.runtime.name,
            "constraint": resolved.constraint.as_str(),
            "version": resolved.outcome.as_ref().ok().map(|s| &s.chosen),
            "subject": resolved.subject(ns),
            "reason": resolved.outcome.as_ref().ok().map(|s| &s.reason),
            "error": resolved.outcome.as_ref().err().map(|e| &e.message),
            "candidates": candidates,
        }));
    } else {
        println!("action:     {}", resolved.action.reference);
        println!("runtime:    {}", resolved.runtime.name);
        println!("constraint: {}", resolved.constraint);
        match &resolved.outcome {
            Ok(sel) => {
                println!("version:    {}", sel.chosen);
                println!("subject:    {}", resolved.subject(ns).unwrap_or_default());
                println!("why:        {}", sel.reason);
            }
            Err(no) => println!("version:    none — {}", no.message),
        }
        println!();
        let mut table = Table::new(&["version", "default", "enabled", "available", "verdict"]);
        for (name, verdict) in verdicts {
            let v = resolved.runtime.version(name);
            let flag = |b: bool| if b { "yes" } else { "no" }.to_string();
            table.row(vec![
                name.clone(),
                flag(v.is_some_and(|v| v.is_default)),
                flag(v.is_some_and(|v| v.enabled)),
                flag(v.is_some_and(|v| v.available)),
                verdict.explain().to_string(),
            ]);
        }
        table.print("(no registered versions)");
    }
    match &resolved.outcome {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // With -o json the "error" field above already says why; only the exit code is left.
        Err(_) if global.output == Output::Json => Ok(ExitCode::from(code::UNAVAILABLE)),
        Err(no) => Err(ClientError::NoVersion(no.clone()).into()),
    }
}
