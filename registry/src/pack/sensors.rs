//! Sensor files (`sensors/*.yaml`): long-running code that fires triggers.
//!
//! A sensor shares the runnable rules with actions (see [`super::checks`]); what is its own is
//! the list of triggers it fires, given in either of two spellings (an object in
//! `trigger_types` also declares the trigger type, see [`super::triggers`]), and
//! `poll_interval`. See `docs/pack-format.md`.

use std::path::Path;

use attune_nats::{Runtime, Sensor};
use serde::Deserialize;

use super::checks::{check_runnable, read_runnable, Kind, Resolved, Runnable};
use super::context::Ctx;
use super::locate::Seg;
use super::triggers::{check_payload_schema, check_trigger_name, trigger_type, Declared};

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
    poll_interval: Option<u64>,
    enabled: Option<bool>,
}

/// A trigger given as a name, or as `{name, description, payload_schema}` (StackStorm's
/// `trigger_types`), which declares it.
#[derive(Deserialize)]
#[serde(untagged)]
enum TriggerName {
    Name(String),
    Full {
        name: String,
        description: Option<String>,
        payload_schema: Option<serde_json::Value>,
    },
}

/// The longest `poll_interval`: a day.
const MAX_POLL_INTERVAL: u64 = 86_400;

/// Reads and checks one sensor file; `Some` only when it has no problem.
pub fn load(
    ctx: &mut Ctx,
    shown: &Path,
    full: &Path,
    pack_ref: &str,
    catalog: &[&Runtime],
    declared: &mut Declared,
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
    let mut ok = true;
    let mut triggers = Vec::new();
    // Each entry is located in the list it came from, so a problem names its own line.
    let entries = raw
        .triggers
        .into_iter()
        .enumerate()
        .map(|(i, t)| ("triggers", i, t))
        .chain(
            raw.trigger_types
                .into_iter()
                .enumerate()
                .map(|(i, t)| ("trigger_types", i, t)),
        );
    for (field, i, t) in entries {
        let at = [Seg::key(field), Seg::Idx(i)];
        let (name, declaration) = match t {
            TriggerName::Name(n) => (n, None),
            TriggerName::Full {
                name,
                description,
                payload_schema,
            } => {
                let declares = description.is_some() || payload_schema.is_some();
                (name, declares.then_some((description, payload_schema)))
            }
        };
        if !check_trigger_name(ctx, &doc, &at, &name) {
            ok = false;
            continue;
        }
        if let Some((description, schema)) = declaration {
            let mut schema_at = at.to_vec();
            schema_at.push(Seg::key("payload_schema"));
            if schema
                .as_ref()
                .is_some_and(|s| !check_payload_schema(ctx, &doc, &schema_at, s))
            {
                ok = false;
                continue;
            }
            declared.declare(
                ctx,
                &doc,
                &at,
                trigger_type(pack_ref, &name, description, schema),
            );
        }
        triggers.push(name);
    }
    if let Some(p) = raw.poll_interval {
        if p == 0 || p > MAX_POLL_INTERVAL {
            ctx.problems.push(doc.problem(
                &[Seg::key("poll_interval")],
                format!("poll_interval must be 1 to {MAX_POLL_INTERVAL} seconds, not {p}"),
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
        poll_interval: raw.poll_interval,
        enabled: raw.enabled.unwrap_or(true),
    })
}
