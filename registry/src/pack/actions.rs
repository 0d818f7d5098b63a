//! Action files (`actions/*.yaml`): what can be invoked, with its parameters, output, formats,
//! timeout, retry policy and concurrency limit.
//!
//! Everything a runner or the CLI relies on without checking again is checked here: parameter and
//! output schemas, a positive timeout, a sane retry policy. See `docs/pack-format.md`.

use std::path::Path;

use attune_nats::concurrency::Concurrency;
use attune_nats::jobs::RetryPolicy;
use attune_nats::model::{OutputFormat, ParameterDelivery, ParameterFormat};
use attune_nats::{Action, Runtime};
use serde::Deserialize;
use serde_json::Value as Json;

use super::checks::{check_runnable, read_runnable, Kind, Resolved, Runnable};
use super::context::Ctx;
use super::locate::Seg;
use super::params;

/// The fields an action file may have; any other is warned about as a likely typo.
const ACTION_FIELDS: &[&str] = &[
    "ref",
    "name",
    "description",
    "runner_type",
    "entry_point",
    "runtime_version",
    "parameters",
    "output",
    "output_schema",
    "parameter_delivery",
    "parameter_format",
    "output_format",
    "timeout_seconds",
    "timeout",
    "enabled",
    "retry",
    "concurrency",
    "warm",
    "tags",
    "pack",
];

/// What an action file holds, before normalisation.
#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "ref")]
    reference: Option<String>,
    name: Option<String>,
    description: Option<String>,
    runner_type: Option<String>,
    entry_point: Option<String>,
    runtime_version: Option<String>,
    parameters: Option<Json>,
    output: Option<Json>,
    output_schema: Option<Json>,
    #[serde(default)]
    parameter_delivery: ParameterDelivery,
    #[serde(default)]
    parameter_format: ParameterFormat,
    #[serde(default)]
    output_format: OutputFormat,
    timeout_seconds: Option<f64>,
    timeout: Option<f64>,
    enabled: Option<bool>,
    retry: Option<RetryPolicy>,
    concurrency: Option<Concurrency>,
    warm: Option<bool>,
}

/// Reads and checks one action file; `Some` only when it has no problem.
pub fn load(
    ctx: &mut Ctx,
    shown: &Path,
    full: &Path,
    pack_ref: &str,
    catalog: &[&Runtime],
) -> Option<Action> {
    let (doc, raw): (_, RawAction) = read_runnable(ctx, shown, full, ACTION_FIELDS)?;
    let common = check_runnable(
        ctx,
        &doc,
        Kind::Action,
        pack_ref,
        Runnable {
            reference: raw.reference,
            name: raw.name,
            runner_type: raw.runner_type,
            entry_point: raw.entry_point,
            runtime_version: raw.runtime_version,
        },
        catalog,
    );
    let full_schema = raw
        .parameters
        .as_ref()
        .and_then(|p| p.get("type"))
        .and_then(Json::as_str)
        == Some("object");
    let parameters = match params::normalize(raw.parameters.as_ref()) {
        Ok(schema) => {
            for (param, msg) in params::check_schema(&schema) {
                ctx.problems
                    .push(doc.problem(&param_path(full_schema, param.as_deref()), msg));
            }
            Some(schema)
        }
        Err(e) => {
            ctx.problems
                .push(doc.problem(&param_path(full_schema, e.param()), e.to_string()));
            None
        }
    };
    let output = raw.output.or(raw.output_schema);
    if let Some(out) = &output {
        if let Err(e) = jsonschema::meta::validate(out) {
            ctx.problems
                .push(doc.problem(&[Seg::key("output")], format!("invalid output schema: {e}")));
        }
    }
    let timeout = raw.timeout_seconds.or(raw.timeout);
    if let Some(t) = timeout {
        if !(t > 0.0 && t.is_finite()) {
            ctx.problems.push(doc.problem(
                &[Seg::key("timeout_seconds")],
                format!("timeout_seconds must be a positive number of seconds, not {t}"),
            ));
        }
    }
    if let Some(retry) = &raw.retry {
        for (field, msg) in retry.problems() {
            ctx.problems
                .push(doc.problem(&[Seg::key("retry"), Seg::key(field)], msg));
        }
    }
    if let Some(concurrency) = &raw.concurrency {
        for (field, msg) in concurrency.problems() {
            ctx.problems
                .push(doc.problem(&[Seg::key("concurrency"), Seg::key(field)], msg));
        }
    }
    let Resolved {
        reference,
        name,
        runner_type,
        runtime,
        entry_point,
        runtime_version,
    } = common?;
    Some(Action {
        reference,
        pack: pack_ref.to_string(),
        name,
        description: raw.description,
        runner_type,
        runtime,
        entry_point,
        runtime_version,
        parameters: parameters?,
        output,
        parameter_delivery: raw.parameter_delivery,
        parameter_format: raw.parameter_format,
        output_format: raw.output_format,
        timeout_seconds: timeout,
        enabled: raw.enabled.unwrap_or(true),
        retry: raw.retry,
        concurrency: raw.concurrency,
        warm: raw.warm.unwrap_or(true),
    })
}

/// The path of a parameter problem: `parameters`, or the parameter it names:
/// `parameters.<name>` in the flat style, `parameters.properties.<name>` in a full schema.
fn param_path(full_schema: bool, param: Option<&str>) -> Vec<Seg> {
    let mut path = vec![Seg::key("parameters")];
    if let Some(p) = param {
        if full_schema {
            path.push(Seg::key("properties"));
        }
        path.push(Seg::key(p));
    }
    path
}
