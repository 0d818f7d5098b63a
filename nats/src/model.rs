//! The registered model: runtimes, their versions, actions, sensors and packs, as the registry
//! stores them and publishes them on KV, and as runners read them back.
//!
//! Runtime definitions keep the field names of the pack YAML, so a runtime file deserialises
//! straight into [`Runtime`]. Actions are normalised by the loader (full ref, resolved runtime,
//! parameters as JSON Schema) before they become an [`Action`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::jobs::RetryPolicy;
use crate::version::{Candidate, IMPLICIT_VERSION};

/// The timeout of an execution when neither the request nor the action sets one. Runners
/// enforce it and clients wait for it (plus transport grace): stated once so they agree.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// The timeout an execution runs under: the action's (else [`DEFAULT_ACTION_TIMEOUT`]), or the
/// request's when that is shorter. A request may lower its timeout, never raise it: the action's
/// author decides how long its code may hold a slot. Values that are not positive finite numbers
/// are ignored (requests carrying them are refused at the edge).
pub fn effective_timeout(requested: Option<f64>, action: Option<f64>) -> Duration {
    let usable = |t: &f64| t.is_finite() && *t > 0.0;
    let ceiling = action
        .filter(usable)
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .unwrap_or(DEFAULT_ACTION_TIMEOUT);
    requested
        .filter(usable)
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .map_or(ceiling, |t| t.min(ceiling))
}

fn yes() -> bool {
    true
}

/// A runtime (python, node, shell, …) with the versions a pack declares for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// Full reference, `<pack>.<name>` (`core.python`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The name actions use in `runner_type` and the invoke subject uses (`python`).
    pub name: String,
    /// What this runtime is, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Other names that `runner_type` may use (`python3`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The base config; used only by the implicit version of a runtime without `versions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_config: Option<ExecutionConfig>,
    /// How to verify the base binary.
    #[serde(default)]
    pub distributions: Distributions,
    /// The versions; empty in a YAML file means one implicit version named `default`.
    #[serde(default)]
    pub versions: Vec<RuntimeVersion>,
    /// The pack that defines this runtime (filled by the loader).
    #[serde(default)]
    pub pack: String,
}

impl Runtime {
    /// Whether `name` is this runtime's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }

    /// Whether `name` is this runtime's name or one of its aliases, in any letter case: how an
    /// operator's list of runtimes to serve (`ATTUNE_WORKER_RUNTIMES=Python,SH`) is matched. Pack
    /// files stay case-sensitive; an environment variable typed by hand should not make a runner
    /// that silently serves nothing.
    pub fn answers_to_any_case(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// Gives a version-less runtime its single implicit `default` version, carrying the base
    /// config, so that everything downstream sees versions uniformly.
    pub fn normalize(&mut self) {
        if self.versions.is_empty() {
            self.versions.push(RuntimeVersion {
                version: IMPLICIT_VERSION.to_string(),
                is_default: true,
                meta: Value::Null,
                distributions: self.distributions.clone(),
                execution_config: self.execution_config.clone(),
                enabled: true,
                available: false,
                verified_at: None,
                detected_versions: Vec::new(),
            });
        }
    }

    /// Whether the runtime declares no versions of its own (only the implicit one).
    pub fn is_versionless(&self) -> bool {
        self.versions.is_empty()
            || (self.versions.len() == 1 && self.versions[0].version == IMPLICIT_VERSION)
    }

    /// One version by name.
    pub fn version(&self, name: &str) -> Option<&RuntimeVersion> {
        self.versions.iter().find(|v| v.version == name)
    }

    /// The versions as selection candidates, with their current state.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.versions
            .iter()
            .map(|v| Candidate::new(&v.version, v.is_default, v.enabled, v.available))
            .collect()
    }
}

/// One version of a runtime, with its own complete config and its live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeVersion {
    /// The version as declared (`3.12`); also its subject token.
    pub version: String,
    /// Chosen when an action gives no constraint.
    #[serde(default)]
    pub is_default: bool,
    /// Free-form metadata (`eol`, …).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub meta: Value,
    /// How to verify this version's binary.
    #[serde(default)]
    pub distributions: Distributions,
    /// The complete config for this version; never merged with the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_config: Option<ExecutionConfig>,
    /// Whether an operator allows it to be selected.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether at least one live runner has verified it (kept by the registry).
    #[serde(default)]
    pub available: bool,
    /// Time of the newest runner report that verified it (kept by the registry; RFC 3339 on
    /// the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub verified_at: Option<OffsetDateTime>,
    /// What the interpreters of the live runners that serve it report (`3.12.4`, `3.13.0-rc1`),
    /// sorted (kept by the registry). A pre-release here means the version is served by a
    /// pre-release interpreter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detected_versions: Vec<String>,
}

/// Verification settings (`distributions.verification`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distributions {
    /// How a runner proves it can run this version.
    #[serde(default)]
    pub verification: Verification,
}

/// The commands that verify a binary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Tried in `priority` order; the first that passes pins its binary.
    #[serde(default)]
    pub commands: Vec<VerificationCommand>,
}

/// One verification command: run `binary args…`, check its exit code and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationCommand {
    /// A bare name (resolved on the runner's PATH once) or an absolute path.
    pub binary: String,
    /// Arguments, typically `["--version"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// The exit code that means success.
    #[serde(default)]
    pub exit_code: i32,
    /// A regex that stdout and stderr together must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Lower runs first.
    #[serde(default)]
    pub priority: i32,
}

/// How to run code of one runtime version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionConfig {
    /// The interpreter and its fixed arguments.
    pub interpreter: Interpreter,
    /// An isolated per-pack environment (virtualenv, node_modules), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentConfig>,
    /// How to install a pack's dependencies into the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Dependencies>,
    /// Variables set for every execution; values may use templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, EnvVar>,
    /// How a runner keeps interpreters of this version started ahead of invocations; absent:
    /// every invocation starts its interpreter (cold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmConfig>,
}

/// A runtime version's warm path: which of the runner's built-in launchers keeps its
/// interpreters started. Named in the runtime's YAML, so a runtime opts in by configuration and
/// no runner code knows runtime names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmConfig {
    /// The launcher.
    pub launcher: WarmLauncher,
}

/// The runner's built-in warm launchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmLauncher {
    /// A CPython *zygote*: one interpreter per environment, preloaded, that forks a fresh child
    /// per invocation.
    PythonFork,
    /// Node.js: a few single-use processes started ahead, each waiting for its script.
    NodeSpawn,
}

impl WarmLauncher {
    /// The name used in YAML and shown by `attune runner list`.
    pub fn as_str(self) -> &'static str {
        match self {
            WarmLauncher::PythonFork => "python_fork",
            WarmLauncher::NodeSpawn => "node_spawn",
        }
    }
}

/// The interpreter binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interpreter {
    /// Bare name or absolute path; a runner pins the verified absolute path.
    pub binary: String,
    /// Arguments placed before the script path (`-u`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The extension of this runtime's scripts (`.py`), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
}

/// Kinds of per-pack environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvType {
    /// A Python virtualenv.
    Virtualenv,
    /// A node_modules directory.
    NodeModules,
    /// No environment: the pinned interpreter runs directly.
    #[default]
    None,
}

/// How to create a per-pack environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentConfig {
    /// What kind of environment this is.
    #[serde(default)]
    pub env_type: EnvType,
    /// Name of the directory inside the pack's environment dir (informational for the runner,
    /// which owns the layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_name: Option<String>,
    /// Command that creates the environment; templates `{interpreter}`, `{env_dir}`.
    #[serde(default)]
    pub create_command: Vec<String>,
    /// The interpreter inside the environment (`{env_dir}/bin/python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter_path: Option<String>,
}

/// How to install dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependencies {
    /// The manifest in the pack (`requirements.txt`, `package.json`).
    pub manifest_file: String,
    /// Command that installs it; templates `{interpreter}`, `{manifest_path}`, `{env_dir}`,
    /// `{pack_dir}`.
    #[serde(default)]
    pub install_command: Vec<String>,
    /// A lock file next to the manifest (`package-lock.json`) whose changes, like the
    /// manifest's, reinstall the dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_file: Option<String>,
}

/// An environment variable: a plain value (set) or an operation on the inherited value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvVar {
    /// Set to this value.
    Value(String),
    /// Set, prepend or append.
    Op {
        /// The value (templates allowed).
        value: String,
        /// What to do with an existing value.
        #[serde(default)]
        operation: EnvOp,
        /// Joins old and new for prepend/append.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        separator: Option<String>,
    },
}

/// The operation of an [`EnvVar`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvOp {
    /// Replace.
    #[default]
    Set,
    /// Put before the existing value.
    Prepend,
    /// Put after the existing value.
    Append,
}

/// How parameters reach the action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterDelivery {
    /// Written to the process's stdin, then stdin is closed.
    #[default]
    Stdin,
    /// Written to a 0400 file whose path is in `ATTUNE_PARAMETERS_FILE`.
    File,
}

/// How parameters are serialised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterFormat {
    /// One JSON object.
    #[default]
    Json,
    /// `KEY='value'` lines.
    Dotenv,
    /// A YAML mapping.
    Yaml,
}

/// How the action's stdout becomes its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// The text itself.
    #[default]
    Text,
    /// All of stdout as JSON, else its last line.
    Json,
    /// All of stdout as YAML.
    Yaml,
    /// One JSON value per line, as an array.
    Jsonl,
}

/// A registered action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Full reference, `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The pack it belongs to.
    pub pack: String,
    /// The name within the pack.
    pub name: String,
    /// What it does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The `runner_type` as written (a runtime name or alias).
    pub runner_type: String,
    /// The canonical name of the runtime it resolved to (`python` for `python3`).
    pub runtime: String,
    /// The script, relative to the pack's `actions/` directory.
    pub entry_point: String,
    /// The version constraint as written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The parameters as a JSON Schema object (flat maps are normalised to this).
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// JSON Schema of the result, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// How parameters reach the process.
    #[serde(default)]
    pub parameter_delivery: ParameterDelivery,
    /// How parameters are serialised.
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    /// How stdout becomes the result.
    #[serde(default)]
    pub output_format: OutputFormat,
    /// The default timeout of one execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Disabled actions are rejected.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How asynchronous jobs of this action are retried; `None`: one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// How many executions may run at once across all runners; `None`: no limit but the
    /// runners' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::concurrency::Concurrency>,
    /// Whether this action may run in a pre-started (warm) interpreter when its runtime has a
    /// warm path; `false` starts a fresh interpreter every time.
    #[serde(default = "yes")]
    pub warm: bool,
}

/// The schema of an action without parameters.
pub fn empty_object_schema() -> Value {
    serde_json::json!({ "type": "object", "properties": {} })
}

impl Action {
    /// The timeout one execution of this action runs under, given what the request asked for.
    pub fn timeout(&self, requested: Option<f64>) -> Duration {
        effective_timeout(requested, self.timeout_seconds)
    }

    /// Names of parameters marked `secret: true`; their values never reach logs.
    pub fn secret_parameters(&self) -> Vec<String> {
        self.parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, p)| p.get("secret").and_then(Value::as_bool) == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A registered sensor: a long-running process whose stdout lines are events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    /// Full reference, `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The pack it belongs to.
    pub pack: String,
    /// The name within the pack.
    pub name: String,
    /// What it watches, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Runtime name or alias.
    pub runner_type: String,
    /// Canonical runtime name.
    pub runtime: String,
    /// Script under `sensors/`.
    pub entry_point: String,
    /// Version constraint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The trigger names it emits (`attune.events.<pack>.<trigger>`), all of its own pack.
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Seconds between runs of a polling sensor, which runs once per interval and exits;
    /// `None`: a long-running sensor, restarted when it exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<u64>,
    /// Disabled sensors are not started.
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A trigger type: the name events are published under and the JSON Schema their payload must
/// satisfy. Declared in `triggers/*.yaml` or in a sensor's `trigger_types`; a name a sensor
/// lists without declaring has the empty schema (any payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerType {
    /// Full reference, `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The pack it belongs to.
    pub pack: String,
    /// The name within the pack.
    pub name: String,
    /// What an event of it means, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of an event's payload (`{}`: anything).
    #[serde(default = "empty_schema")]
    pub payload_schema: Value,
}

fn empty_schema() -> Value {
    Value::Object(Default::default())
}

/// A registered rule, in StackStorm's format: when an event of `trigger` satisfies every
/// criterion, the registry enqueues `action` with parameters rendered from the event's payload.
/// Criteria and templates are checked when the pack loads, so a registered rule can always be
/// evaluated. See `docs/pack-format.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Full reference, `<pack>.<name>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The pack it belongs to.
    pub pack: String,
    /// The name within the pack.
    pub name: String,
    /// What it automates, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Disabled rules match nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The trigger it listens to, `<pack>.<trigger>`.
    pub trigger: String,
    /// Every one must hold, keyed by payload path (`trigger.<path>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub criteria: BTreeMap<String, Criterion>,
    /// What runs when it matches.
    pub action: RuleAction,
}

/// One condition of a rule on one value of the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criterion {
    /// How the value is compared.
    #[serde(rename = "type")]
    pub op: CriterionOp,
    /// What it is compared with; absent only for `exists` and `nexists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Value>,
}

/// The comparisons a criterion can make: StackStorm's operators, by their long names (the
/// short ones, `eq`, `neq`, `lt`…, are read as aliases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CriterionOp {
    /// Equal, as JSON values (1 equals 1.0).
    #[serde(alias = "eq")]
    Equals,
    /// Not equal.
    #[serde(alias = "neq")]
    Nequals,
    /// Equal as text, ignoring case.
    #[serde(alias = "ieq")]
    Iequals,
    /// Below, for two numbers or two strings.
    #[serde(alias = "lt")]
    Lessthan,
    /// Above, for two numbers or two strings.
    #[serde(alias = "gt")]
    Greaterthan,
    /// The regular expression matches at the start of the text (`.` matches newlines).
    Matchregex,
    /// The regular expression matches anywhere in the text.
    Regex,
    /// As `regex`, ignoring case.
    Iregex,
    /// Substring of a string, element of a list, or key of an object.
    Contains,
    /// As `contains`, ignoring case (strings only).
    Icontains,
    /// Not `contains`.
    Ncontains,
    /// Not `icontains`.
    Incontains,
    /// The text starts with the pattern.
    Startswith,
    /// As `startswith`, ignoring case.
    Istartswith,
    /// The text ends with the pattern.
    Endswith,
    /// As `endswith`, ignoring case.
    Iendswith,
    /// The value is in the pattern (a list, or a string it is a substring of).
    #[serde(alias = "in")]
    Inside,
    /// Not `inside`.
    #[serde(alias = "nin")]
    Ninside,
    /// The path leads to a value that is not null.
    Exists,
    /// The path leads nowhere, or to null.
    Nexists,
}

impl CriterionOp {
    /// Every operator by its long name, as written in rules and docs.
    pub const ALL: &'static [(&'static str, CriterionOp)] = &[
        ("equals", CriterionOp::Equals),
        ("nequals", CriterionOp::Nequals),
        ("iequals", CriterionOp::Iequals),
        ("lessthan", CriterionOp::Lessthan),
        ("greaterthan", CriterionOp::Greaterthan),
        ("matchregex", CriterionOp::Matchregex),
        ("regex", CriterionOp::Regex),
        ("iregex", CriterionOp::Iregex),
        ("contains", CriterionOp::Contains),
        ("icontains", CriterionOp::Icontains),
        ("ncontains", CriterionOp::Ncontains),
        ("incontains", CriterionOp::Incontains),
        ("startswith", CriterionOp::Startswith),
        ("istartswith", CriterionOp::Istartswith),
        ("endswith", CriterionOp::Endswith),
        ("iendswith", CriterionOp::Iendswith),
        ("inside", CriterionOp::Inside),
        ("ninside", CriterionOp::Ninside),
        ("exists", CriterionOp::Exists),
        ("nexists", CriterionOp::Nexists),
    ];

    /// Whether it compares with a pattern (all but `exists` and `nexists`).
    pub fn needs_pattern(self) -> bool {
        !matches!(self, CriterionOp::Exists | CriterionOp::Nexists)
    }
}

/// The action a rule runs, and its parameters: values, or `{{ trigger.<path> }}` templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleAction {
    /// The action, `<pack>.<action>`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Parameters, rendered from the payload of each matching event.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, Value>,
}

/// A registered pack's metadata, as published on `attune-packs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackMeta {
    /// The pack's ref (`core`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Human title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What the pack offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The pack's semver version.
    pub version: String,
    /// Who maintains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Digest of the pack archive; also its object name in `attune-pack-files`.
    #[serde(default)]
    pub digest: String,
    /// Runtime names the pack defines.
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// Action refs the pack defines.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Sensor refs the pack defines.
    #[serde(default)]
    pub sensors: Vec<String>,
    /// Rule refs the pack defines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The pack's trigger types, with their payload schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trigger_types: Vec<TriggerType>,
    /// The full definitions of `sensors`: runners start them from here, so a sensor follows its
    /// pack's digest (a pack update restarts it with the new code).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensor_specs: Vec<Sensor>,
    /// Modules imported once per warm interpreter, by runtime name (`python: [json]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preload: BTreeMap<String, Vec<String>>,
    /// Time of the last registration (RFC 3339 on the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub registered_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_lower_its_timeout_never_raise_it() {
        let s = Duration::from_secs;
        assert_eq!(effective_timeout(None, None), DEFAULT_ACTION_TIMEOUT);
        assert_eq!(effective_timeout(None, Some(10.0)), s(10));
        assert_eq!(effective_timeout(Some(2.0), Some(10.0)), s(2));
        assert_eq!(effective_timeout(Some(50.0), Some(10.0)), s(10));
        assert_eq!(effective_timeout(Some(1e300), None), DEFAULT_ACTION_TIMEOUT);
        assert_eq!(effective_timeout(Some(-1.0), Some(10.0)), s(10));
        assert_eq!(
            effective_timeout(Some(f64::NAN), Some(1e300)),
            DEFAULT_ACTION_TIMEOUT
        );
    }

    #[test]
    fn env_var_accepts_string_or_operation() {
        let plain: EnvVar = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(plain, EnvVar::Value("x".into()));
        let op: EnvVar =
            serde_json::from_str(r#"{"value":"a","operation":"prepend","separator":":"}"#).unwrap();
        assert!(matches!(
            op,
            EnvVar::Op {
                operation: EnvOp::Prepend,
                ..
            }
        ));
    }

    #[test]
    fn versionless_runtime_gets_implicit_default() {
        let mut rt: Runtime =
            serde_json::from_str(r#"{"ref":"core.shell","name":"shell"}"#).unwrap();
        assert!(rt.is_versionless());
        rt.normalize();
        assert_eq!(rt.versions.len(), 1);
        assert_eq!(rt.versions[0].version, IMPLICIT_VERSION);
        assert!(rt.versions[0].is_default && rt.versions[0].enabled);
        assert!(rt.is_versionless());
    }

    #[test]
    fn secret_parameters_are_found() {
        let action = Action {
            reference: "p.a".into(),
            pack: "p".into(),
            name: "a".into(),
            description: None,
            runner_type: "shell".into(),
            runtime: "shell".into(),
            entry_point: "a.sh".into(),
            runtime_version: None,
            parameters: serde_json::json!({"type":"object","properties":{
                "token":{"type":"string","secret":true},"name":{"type":"string"}}}),
            output: None,
            parameter_delivery: Default::default(),
            parameter_format: Default::default(),
            output_format: Default::default(),
            timeout_seconds: None,
            enabled: true,
            retry: None,
            concurrency: None,
            warm: true,
        };
        assert_eq!(action.secret_parameters(), vec!["token".to_string()]);
    }
}
