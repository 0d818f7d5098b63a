//! `attune event`: events of triggers, the input of rules.

use std::process::ExitCode;

use attune_nats::client::{parse_assignments, Client};
use attune_nats::events::Event;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output;

/// Work with events.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Publish an event, as a sensor would: rules of its trigger are evaluated against it.
    ///
    /// Examples:
    ///   attune event publish examples.tick at=1764800000
    ///   attune event publish monitoring.alert --payload '{"host": "db1", "severity": 3}'
    Publish(PublishArgs),
}

/// Arguments of `attune event publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The trigger, `<pack>.<trigger>`.
    pub trigger: String,
    /// Payload fields as key=value (values that read as JSON are JSON: `n=3` is a number).
    pub assignments: Vec<String>,
    /// The payload as a JSON value; key=value pairs are added to it when it is an object.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// The event id (default: a new UUID). An id published twice within two minutes is kept once.
    #[arg(long)]
    pub id: Option<String>,
}

/// Runs an `attune event` command.
pub async fn run(
    global: &Global,
    client: &Client,
    cmd: EventCommand,
) -> Result<ExitCode, CliError> {
    match cmd {
        EventCommand::Publish(args) => publish(global, client, args).await,
    }
}

async fn publish(
    global: &Global,
    client: &Client,
    args: PublishArgs,
) -> Result<ExitCode, CliError> {
    let mut payload = match args.payload.as_deref() {
        Some(text) => serde_json::from_str(text).map_err(CliError::ParamsJson)?,
        None => Value::Object(Default::default()),
    };
    let fields = parse_assignments(&Value::Null, &args.assignments)?;
    match &mut payload {
        Value::Object(map) => map.extend(fields),
        _ if fields.is_empty() => {}
        _ => return Err(CliError::ParamsNotObject),
    }
    let mut event = Event::new(&args.trigger, payload, None);
    if let Some(id) = args.id {
        event.id = id;
    }
    let ack = client.publish_event(&event).await?;
    match global.output {
        Output::Json => output::json(&serde_json::json!({
            "id": event.id,
            "trigger": event.trigger,
            "subject": event.subject(client.namespace()),
            "duplicate": ack.duplicate,
        })),
        Output::Text => println!("{}", event.id),
    }
    Ok(ExitCode::SUCCESS)
}
