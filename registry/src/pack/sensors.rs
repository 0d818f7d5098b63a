//! Sensor files (`sensors/*.yaml`): long-running code that fires triggers.
//!
//! A sensor shares the runnable rules with actions (see [`super::checks`]); what is its own is
//! the list of triggers it fires, given in either of two spellings. See `docs/pack-format.md`.

use std::path::Path;

use attune_nats::name::check_name;
use attune_nats::{Runtime, Sensor};
use serde::Deserialize;

use super::checks::{check_runnable, read_runnable, Kind, Resolved, Runnable};
use super::context::Ctx;
use super::locate::Seg;
use super::problem::name_message;

/// The fields a sensor file may have; any other is warned about as a likely typo.
const SENSOR_FIELDS: &[&str] = &[
    "ref",
    "name",
    "description",
    "runner_type",
    "entry_point",
    "runtime_version",
    "triggers",
    "trigger_types",
    "enabled",
    "class_name",
    "poll_interval",
    "pack",
];

/// What a sensor file holds.
#[derive(Deserialize)]
struct RawSensor {
    #[serde(rename = "ref")]
    reference: Option<String>,
    name: Option<String>,
    description: Option<String>,
    runner_type: Option<String>,
    entry_point: Option<String>,
    runtime_version: Option<String>,
    #[serde(default)]
    triggers: Vec<TriggerName>,
    #[serde(default)]
    trigger_types: Vec<TriggerName>,
    enabled: Option<bool>,
}

/// A trigger given as a name or as `{name: …}` (StackStorm's `trigger_types`).
#[derive(Deserialize)]
#[serde(untagged)]
enum TriggerName {
    Name(String),
    Full { name: String },
}

/// Reads and checks one sensor file; `Some` only when it has no problem.
pub fn load(
    ctx: &mut Ctx,
    shown: &Path,
    full: &Path,
    pack_ref: &str,
    catalog: &[&Runtime],
) -> Option<Sensor> {
    let (doc, raw): (_, RawSensor) = read_runnable(ctx, shown, full, SENSOR_FIELDS)?;
    let Resolved {
        reference,
        name,
        runner_type,
        runtime,
        entry_point,
        runtime_version,
    } = check_runnable(
        ctx,
        &doc,
        Kind::Sensor,
        pack_ref,
        Runnable {
            reference: raw.reference,
            name: raw.name,
            runner_type: raw.runner_type,
            entry_point: raw.entry_point,
            runtime_version: raw.runtime_version,
        },
        catalog,
    )?;
    let raw_has_triggers = !raw.triggers.is_empty();
    let triggers: Vec<String> = raw
        .triggers
        .into_iter()
        .chain(raw.trigger_types)
        .map(|t| match t {
            TriggerName::Name(n) | TriggerName::Full { name: n } => n,
        })
        .collect();
    let field = if raw_has_triggers {
        "triggers"
    } else {
        "trigger_types"
    };
    let mut ok = true;
    for (i, t) in triggers.iter().enumerate() {
        if let Err(e) = check_name(t) {
            ctx.problems.push(doc.problem(
                &[Seg::key(field), Seg::Idx(i)],
                name_message("trigger name", t, &e),
            ));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Sensor {
        reference,
        pack: pack_ref.to_string(),
        name,
        description: raw.description,
        runner_type,
        runtime,
        entry_point,
        runtime_version,
        triggers,
        poll_interval: None,
        enabled: raw.enabled.unwrap_or(true),
    })
}
