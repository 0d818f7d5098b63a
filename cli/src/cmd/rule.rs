//! `attune rule …`: list rules, show one, enable and disable them.

use std::process::ExitCode;

use attune_nats::api::{
    RefRequest, RuleListReply, RuleListRequest, RuleReply, RuleSetEnabledRequest,
};
use attune_nats::client::{Client, ClientError};
use attune_nats::{RegistryOp, Rule};
use clap::Subcommand;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Rule commands.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// List rules, optionally of one pack.
    ///
    /// Example: attune rule list --pack examples
    List {
        /// Only this pack's rules.
        #[arg(long)]
        pack: Option<String>,
    },
    /// Show a rule: its trigger, criteria and the action it runs with which parameters.
    ///
    /// Example: attune rule show examples.stats_on_tick
    Show {
        /// The rule ref.
        reference: String,
    },
    /// Let a rule fire again. The choice outlives re-registrations of its pack.
    Enable {
        /// The rule ref.
        reference: String,
    },
    /// Stop a rule from firing (events of its trigger are still kept). The choice outlives
    /// re-registrations of its pack.
    Disable {
        /// The rule ref.
        reference: String,
    },
}

/// Runs a rule command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: RuleCommand,
) -> Result<ExitCode, CliError> {
    match command {
        RuleCommand::List { pack } => list(global, client, pack).await?,
        RuleCommand::Show { reference } => {
            let reply: RuleReply = client
                .api(RegistryOp::RuleGet, &RefRequest { reference })
                .await?;
            show(global, &reply.rule);
        }
        RuleCommand::Enable { reference } => set_enabled(global, client, reference, true).await?,
        RuleCommand::Disable { reference } => set_enabled(global, client, reference, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `attune rule list`: a table of rules.
async fn list(global: &Global, client: &Client, pack: Option<String>) -> Result<(), ClientError> {
    let reply: RuleListReply = client
        .api(RegistryOp::RuleList, &RuleListRequest { pack })
        .await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let mut table = Table::new(&["rule", "trigger", "action", "enabled", "description"]);
    for r in &reply.rules {
        table.row(vec![
            r.reference.clone(),
            r.trigger.clone(),
            r.action.reference.clone(),
            if r.enabled { "yes" } else { "no" }.into(),
            r.description.clone().unwrap_or_default(),
        ]);
    }
    table.print("no rules registered");
    Ok(())
}

async fn set_enabled(
    global: &Global,
    client: &Client,
    reference: String,
    enabled: bool,
) -> Result<(), ClientError> {
    let reply: RuleReply = client
        .api(
            RegistryOp::RuleSetEnabled,
            &RuleSetEnabledRequest { reference, enabled },
        )
        .await?;
    show(global, &reply.rule);
    Ok(())
}

/// One rule, as JSON or as text.
fn show(global: &Global, rule: &Rule) {
    if global.output == Output::Json {
        output::json(&serde_json::json!({ "rule": rule }));
        return;
    }
    println!("rule:        {}", rule.reference);
    if let Some(d) = &rule.description {
        println!("description: {d}");
    }
    println!("enabled:     {}", if rule.enabled { "yes" } else { "no" });
    println!("trigger:     {}", rule.trigger);
    println!("action:      {}", rule.action.reference);
    if !rule.action.parameters.is_empty() {
        println!(
            "parameters:  {}",
            serde_json::Value::Object(rule.action.parameters.clone())
        );
    }
    println!();
    let mut table = Table::new(&["criterion", "type", "pattern"]);
    for (key, c) in &rule.criteria {
        table.row(vec![
            key.clone(),
            serde_json::to_value(c.op)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            c.pattern.as_ref().map_or("-".into(), |p| p.to_string()),
        ]);
    }
    table.print("no criteria: every event of the trigger matches");
}
