//! Trigger types: the names events are published under, with the JSON Schema of their payload.
//!
//! StackStorm declares them two ways, and both load unchanged: a `triggers/*.yaml` file, or an
//! object in a sensor's `trigger_types` (`{name, description, payload_schema}`). A sensor may
//! also list a bare name (`triggers: [tick]`, or `trigger_types: [{name: tick}]`): that refers to
//! a declaration elsewhere in the pack, or, when there is none, is a trigger type that accepts
//! any payload. A trigger declared twice is a problem at the second declaration, naming the
//! first: two schemas for one trigger would leave it unclear which one events must satisfy.
//! See `docs/pack-format.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attune_nats::name::check_name;
use attune_nats::TriggerType;
use serde::Deserialize;
use serde_json::Value;

use super::context::Ctx;
use super::locate::Seg;
use super::problem::name_message;
use super::yaml::YamlDoc;

/// The fields a trigger file may have; any other is warned about as a likely typo.
const TRIGGER_FIELDS: &[&str] = &[
    "name",
    "pack",
    "ref",
    "description",
    "payload_schema",
    "parameters_schema",
    "tags",
    "metadata_file",
];

/// What a trigger file holds.
#[derive(Deserialize)]
struct RawTrigger {
    name: Option<String>,
    pack: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    description: Option<String>,
    payload_schema: Option<Value>,
}

/// The trigger types declared so far in one pack, by name, with the file that declared each.
#[derive(Default)]
pub struct Declared {
    by_name: BTreeMap<String, (PathBuf, TriggerType)>,
}

impl Declared {
    /// Records `trigger` declared at `path` in `doc`; a second declaration of its name is a
    /// problem there, naming the first file.
    pub fn declare(&mut self, ctx: &mut Ctx, doc: &YamlDoc, path: &[Seg], trigger: TriggerType) {
        if let Some((first, _)) = self.by_name.get(&trigger.name) {
            ctx.problems.push(doc.problem(
                path,
                format!(
                    "trigger type \"{}\" is already declared in {}",
                    trigger.name,
                    first.display()
                ),
            ));
            return;
        }
        self.by_name
            .insert(trigger.name.clone(), (doc.shown.clone(), trigger));
    }

    /// Every declared trigger type, plus one with the empty schema for each name in `listed`
    /// (the names sensors list) that nothing declares; sorted by name.
    pub fn finish<'a>(
        mut self,
        pack_ref: &str,
        listed: impl IntoIterator<Item = &'a str>,
    ) -> Vec<TriggerType> {
        for name in listed {
            if !self.by_name.contains_key(name) {
                let t = trigger_type(pack_ref, name, None, None);
                self.by_name.insert(name.to_string(), (PathBuf::new(), t));
            }
        }
        self.by_name.into_values().map(|(_, t)| t).collect()
    }
}

/// A trigger type of `pack_ref`; no schema is the empty schema (any payload).
pub fn trigger_type(
    pack_ref: &str,
    name: &str,
    description: Option<String>,
    payload_schema: Option<Value>,
) -> TriggerType {
    TriggerType {
        reference: format!("{pack_ref}.{name}"),
        pack: pack_ref.to_string(),
        name: name.to_string(),
        description,
        payload_schema: payload_schema.unwrap_or_else(|| Value::Object(Default::default())),
    }
}

/// Checks a `payload_schema` at `path` of `doc`: a JSON Schema object (or boolean) that
/// compiles. Records the problem and returns `false` otherwise.
pub fn check_payload_schema(ctx: &mut Ctx, doc: &YamlDoc, path: &[Seg], schema: &Value) -> bool {
    if !schema.is_object() && !schema.is_boolean() {
        ctx.problems.push(doc.problem(
            path,
            format!("payload_schema must be a JSON Schema object, not {schema}"),
        ));
        return false;
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        let at = e.instance_path().to_string();
        ctx.problems
            .push(doc.problem(path, format!("invalid payload_schema at \"{at}\": {e}")));
        return false;
    }
    if let Err(e) = jsonschema::validator_for(schema) {
        ctx.problems
            .push(doc.problem(path, format!("payload_schema cannot be compiled: {e}")));
        return false;
    }
    true
}

/// Checks a trigger name at `path` of `doc`.
pub fn check_trigger_name(ctx: &mut Ctx, doc: &YamlDoc, path: &[Seg], name: &str) -> bool {
    match check_name(name) {
        Ok(()) => true,
        Err(e) => {
            ctx.problems
                .push(doc.problem(path, name_message("trigger name", name, &e)));
            false
        }
    }
}

/// Reads one `triggers/*.yaml` file into `declared`.
pub fn load(ctx: &mut Ctx, shown: &Path, full: &Path, pack_ref: &str, declared: &mut Declared) {
    let Some(doc) = ctx.read(shown, full) else {
        return;
    };
    doc.unknown_keys(&[], TRIGGER_FIELDS, &mut ctx.warnings);
    let Ok(raw) = doc
        .typed::<RawTrigger>(&[], doc.value.clone())
        .map_err(|p| ctx.problems.push(p))
    else {
        return;
    };
    let before = ctx.problems.len();
    let name = match (raw.reference.as_deref(), raw.name) {
        (Some(r), n) => match r.split_once('.') {
            Some((p, n2)) if p == pack_ref && n.as_deref().is_none_or(|n| n == n2) => {
                Some(n2.to_string())
            }
            _ => {
                ctx.problems.push(doc.problem(
                    &[Seg::key("ref")],
                    format!("ref \"{r}\" must be \"{pack_ref}.<name>\""),
                ));
                None
            }
        },
        (None, Some(n)) => Some(n),
        (None, None) => {
            ctx.problems
                .push(doc.problem(&[], "trigger needs a name (or a ref)"));
            None
        }
    };
    if let Some(p) = raw.pack.as_deref().filter(|p| *p != pack_ref) {
        ctx.problems.push(doc.problem(
            &[Seg::key("pack")],
            format!("pack \"{p}\" is not this pack (\"{pack_ref}\")"),
        ));
    }
    let field = [Seg::key("name")];
    let name = name.filter(|n| check_trigger_name(ctx, &doc, &field, n));
    if let Some(schema) = &raw.payload_schema {
        check_payload_schema(ctx, &doc, &[Seg::key("payload_schema")], schema);
    }
    if ctx.problems.len() != before {
        return;
    }
    let Some(name) = name else { return };
    let t = trigger_type(pack_ref, &name, raw.description, raw.payload_schema);
    declared.declare(ctx, &doc, &[], t);
}
