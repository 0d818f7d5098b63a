//! `attune invoke`: run an action and print its result.

use std::process::ExitCode;

use attune_nats::client::{parse_assignments, Client, ClientError};
use attune_nats::name::{check_name, check_version_name};
use attune_nats::resolve::Mode;
use attune_nats::wire::{InvocationReply, InvocationRequest, RouteTarget, Status};
use attune_nats::VersionKey;
use clap::Args;
use serde_json::{Map, Value};

use crate::cmd::execution::{follow, Print};
use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output;

/// Run an action on the version its constraint resolves to right now, and print the result.
///
/// Examples:
///   attune invoke core.echo message=hi
///   attune invoke examples.modern_stats --params '{"numbers": [1, 2, 3.5]}'
///   attune invoke examples.greet name=Ada language=fr -o json
///   attune invoke --async core.echo message=later     (prints the job id; see `attune result`)
///
/// Exit codes: 0 succeeded, 1 the action failed, 124 timed out, 2 usage error or rejected,
/// 69 no runner or version available.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The action ref, `<pack>.<action>`.
    pub action: String,
    /// Parameters as key=value, typed by the action's schema (`count=3` is a number when the
    /// action declares an integer).
    #[arg(value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
    /// Parameters as a JSON object, or @file to read it from a file. key=value pairs are applied
    /// on top.
    #[arg(long, value_name = "JSON|@FILE")]
    pub params: Option<String>,
    /// Timeout of the execution in seconds (default: the action's).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Enqueue a durable job instead of waiting: prints its id at once (`{"id", "subject"}` with
    /// -o json); `attune result <id> --wait` gets the result.
    #[arg(long = "async")]
    pub run_async: bool,
    /// The job id (default: a new UUID). Enqueueing an id again within 10 minutes is a no-op.
    #[arg(long, value_name = "ID", requires = "run_async")]
    pub id: Option<String>,
    /// Print the action's output lines on stderr as it prints them, then the result as usual.
    #[arg(long, conflicts_with = "run_async")]
    pub follow: bool,
}

/// Runs the command: `Ok` carries the exit code of the reply's status.
pub async fn run(global: &Global, client: &Client, args: InvokeArgs) -> Result<ExitCode, CliError> {
    let mode = if args.run_async {
        Mode::Job
    } else {
        Mode::Sync
    };
    // One read: the route the registry's resolver keeps for the action. With none (or a
    // refusal), the long way: the action and its runtime, resolved here, so the error is the
    // resolver's own.
    let (key, schema, action_timeout) = match client.route(&args.action).await.and_then(|r| {
        let target = if args.run_async { &r.job } else { &r.sync };
        route_key(target).map(|k| (k, r.parameters, r.timeout_seconds))
    }) {
        Some(found) => found,
        None => {
            let resolved = client.resolve(&args.action, None, mode).await?;
            let key = resolved.key().map_err(ClientError::from)?;
            (
                key,
                resolved.action.parameters,
                resolved.action.timeout_seconds,
            )
        }
    };
    let mut parameters = args
        .params
        .as_deref()
        .map(read_params)
        .transpose()?
        .unwrap_or_default();
    parameters.extend(parse_assignments(&schema, &args.assignments)?);
    let request = InvocationRequest {
        id: args.id.clone(),
        action: args.action.clone(),
        parameters,
        timeout_seconds: args.timeout,
    };
    if args.run_async {
        // Queued for the version a sync call would use, or, with no runner up right now, the
        // one it would use once its runners are.
        let jobs = key.jobs_subject(client.namespace());
        let queued = client.enqueue_subject(&jobs, &request).await?;
        match global.output {
            Output::Json => output::json(&queued),
            Output::Text => println!("{}", queued.id),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let subject = key.invoke_subject(client.namespace());
    let mut request = request;
    // Following needs the id before the request leaves, to listen first.
    let printer = if args.follow {
        let id = request
            .id
            .get_or_insert_with(attune_nats::reply::new_id)
            .clone();
        Some(follow(client, &id, Print::Stderr).await?)
    } else {
        None
    };
    let reply = client
        .invoke_subject(&subject, &request, action_timeout)
        .await?;
    if let Some(printer) = printer {
        // The end message is sent just before the reply: give it a moment, never more.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), printer).await;
    }
    Ok(print_reply(global, &args.action, &reply))
}

/// The version a route target names, when it names a valid one (the subject is built here from
/// it, never taken from the document).
fn route_key(target: &RouteTarget) -> Option<VersionKey> {
    match target {
        RouteTarget::Version {
            runtime, version, ..
        } => {
            check_name(runtime).ok()?;
            check_version_name(version).ok()?;
            Some(VersionKey::new(runtime, version))
        }
        RouteTarget::Refused { .. } => None,
    }
}

/// Prints a reply (a sync reply or an async result) and returns the exit code its status
/// means: 0 succeeded, 1 failed, 124 timed out, 2 rejected.
pub(crate) fn print_reply(global: &Global, action: &str, reply: &InvocationReply) -> ExitCode {
    if global.output == Output::Json {
        output::json(&reply);
    } else {
        match reply.status {
            Status::Succeeded => print_result(&reply.result),
            _ => {
                if !reply.stdout.is_empty() {
                    print!("{}", reply.stdout);
                }
                if !reply.stderr.is_empty() {
                    eprint!("{}", reply.stderr);
                }
                let what = reply.error.as_deref().unwrap_or("");
                match reply.exit_code {
                    Some(c) => eprintln!(
                        "error: {} {} (exit code {c}) {what}",
                        action,
                        reply.status.as_str()
                    ),
                    None => eprintln!("error: {} {}: {what}", action, reply.status.as_str()),
                }
            }
        }
    }
    ExitCode::from(output::status_code(reply.status))
}

/// Prints a result for people: text as it is, anything else as pretty JSON.
fn print_result(result: &Value) {
    match result {
        Value::String(s) => {
            print!("{s}");
            if !s.ends_with('\n') && !s.is_empty() {
                println!();
            }
        }
        Value::Null => {}
        other => output::json(other),
    }
}

/// The `--params` object, given inline or as `@file`.
fn read_params(arg: &str) -> Result<Map<String, Value>, CliError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: "reading --params file",
            path: path.into(),
            source,
        })?,
        None => arg.to_string(),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CliError::ParamsNotObject),
        Err(e) => Err(CliError::ParamsJson(e)),
    }
}
