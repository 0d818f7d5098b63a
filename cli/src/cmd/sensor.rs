//! `attune sensor …`: list sensors and where they run, show one, enable and disable them.

use std::process::ExitCode;

use attune_nats::api::{
    PackFilter, RefRequest, SensorListReply, SensorReply, SensorSetEnabledRequest, SensorStatus,
};
use attune_nats::client::{Client, ClientError};
use attune_nats::RegistryOp;
use clap::Subcommand;

use crate::error::CliError;
use crate::global::{Global, Output};
use crate::output::{self, Table};

/// Sensor commands.
#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// List sensors, optionally of one pack, with the runner, version and pid each runs on.
    ///
    /// Example: attune sensor list --pack examples
    List {
        /// Only this pack's sensors.
        #[arg(long)]
        pack: Option<String>,
    },
    /// Show a sensor: its runtime, triggers, where it runs and what it did there (events
    /// published, lines refused, restarts, the last problem).
    ///
    /// Example: attune sensor show examples.clock
    Show {
        /// The sensor ref.
        reference: String,
    },
    /// Let a sensor run again (a runner starts it within seconds). The choice outlives
    /// re-registrations of its pack.
    Enable {
        /// The sensor ref.
        reference: String,
    },
    /// Stop a sensor (its runner stops the process within seconds). The choice outlives
    /// re-registrations of its pack.
    Disable {
        /// The sensor ref.
        reference: String,
    },
}

/// Runs a sensor command.
pub async fn run(
    global: &Global,
    client: &Client,
    command: SensorCommand,
) -> Result<ExitCode, CliError> {
    match command {
        SensorCommand::List { pack } => list(global, client, pack).await?,
        SensorCommand::Show { reference } => {
            let reply: SensorReply = client
                .api(RegistryOp::SensorGet, &RefRequest { reference })
                .await?;
            show(global, &reply.status);
        }
        SensorCommand::Enable { reference } => set_enabled(global, client, reference, true).await?,
        SensorCommand::Disable { reference } => {
            set_enabled(global, client, reference, false).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The runtime and its constraint, as the sensor asks.
fn runtime(s: &SensorStatus) -> String {
    match &s.sensor.runtime_version {
        Some(c) => format!("{} {c}", s.sensor.runtime),
        None => s.sensor.runtime.clone(),
    }
}

/// Where it runs, or why it does not.
fn running(s: &SensorStatus) -> String {
    match (&s.lease, s.sensor.enabled) {
        (Some(l), _) => format!(
            "{} ({} {}{})",
            l.runner,
            l.runtime,
            l.version,
            l.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
        ),
        (None, false) => "disabled".into(),
        (None, true) => "not running".into(),
    }
}

/// `attune sensor list`: a table of sensors.
async fn list(global: &Global, client: &Client, pack: Option<String>) -> Result<(), ClientError> {
    let reply: SensorListReply = client
        .api(RegistryOp::SensorList, &PackFilter { pack })
        .await?;
    if global.output == Output::Json {
        output::json(&reply);
        return Ok(());
    }
    let mut table = Table::new(&[
        "sensor", "runtime", "triggers", "enabled", "runs on", "events", "refused",
    ]);
    for s in &reply.sensors {
        let count = |f: fn(&attune_nats::wire::SensorLease) -> u64| {
            s.lease.as_ref().map_or("-".into(), |l| f(l).to_string())
        };
        table.row(vec![
            s.sensor.reference.clone(),
            runtime(s),
            s.sensor.triggers.join(", "),
            if s.sensor.enabled { "yes" } else { "no" }.into(),
            running(s),
            count(|l| l.events),
            count(|l| l.invalid),
        ]);
    }
    table.print("no sensors registered");
    Ok(())
}

async fn set_enabled(
    global: &Global,
    client: &Client,
    reference: String,
    enabled: bool,
) -> Result<(), ClientError> {
    let reply: SensorReply = client
        .api(
            RegistryOp::SensorSetEnabled,
            &SensorSetEnabledRequest { reference, enabled },
        )
        .await?;
    show(global, &reply.status);
    Ok(())
}

/// One sensor, as JSON or as text.
fn show(global: &Global, s: &SensorStatus) {
    if global.output == Output::Json {
        output::json(s);
        return;
    }
    let sensor = &s.sensor;
    println!("sensor:        {}", sensor.reference);
    if let Some(d) = &sensor.description {
        println!("description:   {d}");
    }
    println!(
        "enabled:       {}",
        if sensor.enabled { "yes" } else { "no" }
    );
    println!("runtime:       {}", runtime(s));
    println!("entry point:   sensors/{}", sensor.entry_point);
    println!("triggers:      {}", sensor.triggers.join(", "));
    match sensor.poll_interval {
        Some(p) => println!("runs:          every {p} s (polling)"),
        None => println!("runs:          continuously (restarted when it exits)"),
    }
    println!("runs on:       {}", running(s));
    if let Some(l) = &s.lease {
        println!("since:         {}", attune_nats::time::format(l.since));
        println!("events:        {}", l.events);
        println!("refused lines: {}", l.invalid);
        println!("restarts:      {}", l.restarts);
        if let Some(p) = &l.last_problem {
            println!("last problem:  {p}");
        }
    }
}
