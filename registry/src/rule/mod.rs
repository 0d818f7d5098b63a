//! Rules, ready to evaluate: an event's payload in, whether the rule matches and the action's
//! parameters out.
//!
//! One compiler serves both ends. The pack loader compiles every rule to refuse what cannot be
//! evaluated (a bad path, regular expression or template), reporting each problem at its field;
//! the registry compiles the registered rules once and evaluates each event against them. So a
//! rule that loaded always evaluates, and an event can only fail a rule through its payload (a
//! value a template needs is missing), which is reported with the path.
//!
//! - [`path`]: `trigger.<path>`, shared by criteria keys and templates.
//! - [`criteria`]: StackStorm's comparison operators.
//! - [`template`]: `{{ trigger.<path> | filter }}` in parameters.

pub mod criteria;
pub mod path;
pub mod template;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use attune_nats::events::{EventError, PayloadSchemas};
use attune_nats::{Rule, TriggerType};
use serde_json::Value;
use tracing::warn;

use criteria::Check;
use template::{RenderError, Template};

/// A rule with its criteria and parameter templates parsed.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule as registered.
    pub rule: Rule,
    checks: Vec<Check>,
    parameters: Vec<(String, Param)>,
}

/// One parameter value: literal, template, or a collection of either.
#[derive(Debug, Clone)]
enum Param {
    Literal(Value),
    Template(Template),
    List(Vec<Param>),
    Map(Vec<(String, Param)>),
}

/// A step of the path to a field of a rule file, for placing a problem on its line.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A mapping key.
    Key(String),
    /// A list index.
    Idx(usize),
}

/// One problem with a rule: where (from the top of the rule file) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleProblem {
    /// The field it is at, such as `criteria` → `trigger.x` → `pattern`.
    pub at: Vec<Step>,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl CompiledRule {
    /// Compiles `rule`, or returns every problem found in its criteria and parameters.
    pub fn new(rule: Rule) -> Result<CompiledRule, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let key = |k: &str| Step::Key(k.to_string());
        let mut checks = Vec::new();
        for (k, c) in &rule.criteria {
            match Check::new(k, c) {
                Ok(check) => checks.push(check),
                Err(message) => problems.push(RuleProblem {
                    at: vec![key("criteria"), key(k)],
                    message: format!("criterion {k}: {message}"),
                }),
            }
        }
        let mut parameters = Vec::new();
        for (name, v) in &rule.action.parameters {
            let mut at = vec![key("action"), key("parameters"), key(name)];
            parameters.push((name.clone(), compile(v, &mut at, &mut problems)));
        }
        if problems.is_empty() {
            Ok(CompiledRule {
                rule,
                checks,
                parameters,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether the rule is enabled and every criterion holds for `payload`.
    pub fn matches(&self, payload: &Value) -> bool {
        self.rule.enabled && self.checks.iter().all(|c| c.holds(payload))
    }

    /// The action's parameters for an event with this payload.
    pub fn parameters(
        &self,
        payload: &Value,
    ) -> Result<serde_json::Map<String, Value>, RenderError> {
        self.parameters
            .iter()
            .map(|(k, p)| Ok((k.clone(), render(p, payload)?)))
            .collect()
    }
}

/// The registered rules, compiled once, by trigger: what each event is evaluated against.
/// Replaced whole after every change to the store.
/// The trigger types' payload schemas live here too: an event is checked against its trigger
/// type before any rule sees it.
pub struct RuleSet {
    by_trigger: RwLock<Arc<HashMap<String, Vec<Arc<CompiledRule>>>>>,
    schemas: RwLock<Arc<PayloadSchemas>>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            by_trigger: RwLock::default(),
            schemas: RwLock::new(Arc::new(PayloadSchemas::new([]))),
        }
    }
}

impl RuleSet {
    /// Replaces the trigger types events are checked against.
    pub fn replace_triggers(&self, triggers: &[TriggerType]) {
        *self.schemas.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(PayloadSchemas::new(triggers));
    }

    /// Checks `payload` against the schema of trigger type `trigger`; an unknown trigger type
    /// is refused.
    pub fn check_payload(&self, trigger: &str, payload: &Value) -> Result<(), EventError> {
        let schemas = self
            .schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        schemas.check(trigger, payload)
    }

    /// Replaces the set with `rules`. A rule that no longer compiles (registered by an older
    /// version with other checks) is left out and logged.
    pub fn replace(&self, rules: &[Rule]) {
        let mut by_trigger: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        for rule in rules {
            match CompiledRule::new(rule.clone()) {
                Ok(c) => by_trigger
                    .entry(rule.trigger.clone())
                    .or_default()
                    .push(Arc::new(c)),
                Err(problems) => {
                    let why: Vec<String> = problems.into_iter().map(|p| p.message).collect();
                    warn!(rule = %rule.reference, problems = ?why, "registered rule left out");
                }
            }
        }
        *self.by_trigger.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_trigger);
    }

    /// The rules listening to `trigger` (`<pack>.<trigger>`), enabled or not.
    pub fn for_trigger(&self, trigger: &str) -> Vec<Arc<CompiledRule>> {
        self.by_trigger
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(trigger)
            .cloned()
            .unwrap_or_default()
    }
}

fn compile(v: &Value, at: &mut Vec<Step>, problems: &mut Vec<RuleProblem>) -> Param {
    match v {
        Value::String(s) => match Template::parse(s) {
            Ok(t) if t.is_plain() => Param::Literal(v.clone()),
            Ok(t) => Param::Template(t),
            Err(e) => {
                problems.push(RuleProblem {
                    at: at.clone(),
                    message: format!("parameter template {e}"),
                });
                Param::Literal(Value::Null)
            }
        },
        Value::Array(items) => Param::List(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    at.push(Step::Idx(i));
                    let p = compile(x, at, problems);
                    at.pop();
                    p
                })
                .collect(),
        ),
        Value::Object(m) => Param::Map(
            m.iter()
                .map(|(k, x)| {
                    at.push(Step::Key(k.clone()));
                    let p = compile(x, at, problems);
                    at.pop();
                    (k.clone(), p)
                })
                .collect(),
        ),
        other => Param::Literal(other.clone()),
    }
}

fn render(p: &Param, payload: &Value) -> Result<Value, RenderError> {
    Ok(match p {
        Param::Literal(v) => v.clone(),
        Param::Template(t) => t.render(payload)?,
        Param::List(items) => Value::Array(
            items
                .iter()
                .map(|x| render(x, payload))
                .collect::<Result<_, _>>()?,
        ),
        Param::Map(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render(x, payload)?)))
                .collect::<Result<_, RenderError>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_rule_matches_when_every_criterion_holds_and_renders_nested_parameters() {
        let r = CompiledRule::new(rule(json!({
            "ref": "p.r", "pack": "p", "name": "r", "trigger": "p.alert",
            "criteria": {
                "trigger.severity": {"type": "greaterthan", "pattern": 2},
                "trigger.host": {"type": "matchregex", "pattern": "db"}
            },
            "action": {"ref": "p.page", "parameters": {
                "who": "{{ trigger.host | upper }}",
                "level": "{{ trigger.severity }}",
                "tags": ["fixed", "{{ trigger.host }}"],
                "ctx": {"raw": "{{ trigger | tojson }}", "n": 1}
            }}
        })))
        .unwrap();
        let hit = json!({"severity": 3, "host": "db1"});
        assert!(r.matches(&hit));
        assert!(!r.matches(&json!({"severity": 2, "host": "db1"})));
        assert!(!r.matches(&json!({"severity": 3, "host": "web1"})));
        assert_eq!(
            Value::Object(r.parameters(&hit).unwrap()),
            json!({"who": "DB1", "level": 3, "tags": ["fixed", "db1"],
                   "ctx": {"raw": "{\"host\":\"db1\",\"severity\":3}", "n": 1}})
        );
        let mut off = r.rule.clone();
        off.enabled = false;
        assert!(!CompiledRule::new(off).unwrap().matches(&hit));
    }

    #[test]
    fn every_problem_is_reported_at_its_field() {
        let problems = CompiledRule::new(rule(json!({
            "ref": "p.r", "pack": "p", "name": "r", "trigger": "p.alert",
            "criteria": {"trigger.a": {"type": "regex", "pattern": "("}},
            "action": {"ref": "p.x", "parameters": {"l": ["ok", "{{ trigger.a | nope }}"]}}
        })))
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0].at,
            vec![Step::Key("criteria".into()), Step::Key("trigger.a".into())]
        );
        assert_eq!(
            problems[1].at,
            vec![
                Step::Key("action".into()),
                Step::Key("parameters".into()),
                Step::Key("l".into()),
                Step::Idx(1)
            ]
        );
        assert!(problems[1].message.contains("\"nope\" is not supported"));
    }
}
