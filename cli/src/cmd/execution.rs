//! `attune execution …`: the history of what ran — every invocation, sync or job — from the
//! stream `ATTUNE_EXECUTIONS`.

use std::process::ExitCode;

use attune_nats::client::{Client, ClientError};
use attune_nats::executions::{
    get_execution, list_executions, ExecutionFilter, ExecutionRecord, ExecutionState, ReadError,
};
use clap::{Args, Subcommand};
use time::OffsetDateTime;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Execution commands.
#[derive(Debug, Subcommand)]
pub enum ExecutionCommand {
    /// List executions, newest first.
    ///
    /// Examples:
    ///   attune execution list --action examples.greet --status failed
    ///   attune execution list --since 1h --limit 50 --page 2
    List(ListArgs),
    /// Show one execution: parameters (secrets masked), version, runner, timings, output excerpt.
    ///
    /// Example: attune execution show 3f1c…
    Show {
        /// The execution id (the invocation or job id).
        id: String,
    },
    /// Print an execution's output: live, line by line, while it runs (until it ends); the
    /// recorded excerpt once it has ended.
    ///
    /// Example: attune execution tail 3f1c…
    Tail {
        /// The execution id.
        id: String,
    },
}

/// Where [`follow`] prints live lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// Each line on the stream it came from.
    AsWritten,
    /// Every line on stderr (stdout is for the result that follows).
    Stderr,
}

/// Subscribes to execution `id`'s live output and prints it as it comes, until its end message
/// (or until the returned task is aborted). Subscribe before the execution starts to miss
/// nothing: the subscription is made before this returns.
pub async fn follow(
    client: &Client,
    id: &str,
    print: Print,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    use attune_nats::executions::{OutputMessage, OutputStream};
    use futures::StreamExt;
    use std::io::Write;
    let mut sub = client
        .nats()
        .subscribe(client.namespace().output(id))
        .await
        .map_err(|e| {
            CliError::Client(ClientError::Nats {
                what: "subscribing to the live output".into(),
                source: e.into(),
            })
        })?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(m) = serde_json::from_slice::<OutputMessage>(&msg.payload) else {
                continue;
            };
            if m.end {
                if m.dropped > 0 {
                    eprintln!(
                        "[live output: {} lines not shown (rate or size bound)]",
                        m.dropped
                    );
                }
                break;
            }
            let Some(line) = m.line else { continue };
            match (print, m.stream) {
                (Print::AsWritten, Some(OutputStream::Stdout)) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                _ => eprintln!("{line}"),
            }
        }
    }))
}

/// Filters and paging of `attune execution list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this action (`<pack>.<action>`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this pack's actions.
    #[arg(long, conflicts_with = "action")]
    pub pack: Option<String>,
    /// Only this status: running, succeeded, failed, timed_out, rejected.
    #[arg(long)]
    pub status: Option<String>,
    /// Only those run by this runner.
    #[arg(long)]
    pub runner: Option<String>,
    /// Only those run on this runtime version (`3.12`).
    #[arg(long)]
    pub version: Option<String>,
    /// Only those requested since: a duration back from now (`90s`, `15m`, `2h`, `7d`) or an
    /// RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    /// How many per page.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Which page (1: the newest).
    #[arg(long, default_value_t = 1)]
    pub page: usize,
}

/// `--since`: `<n>s|m|h|d` back from now, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let refused =
        || format!("{text:?} is neither a duration (90s, 15m, 2h, 7d) nor an RFC 3339 time");
    // The unit is the last character, whatever its width (a user may type any).
    let Some((at, unit)) = text.char_indices().last() else {
        return Err(refused());
    };
    let seconds: i64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(refused()),
    };
    let back = text[..at]
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(refused)?;
    OffsetDateTime::now_utc()
        .checked_sub(time::Duration::seconds(back))
        .ok_or_else(|| format!("{text:?} reaches back further than a date can"))
}

/// Runs an execution command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: ExecutionCommand,
) -> Result<ExitCode, CliError> {
    let js = client.jetstream().clone();
    match command {
        ExecutionCommand::List(args) => {
            let filter = ExecutionFilter {
                action: args.action,
                pack: args.pack,
                status: args.status,
                runner: args.runner,
                version: args.version,
                since: args.since,
            };
            let skip = args
                .page
                .max(1)
                .saturating_sub(1)
                .saturating_mul(args.limit);
            let records = list_executions(&js, client.namespace(), &filter, skip, args.limit)
                .await
                .map_err(reading)?;
            if global.output == Output::Json {
                output::json(&serde_json::json!({ "executions": records }));
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                "id",
                "action",
                "status",
                "version",
                "runner",
                "requested",
                "ms",
                "by",
            ]);
            for r in &records {
                table.row(vec![
                    r.id.clone(),
                    r.action.clone(),
                    status(r).into(),
                    r.version.clone().unwrap_or_default(),
                    r.runner.clone().unwrap_or_else(|| "-".into()),
                    r.requested_at
                        .map(attune_nats::time::format)
                        .unwrap_or_default(),
                    r.duration_ms.map_or(String::new(), |d| format!("{d:.1}")),
                    r.rule.clone().unwrap_or_else(|| {
                        serde_json::to_value(r.mode)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    }),
                ]);
            }
            table.print("no executions recorded (or none match)");
        }
        ExecutionCommand::Tail { id } => {
            let printer = follow(client, &id, Print::AsWritten).await?;
            let record = get_execution(&js, client.namespace(), &id)
                .await
                .map_err(reading)?;
            match record {
                Some(r) if r.state == ExecutionState::Finished => {
                    printer.abort();
                    print!("{}", r.stdout);
                    eprint!("{}", r.stderr);
                    if r.output_truncated {
                        eprintln!("[the record keeps the start of the output only]");
                    }
                }
                // Running (or not recorded yet): live until its end message.
                _ => {
                    let _ = printer.await;
                }
            }
        }
        ExecutionCommand::Show { id } => {
            let record = get_execution(&js, client.namespace(), &id)
                .await
                .map_err(reading)?
                .ok_or_else(|| CliError::NoExecution { id: id.clone() })?;
            show(global, &record);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reading(e: ReadError) -> CliError {
    match e {
        ReadError::BadFilter(why) => CliError::Client(ClientError::Parameters(why)),
        ReadError::Nats(source) => CliError::Client(ClientError::Nats {
            what: "reading the executions stream".into(),
            source,
        }),
    }
}

/// `running`, or how it ended.
fn status(r: &ExecutionRecord) -> &'static str {
    match (r.state, r.status) {
        (ExecutionState::Running, _) => "running",
        (_, Some(s)) => s.as_str(),
        (_, None) => "finished",
    }
}

fn show(global: &Global, r: &ExecutionRecord) {
    if global.output == Output::Json {
        output::json(r);
        return;
    }
    let time = |t: Option<OffsetDateTime>| t.map(attune_nats::time::format).unwrap_or_default();
    println!("id:          {}", r.id);
    println!("action:      {}", r.action);
    println!("status:      {}", status(r));
    if let Some(c) = r.exit_code {
        println!("exit code:   {c}");
    }
    println!(
        "version:     {} {}{}{}",
        r.runtime.as_deref().unwrap_or("-"),
        r.version.as_deref().unwrap_or("-"),
        r.detected_version
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default(),
        r.constraint
            .as_deref()
            .map(|c| format!(", asked {c}"))
            .unwrap_or_default()
    );
    println!(
        "runner:      {}{}",
        r.runner
            .as_deref()
            .unwrap_or("none (refused by the registry)"),
        if r.warm { " (warm)" } else { "" }
    );
    println!("requested:   {}", time(r.requested_at));
    println!("started:     {}", time(r.started_at));
    println!("finished:    {}", time(r.finished_at));
    if let Some(d) = r.duration_ms {
        println!("duration:    {d:.1} ms");
    }
    println!("attempt:     {}", r.attempts);
    if let (Some(e), Some(rule)) = (&r.event, &r.rule) {
        println!("fired by:    rule {rule}, event {e}");
    }
    println!(
        "parameters:  {}",
        serde_json::Value::Object(r.parameters.clone())
    );
    if let Some(e) = &r.error {
        println!("error:       {e}");
    }
    for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if !text.is_empty() {
            println!("{name}:\n{}", text.trim_end());
        }
    }
    if r.output_truncated {
        println!("(output cut: the record keeps an excerpt)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_and_refuses_the_rest_without_panicking() {
        let now = OffsetDateTime::now_utc();
        let back = now - parse_since("2h").unwrap();
        assert!((7190..=7210).contains(&back.whole_seconds()), "{back}");
        assert_eq!(
            parse_since("2026-12-04T01:00:00Z")
                .unwrap()
                .unix_timestamp(),
            1_796_346_000
        );
        for bad in [
            "",
            "h",
            "5é",
            "é",
            "-3m",
            "1.5h",
            "9223372036854775807d",
            "99999999999999d",
            "soon",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?} is refused");
        }
    }
}
