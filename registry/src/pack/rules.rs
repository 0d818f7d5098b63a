//! Rule files (`rules/*.yaml`), in StackStorm's format: when an event of a trigger satisfies
//! the criteria, run an action with parameters taken from the event.
//!
//! A StackStorm rule loads unchanged (`name`, `pack`, `enabled`, `trigger.type`, `criteria`,
//! `action.ref`, `action.parameters`); what this format cannot honour (trigger parameters,
//! Jinja beyond paths and the common filters, operators we lack) is refused at its line rather
//! than ignored. Criteria and templates are checked by the same compiler the registry evaluates
//! events with ([`crate::rule`]). See `docs/pack-format.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use attune_nats::name::{check_action_ref, check_name};
use attune_nats::{Criterion, Rule, RuleAction};
use serde::Deserialize;

use super::context::Ctx;
use super::locate::Seg;
use super::problem::name_message;
use crate::rule::{CompiledRule, Step};

/// The fields a rule file may have; any other is warned about as a likely typo.
const RULE_FIELDS: &[&str] = &[
    "name",
    "pack",
    "ref",
    "description",
    "enabled",
    "trigger",
    "criteria",
    "action",
    "tags",
    "metadata_file",
];

/// What a rule file holds.
#[derive(Deserialize)]
struct RawRule {
    name: Option<String>,
    pack: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    trigger: Option<RawTrigger>,
    #[serde(default)]
    criteria: BTreeMap<String, Criterion>,
    action: Option<RawAction>,
}

#[derive(Deserialize)]
struct RawTrigger {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
}

/// What the rest of the pack offers a rule: its trigger types and its actions, to
/// check the rules that name the pack's own.
pub struct Offered<'a> {
    /// Trigger type names (without the pack): declared in `triggers/` or listed by a sensor.
    pub triggers: BTreeSet<&'a str>,
    /// Action refs the pack defines.
    pub actions: BTreeSet<&'a str>,
    /// Whether every action and sensor file loaded; when one did not, a rule naming it would
    /// only repeat that file's problem, so the pack's own refs are not checked.
    pub complete: bool,
}

/// Reads and checks one rule file; `Some` only when it has no problem.
pub fn load(
    ctx: &mut Ctx,
    shown: &Path,
    full: &Path,
    pack_ref: &str,
    offered: &Offered<'_>,
) -> Option<Rule> {
    let doc = ctx.read(shown, full)?;
    doc.unknown_keys(&[], RULE_FIELDS, &mut ctx.warnings);
    let raw: RawRule = doc
        .typed(&[], doc.value.clone())
        .map_err(|p| ctx.problems.push(p))
        .ok()?;
    let before = ctx.problems.len();
    let mut problem = |at: &[Seg], message: String| ctx.problems.push(doc.problem(at, message));

    // The name: `name`, or the part after the pack in `ref`.
    let from_ref = raw
        .reference
        .as_deref()
        .map(|r| r.split_once('.').map_or(r, |(_, n)| n));
    let name = raw.name.clone().or(from_ref.map(str::to_string));
    match &name {
        None => problem(&[], "a rule needs a name".into()),
        Some(n) => {
            if let Err(e) = check_name(n) {
                problem(&[Seg::key("name")], name_message("rule name", n, &e));
            }
        }
    }
    if let Some(p) = raw.pack.as_deref().filter(|p| *p != pack_ref) {
        problem(
            &[Seg::key("pack")],
            format!("pack \"{p}\" is not this pack's ref \"{pack_ref}\""),
        );
    }
    if let (Some(r), Some(n)) = (raw.reference.as_deref(), &name) {
        let expected = format!("{pack_ref}.{n}");
        if r != expected {
            problem(
                &[Seg::key("ref")],
                format!("ref \"{r}\" does not match the pack and name (\"{expected}\")"),
            );
        }
    }

    let trigger = match &raw.trigger {
        None => {
            problem(
                &[],
                "a rule needs a trigger: {type: <pack>.<trigger>}".into(),
            );
            None
        }
        Some(t) => {
            if !t.parameters.is_empty() {
                problem(
                    &[Seg::key("trigger"), Seg::key("parameters")],
                    "trigger parameters are not supported: filter events with criteria instead"
                        .into(),
                );
            }
            let at = [Seg::key("trigger"), Seg::key("type")];
            match t.kind.as_deref() {
                None => {
                    problem(
                        &[Seg::key("trigger")],
                        "trigger needs a type: <pack>.<trigger>".into(),
                    );
                    None
                }
                Some(kind) => match check_action_ref(kind) {
                    Err(e) => {
                        problem(&at, name_message("trigger type", kind, &e));
                        None
                    }
                    Ok(()) => {
                        let (pack, trig) = kind.split_once('.').unwrap_or((kind, ""));
                        if offered.complete && pack == pack_ref && !offered.triggers.contains(trig)
                        {
                            let known: Vec<&str> = offered.triggers.iter().copied().collect();
                            problem(
                                &at,
                                format!(
                                    "trigger \"{kind}\": this pack has no trigger type \"{trig}\" (declared: {})",
                                    if known.is_empty() { "none".into() } else { known.join(", ") }
                                ),
                            );
                        }
                        Some(kind.to_string())
                    }
                },
            }
        }
    };

    let action = match raw.action {
        None => {
            problem(&[], "a rule needs an action: {ref: <pack>.<action>}".into());
            None
        }
        Some(RawAction {
            reference: None, ..
        }) => {
            problem(
                &[Seg::key("action")],
                "action needs a ref: <pack>.<action>".into(),
            );
            None
        }
        Some(RawAction {
            reference: Some(r),
            parameters,
        }) => {
            let at = [Seg::key("action"), Seg::key("ref")];
            if let Err(e) = check_action_ref(&r) {
                problem(&at, name_message("action ref", &r, &e));
            } else if offered.complete
                && r.split_once('.').is_some_and(|(p, _)| p == pack_ref)
                && !offered.actions.contains(r.as_str())
            {
                problem(&at, format!("action \"{r}\" is not defined by this pack"));
            }
            Some(RuleAction {
                reference: r,
                parameters,
            })
        }
    };

    let (Some(name), Some(trigger), Some(action)) = (name, trigger, action) else {
        return None;
    };
    let rule = Rule {
        reference: format!("{pack_ref}.{name}"),
        pack: pack_ref.to_string(),
        name,
        description: raw.description,
        enabled: raw.enabled.unwrap_or(true),
        trigger,
        criteria: raw.criteria,
        action,
    };
    match CompiledRule::new(rule) {
        Ok(compiled) if ctx.problems.len() == before => Some(compiled.rule),
        Ok(_) => None,
        Err(problems) => {
            for p in problems {
                let at: Vec<Seg> =
                    p.at.into_iter()
                        .map(|s| match s {
                            Step::Key(k) => Seg::Key(k),
                            Step::Idx(i) => Seg::Idx(i),
                        })
                        .collect();
                ctx.problems.push(doc.problem(&at, p.message));
            }
            None
        }
    }
}
