//! `attune result`: the result of an asynchronous invocation (`attune invoke --async`), and the
//! listing of results and dead letters.

use std::process::ExitCode;
use std::time::Duration;

use attune_nats::client::{Client, ClientError};
use attune_nats::jobs::ResultRecord;
use clap::Args;

use crate::cmd::invoke::print_reply;
use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, code, Table};

/// Show the result of an asynchronous invocation, or list results.
///
/// Examples:
///   attune result 3f1c…                 the result, printed like `attune invoke` prints it
///   attune result 3f1c… --wait          wait for the final result (default up to 60 s)
///   attune result --list --dead         jobs that failed for good (dead letters)
///
/// Exit codes: as `attune invoke` (0 succeeded, 1 failed, 124 timed out, 2 rejected) for a
/// final result; 75 not final yet (queued, running, or waiting to retry); 124 `--wait` timed out.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The job id `attune invoke --async` printed.
    #[arg(required_unless_present = "list")]
    pub id: Option<String>,
    /// Wait for the final result.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
    /// List the results in KV `attune-results` instead.
    #[arg(long, conflicts_with = "id")]
    pub list: bool,
    /// With --list: only dead letters (final and not succeeded).
    #[arg(long, requires = "list")]
    pub dead: bool,
}

/// Runs the command: `Ok` carries the exit code of the result (75 while it is not final).
pub async fn run(global: &Global, client: &Client, args: ResultArgs) -> Result<ExitCode, CliError> {
    if args.list {
        return list(global, client, args.dead).await;
    }
    let id = args.id.expect("clap requires an id without --list");
    let record = if args.wait {
        let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
        client.wait_result(&id, timeout).await?
    } else {
        match client.result(&id).await? {
            Some(r) => r,
            None => return Err(CliError::NoResult { id }),
        }
    };
    if global.output == Output::Json {
        output::json(&record);
        return Ok(exit_code(&record));
    }
    if !record.is_final {
        let last = record.attempts.last();
        eprintln!(
            "job {id} is not finished: attempt {} {}{}",
            last.map_or(0, |a| a.attempt),
            record.reply.status.as_str(),
            record
                .next_attempt_at
                .map(|t| format!(", next attempt at {}", attune_nats::time::format(t)))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(code::PENDING));
    }
    let exit = print_reply(global, &record.reply.action, &record.reply);
    if record.attempts.len() > 1 || record.dead_letter {
        for a in &record.attempts {
            eprintln!(
                "  attempt {}: {}{} on {} at {}",
                a.attempt,
                a.status.as_str(),
                a.exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                a.runner.as_deref().unwrap_or("-"),
                a.started_at
                    .map_or("-".to_string(), attune_nats::time::format),
            );
        }
    }
    if record.dead_letter {
        eprintln!(
            "dead letter: job {id} failed after {} attempt(s) and will not run again",
            record.attempts.len()
        );
    }
    Ok(exit)
}

/// The exit code of a record: 75 while not final, else that of its reply's status.
fn exit_code(record: &ResultRecord) -> ExitCode {
    if !record.is_final {
        return ExitCode::from(code::PENDING);
    }
    ExitCode::from(output::status_code(record.reply.status))
}

/// `attune result --list [--dead]`: the stored results, oldest first.
async fn list(global: &Global, client: &Client, dead_only: bool) -> Result<ExitCode, CliError> {
    let mut records = match client.results().await {
        Ok(r) => r,
        Err(ClientError::NotPublished(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    records.retain(|r| !dead_only || r.dead_letter);
    records.sort_by_key(|r| r.updated_at);
    if global.output == Output::Json {
        output::json(&records);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "id", "action", "status", "attempts", "state", "rule", "updated",
    ]);
    for r in &records {
        let state = if r.dead_letter {
            "dead letter"
        } else if r.is_final {
            "final"
        } else {
            "retrying"
        };
        table.row(vec![
            r.reply.id.clone(),
            r.reply.action.clone(),
            r.reply.status.as_str().to_string(),
            r.attempts.len().to_string(),
            state.to_string(),
            r.rule.clone().unwrap_or_else(|| "-".into()),
            attune_nats::time::format(r.updated_at),
        ]);
    }
    table.print(if dead_only {
        "no dead letters"
    } else {
        "no results"
    });
    Ok(ExitCode::SUCCESS)
}
