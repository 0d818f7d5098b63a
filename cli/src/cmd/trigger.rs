//! `attune trigger …`: the trigger types packs declare, and the schema of their payloads.

use std::process::ExitCode;

use attune_nats::api::{PackFilter, RefRequest, TriggerListReply, TriggerReply};
use attune_nats::client::Client;
use attune_nats::RegistryOp;
use clap::Subcommand;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Trigger commands.
#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// List trigger types, optionally of one pack.
    ///
    /// Example: attune trigger list --pack examples
    List {
        /// Only this pack's trigger types.
        #[arg(long)]
        pack: Option<String>,
    },
    /// Show a trigger type and its payload schema.
    ///
    /// Example: attune trigger show examples.tick
    Show {
        /// The trigger ref, `<pack>.<trigger>`.
        reference: String,
    },
}

/// Runs a trigger command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: TriggerCommand,
) -> Result<ExitCode, CliError> {
    match command {
        TriggerCommand::List { pack } => {
            let reply: TriggerListReply = client
                .api(RegistryOp::TriggerList, &PackFilter { pack })
                .await?;
            if global.output == Output::Json {
                output::json(&reply);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&["trigger", "payload schema", "description"]);
            for t in &reply.triggers {
                let any = t.payload_schema.as_object().is_some_and(|o| o.is_empty());
                table.row(vec![
                    t.reference.clone(),
                    if any { "any payload" } else { "yes" }.into(),
                    t.description.clone().unwrap_or_default(),
                ]);
            }
            table.print("no trigger types registered");
        }
        TriggerCommand::Show { reference } => {
            let TriggerReply { trigger } = client
                .api(RegistryOp::TriggerGet, &RefRequest { reference })
                .await?;
            if global.output == Output::Json {
                output::json(&serde_json::json!({ "trigger": trigger }));
                return Ok(ExitCode::SUCCESS);
            }
            println!("trigger:        {}", trigger.reference);
            if let Some(d) = &trigger.description {
                println!("description:    {d}");
            }
            println!(
                "subject:        {}",
                client.namespace().events(&trigger.pack, &trigger.name)
            );
            println!(
                "payload schema: {}",
                serde_json::to_string_pretty(&trigger.payload_schema).unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
