//! `attune action …`: list actions and show one with its parameters and current version.

use std::process::ExitCode;

use attune_nats::api::{ActionListReply, ActionListRequest, ActionReply, RefRequest};
use attune_nats::client::{Client, ClientError};
use attune_nats::resolve::Mode;
use attune_nats::RegistryOp;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Action commands.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// List actions, optionally of one pack.
    ///
    /// Example: attune action list --pack examples
    List {
        /// Only this pack's actions.
        #[arg(long)]
        pack: Option<String>,
    },
    /// Show an action: its parameters (type, default, required), constraint, and the version it
    /// resolves to now.
    ///
    /// Example: attune action show examples.greet
    Show {
        /// The action ref.
        reference: String,
    },
}

/// Runs an action command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: ActionCommand,
) -> Result<ExitCode, CliError> {
    let result = match command {
        ActionCommand::List { pack } => list(global, client, pack).await,
        ActionCommand::Show { reference } => show(global, client, reference).await,
    };
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `attune action list`: a table of actions.
async fn list(global: &Global, client: &Client, pack: Option<String>) -> Result<(), ClientError> {
    let reply: ActionListReply = client
        .api(RegistryOp::ActionList, &ActionListRequest { pack })
        .await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let mut table = Table::new(&["action", "runtime", "constraint", "enabled", "description"]);
    for a in &reply.actions {
        table.row(vec![
            a.reference.clone(),
            a.runtime.clone(),
            a.runtime_version.clone().unwrap_or_else(|| "*".into()),
            if a.enabled { "yes" } else { "no" }.into(),
            a.description.clone().unwrap_or_default(),
        ]);
    }
    table.print("no actions registered");
    Ok(())
}

/// `attune action show`: one action, its parameters and the version it resolves to now.
async fn show(global: &Global, client: &Client, reference: String) -> Result<(), ClientError> {
    let reply: ActionReply = client
        .api(
            RegistryOp::ActionGet,
            &RefRequest {
                reference: reference.clone(),
            },
        )
        .await?;
    let a = reply.action;
    let resolved = client.resolve(&reference, None, Mode::Sync).await?;
    let now = match resolved.key() {
        Ok(key) => Ok(key.version),
        Err(refusal) => Err(refusal.to_string()),
    };
    if global.output == Output::Json {
        output::json(&json!({
            "action": a,
            "resolves_to": now.as_ref().ok(),
            "resolve_error": now.as_ref().err(),
        }));
        return Ok(());
    }
    println!("action:      {}", a.reference);
    if let Some(d) = &a.description {
        println!("description: {d}");
    }
    println!("runtime:     {} (runner_type {})", a.runtime, a.runner_type);
    println!(
        "constraint:  {}",
        a.runtime_version
            .as_deref()
            .unwrap_or("* (the default version)")
    );
    match &now {
        Ok(v) => println!(
            "resolves to: {v} (on {})",
            client.namespace().invoke(&a.runtime, v)
        ),
        Err(e) => println!("resolves to: nothing now — {e}"),
    }
    println!("entry point: actions/{}", a.entry_point);
    println!(
        "delivery:    parameters as {:?} on {:?}; output as {:?}; timeout {}",
        a.parameter_format,
        a.parameter_delivery,
        a.output_format,
        a.timeout_seconds
            .map_or("default".to_string(), |t| format!("{t} s"))
    );
    if let Some(c) = &a.concurrency {
        println!(
            "concurrency: at most {} at once across all runners; beyond that sync calls {}, jobs stay queued",
            c.limit,
            match c.policy {
                attune_nats::concurrency::ConcurrencyPolicy::Wait => "wait for a slot",
                attune_nats::concurrency::ConcurrencyPolicy::Reject => "are rejected (429)",
            }
        );
    }
    println!();
    let required: Vec<&str> = a.parameters["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut table = Table::new(&["parameter", "type", "required", "default", "description"]);
    if let Some(props) = a.parameters["properties"].as_object() {
        for (name, p) in props {
            let mut ty = p["type"].as_str().unwrap_or("any").to_string();
            if let Some(e) = p["enum"].as_array() {
                let vals: Vec<String> = e.iter().map(|v| v.to_string()).collect();
                ty = format!("{ty} {{{}}}", vals.join(","));
            }
            if p["secret"] == true {
                ty.push_str(" (secret)");
            }
            table.row(vec![
                name.clone(),
                ty,
                if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                p.get("default").map_or("-".into(), |d| d.to_string()),
                p["description"].as_str().unwrap_or("").to_string(),
            ]);
        }
    }
    table.print("no parameters");
    Ok(())
}
