//! `attune event`: events of triggers, the input of rules.

use std::process::ExitCode;

use attune_nats::api::{RefRequest, TriggerReply};
use attune_nats::client::{parse_assignments, Client, ClientError};
use attune_nats::events::{read_events, Event, EventError, PayloadSchemas, Window};
use attune_nats::RegistryOp;
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::Value;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output;

/// Work with events.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Publish an event, as a sensor would: rules of its trigger are evaluated against it. The
    /// trigger type must be registered; its payload_schema types key=value arguments and the
    /// payload is checked against it before anything is published.
    ///
    /// Examples:
    ///   attune event publish examples.tick at=1764800000
    ///   attune event publish monitoring.alert --payload '{"host": "db1", "severity": 3}'
    Publish(PublishArgs),
    /// List the newest events kept in the stream (7 days), oldest first.
    ///
    /// Example: attune event list --trigger examples.tick --limit 5
    List {
        /// Only this trigger's events (`<pack>.<trigger>`).
        #[arg(long)]
        trigger: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one event by id.
    Show {
        /// The event id (`attune event publish` prints it).
        id: String,
        /// Look only among this trigger's events (faster).
        #[arg(long)]
        trigger: Option<String>,
    },
    /// Print events as they are published, until Ctrl-C.
    Watch {
        /// Only this trigger's events.
        #[arg(long)]
        trigger: Option<String>,
    },
}

/// Arguments of `attune event publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The trigger, `<pack>.<trigger>`.
    pub trigger: String,
    /// Payload fields as key=value, typed by the trigger's payload_schema (an undeclared value
    /// that reads as JSON is JSON: `n=3` is a number).
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
        EventCommand::List { trigger, limit } => {
            let events = read(client, trigger.as_deref(), Window::Last(limit)).await?;
            let events: Vec<_> = events.collect().await;
            print_events(global, events)?;
            Ok(ExitCode::SUCCESS)
        }
        EventCommand::Show { id, trigger } => {
            let mut events = read(client, trigger.as_deref(), Window::Last(usize::MAX)).await?;
            while let Some(item) = events.next().await {
                if let Ok((_, Ok(event))) = &item {
                    if event.id == id {
                        match global.output {
                            Output::Json => output::json(event),
                            Output::Text => println!(
                                "{}",
                                serde_json::to_string_pretty(event).expect("events serialise")
                            ),
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            Err(CliError::NoEvent { id })
        }
        EventCommand::Watch { trigger } => {
            let mut events = read(client, trigger.as_deref(), Window::New).await?;
            while let Some(item) = events.next().await {
                print_events(global, vec![item])?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

type Item = Result<(u64, Result<Event, EventError>), async_nats::Error>;

async fn read(
    client: &Client,
    trigger: Option<&str>,
    window: Window,
) -> Result<futures::stream::BoxStream<'static, Item>, CliError> {
    let js = client.jetstream().clone();
    read_events(&js, client.namespace(), trigger, window)
        .await
        .map_err(|source| reading(source).into())
}

fn reading(source: async_nats::Error) -> ClientError {
    ClientError::Nats {
        what: "reading the events stream".into(),
        source,
    }
}

/// Prints events: JSON lines with `-o json`, else one line each (refused ones say why).
fn print_events(global: &Global, items: Vec<Item>) -> Result<(), CliError> {
    for item in items {
        let (seq, event) = item.map_err(reading)?;
        match (global.output, event) {
            (Output::Json, Ok(e)) => output::json_line(&e),
            (Output::Json, Err(why)) => {
                output::json_line(&serde_json::json!({"sequence": seq, "refused": why.to_string()}))
            }
            (Output::Text, Ok(e)) => println!(
                "{}  {}  {}  {}{}",
                e.occurred_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                e.id,
                e.trigger,
                e.payload,
                e.sensor
                    .map(|s| format!("  (sensor {s})"))
                    .unwrap_or_default()
            ),
            (Output::Text, Err(why)) => println!("#{seq}  refused: {why}"),
        }
    }
    Ok(())
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
    // The trigger type types `key=value` arguments and checks the payload here, so a mistake is
    // refused with its reason instead of being published and then ignored by every rule.
    let TriggerReply { trigger } = client
        .api(
            RegistryOp::TriggerGet,
            &RefRequest {
                reference: args.trigger.clone(),
            },
        )
        .await?;
    let fields = parse_assignments(&trigger.payload_schema, &args.assignments)?;
    match &mut payload {
        Value::Object(map) => map.extend(fields),
        _ if fields.is_empty() => {}
        _ => return Err(CliError::ParamsNotObject),
    }
    PayloadSchemas::new([&trigger]).check(&trigger.reference, &payload)?;
    let mut event = Event::new(&trigger.reference, payload, None);
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
