//! Every NATS subject, queue group, KV bucket, object store and stream name (docs/protocol.md).
//!
//! Nothing else in the project spells a subject: it asks a [`Namespace`], which carries the
//! configurable prefix (`attune` by default), so two Attune installations can share one NATS
//! account without seeing each other.

use std::fmt;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "attune";

/// Queue group shared by all runners serving one version: one request reaches one runner.
pub const RUNNER_QUEUE_GROUP: &str = "attune";
/// Queue group of the registry's by-name router.
pub const ROUTER_QUEUE_GROUP: &str = "attune-router";
/// Micro-service name of the runners (`nats micro ls` shows it).
pub const RUNNER_SERVICE: &str = "attune-runner";
/// Micro-service name of the registry.
pub const REGISTRY_SERVICE: &str = "attune-registry";
/// Queue group of the registry API's endpoints: one request reaches one registry. It is the
/// micro-service default (`q`) the registry used before, so registries of both versions share
/// the load during an upgrade instead of each answering every request.
pub const REGISTRY_QUEUE_GROUP: &str = "q";
/// The prefix of the micro-service discovery subjects (`$SRV.PING.<name>`).
pub const SERVICE_API: &str = "$SRV";
/// The micro-service discovery verbs a service answers.
pub const SERVICE_VERBS: [&str; 3] = ["PING", "INFO", "STATS"];
/// The registry's NATS connection name, as the server lists it (`/connz`), so an operator (and
/// a cluster test) can tell which node it is connected to.
pub const REGISTRY_CONNECTION_NAME: &str = "attune-registry";

/// A runner's NATS connection name (`attune-runner <name>`), as the server lists it (`/connz`):
/// which node each runner is connected to, by the name it heartbeats with.
pub fn runner_connection_name(runner: &str) -> String {
    format!("{RUNNER_SERVICE} {runner}")
}

/// Header set on rejections, as the NATS micro-service protocol defines it.
pub const HEADER_SERVICE_ERROR: &str = "Nats-Service-Error";
/// Numeric companion of [`HEADER_SERVICE_ERROR`].
pub const HEADER_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// JetStream de-duplication header; async invocations use their id.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// The prefix of the reply subject JetStream gives every message a consumer delivers (its
/// acknowledgement subject). A "request" whose reply is under it is a stored message a consumer
/// replayed, never a caller's request.
pub const JS_ACK_PREFIX: &str = "$JS.ACK.";

/// A subject prefix that cannot form valid subjects or bucket names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid subject prefix \"{0}\": use letters, digits, '-', '_' and single dots between them"
)]
pub struct InvalidPrefix(pub String);

/// A name that cannot be used as one subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{value}\" cannot be used as a {what} in a NATS subject: {reason}")]
pub struct InvalidToken {
    /// What the value names (`runtime name`, `version`, …).
    pub what: &'static str,
    /// The offending value.
    pub value: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Checks that `value` can stand in a subject. `allow_dots` lets it span several tokens, as a
/// version (`3.12`) or an action ref (`core.echo`) does.
pub fn check_token(what: &'static str, value: &str, allow_dots: bool) -> Result<(), InvalidToken> {
    let err = |reason| InvalidToken {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(err("it is empty"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c == '*' || c == '>')
    {
        return Err(err("whitespace, '*' and '>' are not allowed"));
    }
    if value.contains('.') && !allow_dots {
        return Err(err("dots are not allowed"));
    }
    if value.starts_with('.') || value.ends_with('.') || value.contains("..") {
        return Err(err(
            "empty tokens (leading, trailing or double dots) are not allowed",
        ));
    }
    Ok(())
}

/// The registry API operations (`attune.registry.<operation>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistryOp {
    /// Register or update a pack (directory on the registry host or an uploaded archive).
    PackRegister,
    /// List registered packs.
    PackList,
    /// One pack with its runtimes and actions.
    PackGet,
    /// Remove a pack and everything it defined.
    PackRemove,
    /// List runtimes with their versions and state.
    RuntimeList,
    /// One runtime.
    RuntimeGet,
    /// Make a version the runtime's default.
    VersionSetDefault,
    /// Enable or disable a version.
    VersionSetEnabled,
    /// List actions.
    ActionList,
    /// One action.
    ActionGet,
    /// Which version and subject an action would use, and why.
    Resolve,
    /// Live runners from their heartbeats.
    RunnerList,
    /// List rules.
    RuleList,
    /// One rule.
    RuleGet,
    /// Enable or disable a rule.
    RuleSetEnabled,
    /// List sensors, with where each runs.
    SensorList,
    /// One sensor, with where it runs.
    SensorGet,
    /// Enable or disable a sensor.
    SensorSetEnabled,
    /// List trigger types.
    TriggerList,
    /// One trigger type.
    TriggerGet,
}

impl RegistryOp {
    /// Every operation, in documentation order.
    pub const ALL: [RegistryOp; 20] = [
        RegistryOp::PackRegister,
        RegistryOp::PackList,
        RegistryOp::PackGet,
        RegistryOp::PackRemove,
        RegistryOp::RuntimeList,
        RegistryOp::RuntimeGet,
        RegistryOp::VersionSetDefault,
        RegistryOp::VersionSetEnabled,
        RegistryOp::ActionList,
        RegistryOp::ActionGet,
        RegistryOp::Resolve,
        RegistryOp::RunnerList,
        RegistryOp::RuleList,
        RegistryOp::RuleGet,
        RegistryOp::RuleSetEnabled,
        RegistryOp::SensorList,
        RegistryOp::SensorGet,
        RegistryOp::SensorSetEnabled,
        RegistryOp::TriggerList,
        RegistryOp::TriggerGet,
    ];

    /// The operation's subject suffix (`pack.register`).
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryOp::PackRegister => "pack.register",
            RegistryOp::PackList => "pack.list",
            RegistryOp::PackGet => "pack.get",
            RegistryOp::PackRemove => "pack.remove",
            RegistryOp::RuntimeList => "runtime.list",
            RegistryOp::RuntimeGet => "runtime.get",
            RegistryOp::VersionSetDefault => "version.set_default",
            RegistryOp::VersionSetEnabled => "version.set_enabled",
            RegistryOp::ActionList => "action.list",
            RegistryOp::ActionGet => "action.get",
            RegistryOp::Resolve => "resolve",
            RegistryOp::RunnerList => "runner.list",
            RegistryOp::RuleList => "rule.list",
            RegistryOp::RuleGet => "rule.get",
            RegistryOp::RuleSetEnabled => "rule.set_enabled",
            RegistryOp::SensorList => "sensor.list",
            RegistryOp::SensorGet => "sensor.get",
            RegistryOp::SensorSetEnabled => "sensor.set_enabled",
            RegistryOp::TriggerList => "trigger.list",
            RegistryOp::TriggerGet => "trigger.get",
        }
    }

    /// Whether the operation changes what is registered. Only the `admin` role may call these
    /// (see [`crate::roles`]); everything else only reads.
    pub fn changes_state(self) -> bool {
        matches!(
            self,
            RegistryOp::PackRegister
                | RegistryOp::PackRemove
                | RegistryOp::VersionSetDefault
                | RegistryOp::VersionSetEnabled
                | RegistryOp::RuleSetEnabled
                | RegistryOp::SensorSetEnabled
        )
    }

    /// The operation named by a subject suffix.
    pub fn from_suffix(suffix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == suffix)
    }
}

impl fmt::Display for RegistryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// All names derived from one prefix: subjects, buckets, object store and stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: String,
    /// The prefix with dots turned into dashes, for bucket and stream names (which forbid dots).
    flat: String,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::new(DEFAULT_PREFIX).expect("the default prefix is valid")
    }
}

impl Namespace {
    /// A namespace for `prefix`, which may have several dot-separated tokens (`acme.attune`).
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = !prefix.is_empty()
            && prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(InvalidPrefix(prefix.to_string()));
        }
        Ok(Namespace {
            prefix: prefix.to_string(),
            flat: prefix.replace('.', "-"),
        })
    }

    /// The prefix as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    // ---- subjects ----

    /// `attune.invoke.<runtime>.<version>`: where runners serve one verified version.
    pub fn invoke(&self, runtime: &str, version: &str) -> String {
        format!("{}.invoke.{runtime}.{version}", self.prefix)
    }

    /// Every invoke subject: what runners serve (in their queue group) and clients may call.
    pub fn invoke_all(&self) -> String {
        format!("{}.invoke.>", self.prefix)
    }

    /// The invoke subjects of every version of `runtime`.
    pub fn invoke_runtime(&self, runtime: &str) -> String {
        format!("{}.invoke.{runtime}.>", self.prefix)
    }

    /// Splits an invoke subject back into `(runtime, version)`.
    pub fn parse_invoke<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = self.strip(subject, "invoke")?;
        let (runtime, version) = rest.split_once('.')?;
        (!runtime.is_empty() && !version.is_empty()).then_some((runtime, version))
    }

    /// `attune.action.<pack>.<action>`: invoke by name through the router.
    pub fn action(&self, action_ref: &str) -> String {
        format!("{}.action.{action_ref}", self.prefix)
    }

    /// The router's subscription: every by-name subject.
    pub fn action_all(&self) -> String {
        format!("{}.action.>", self.prefix)
    }

    /// The action ref (`core.echo`) of a by-name subject.
    pub fn parse_action<'a>(&self, subject: &'a str) -> Option<&'a str> {
        self.strip(subject, "action").filter(|r| r.contains('.'))
    }

    /// `attune.registry.<operation>`.
    pub fn registry(&self, op: RegistryOp) -> String {
        format!("{}.registry.{}", self.prefix, op.as_str())
    }

    /// `attune.jobs.<runtime>.<version>`: durable asynchronous invocations.
    pub fn jobs(&self, runtime: &str, version: &str) -> String {
        format!("{}.jobs.{runtime}.{version}", self.prefix)
    }

    /// Every job subject, as the jobs stream captures them.
    pub fn jobs_all(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    /// Splits a job subject back into `(runtime, version)`.
    pub fn parse_jobs<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = self.strip(subject, "jobs")?;
        let (runtime, version) = rest.split_once('.')?;
        (!runtime.is_empty() && !version.is_empty()).then_some((runtime, version))
    }

    /// `attune.results.<id>`: where an asynchronous invocation's result is announced.
    pub fn results(&self, id: &str) -> String {
        format!("{}.results.{id}", self.prefix)
    }

    /// Every result subject: runners announce on it, clients wait on it.
    pub fn results_all(&self) -> String {
        format!("{}.results.>", self.prefix)
    }

    /// `attune.runners.verify`: asks every runner (no queue group) to verify versions again now
    /// and answer with what it found ([`crate::wire::VerifyRequest`]).
    pub fn runners_verify(&self) -> String {
        format!("{}.runners.verify", self.prefix)
    }

    /// `attune.events.<pack>.<trigger>`: sensor events.
    pub fn events(&self, pack: &str, trigger: &str) -> String {
        format!("{}.events.{pack}.{trigger}", self.prefix)
    }

    /// `attune.events.>`: every event, what the events stream captures.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `attune.executions.<pack>.<action>.<id>`: the record of one execution. The id ends the
    /// subject, so one execution is one last-by-subject read; the stream keeps one message per
    /// subject (the newest: started, then finished).
    pub fn execution(&self, action_ref: &str, id: &str) -> String {
        format!("{}.executions.{action_ref}.{id}", self.prefix)
    }

    /// `attune.output.<id>`: the live stdout and stderr lines of a running execution.
    pub fn output(&self, id: &str) -> String {
        format!("{}.output.{id}", self.prefix)
    }

    /// Every execution's live output.
    pub fn output_all(&self) -> String {
        format!("{}.output.>", self.prefix)
    }

    /// Every execution record.
    pub fn executions_all(&self) -> String {
        format!("{}.executions.>", self.prefix)
    }

    /// The records of one action (`<pack>.<action>`), or of one pack (`<pack>.*`).
    pub fn executions_of(&self, filter: &str) -> String {
        format!("{}.executions.{filter}.*", self.prefix)
    }

    /// The record of execution `id`, whatever its action.
    pub fn execution_by_id(&self, id: &str) -> String {
        format!("{}.executions.*.*.{id}", self.prefix)
    }

    /// `(pack, trigger)` from `attune.events.<pack>.<trigger>`.
    pub fn parse_events<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let (pack, trigger) = self.strip(subject, "events")?.split_once('.')?;
        (!trigger.contains('.')).then_some((pack, trigger))
    }

    fn strip<'a>(&self, subject: &'a str, kind: &str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(kind)?
            .strip_prefix('.')
    }

    // ---- JetStream names ----

    /// KV bucket of runtimes (key: runtime name).
    pub fn kv_runtimes(&self) -> String {
        format!("{}-runtimes", self.flat)
    }
    /// KV bucket of actions (key: `<pack>.<action>`).
    pub fn kv_actions(&self) -> String {
        format!("{}-actions", self.flat)
    }
    /// KV bucket of pack metadata (key: pack ref).
    pub fn kv_packs(&self) -> String {
        format!("{}-packs", self.flat)
    }
    /// KV bucket of runner heartbeats (key: runner id), entries expire by TTL.
    pub fn kv_runners(&self) -> String {
        format!("{}-runners", self.flat)
    }
    /// KV bucket of asynchronous results.
    pub fn kv_results(&self) -> String {
        format!("{}-results", self.flat)
    }
    /// KV bucket of each action's current route (key: `<pack>.<action>`), kept by the
    /// registry's resolver so a client resolves with one read.
    pub fn kv_routes(&self) -> String {
        format!("{}-routes", self.flat)
    }
    /// KV bucket of sensor leases: which runner runs each sensor, renewed while it does.
    pub fn kv_sensors(&self) -> String {
        format!("{}-sensors", self.flat)
    }
    /// KV bucket of the concurrency slots of limited actions.
    pub fn kv_slots(&self) -> String {
        format!("{}-slots", self.flat)
    }
    /// Object store holding each pack's files as one archive named by its digest.
    pub fn object_pack_files(&self) -> String {
        format!("{}-pack-files", self.flat)
    }
    /// Object store of asynchronous results too large for a NATS message (name: invocation id).
    pub fn object_results_files(&self) -> String {
        format!("{}-results-files", self.flat)
    }
    /// JetStream work-queue stream of asynchronous invocations.
    pub fn stream_jobs(&self) -> String {
        format!("{}_JOBS", self.flat.to_ascii_uppercase().replace('-', "_"))
    }
    /// JetStream stream of execution records, one (the newest) per execution.
    pub fn stream_executions(&self) -> String {
        format!(
            "{}_EXECUTIONS",
            self.flat.to_ascii_uppercase().replace('-', "_")
        )
    }
    /// JetStream stream of events, kept for a while whether or not a rule matched them.
    pub fn stream_events(&self) -> String {
        format!(
            "{}_EVENTS",
            self.flat.to_ascii_uppercase().replace('-', "_")
        )
    }
    /// The durable consumer through which registries evaluate rules: one for all of them, so
    /// each event is evaluated once however many registries run.
    pub fn rules_consumer(&self) -> String {
        format!("{}-rules", self.flat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_the_protocol_docs() {
        let ns = Namespace::default();
        assert_eq!(ns.invoke("python", "3.12"), "attune.invoke.python.3.12");
        assert_eq!(ns.action("core.echo"), "attune.action.core.echo");
        assert_eq!(
            ns.registry(RegistryOp::VersionSetDefault),
            "attune.registry.version.set_default"
        );
        assert_eq!(ns.jobs("node", "20"), "attune.jobs.node.20");
        assert_eq!(ns.results("abc"), "attune.results.abc");
        assert_eq!(ns.invoke_all(), "attune.invoke.>");
        assert_eq!(ns.results_all(), "attune.results.>");
        assert_eq!(ns.events("core", "tick"), "attune.events.core.tick");
        assert_eq!(ns.kv_runtimes(), "attune-runtimes");
        assert_eq!(ns.kv_actions(), "attune-actions");
        assert_eq!(ns.kv_packs(), "attune-packs");
        assert_eq!(ns.kv_runners(), "attune-runners");
        assert_eq!(ns.kv_results(), "attune-results");
        assert_eq!(ns.kv_routes(), "attune-routes");
        assert_eq!(ns.object_pack_files(), "attune-pack-files");
        assert_eq!(ns.object_results_files(), "attune-results-files");
        assert_eq!(ns.stream_jobs(), "ATTUNE_JOBS");
        assert_eq!(ns.stream_events(), "ATTUNE_EVENTS");
        assert_eq!(ns.events("examples", "tick"), "attune.events.examples.tick");
        assert_eq!(
            ns.parse_events("attune.events.examples.tick"),
            Some(("examples", "tick"))
        );
        assert_eq!(ns.parse_events("attune.events.a.b.c"), None);
        assert_eq!(ns.parse_events("attune.events.a"), None);
    }

    #[test]
    fn custom_prefix_changes_every_name() {
        let ns = Namespace::new("acme.fx").unwrap();
        assert_eq!(ns.invoke("sh", "default"), "acme.fx.invoke.sh.default");
        assert_eq!(ns.kv_runtimes(), "acme-fx-runtimes");
        assert_eq!(ns.stream_jobs(), "ACME_FX_JOBS");
    }

    #[test]
    fn invalid_prefixes_are_rejected() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a>"] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_parse_back() {
        let ns = Namespace::default();
        assert_eq!(
            ns.parse_invoke("attune.invoke.python.3.12"),
            Some(("python", "3.12"))
        );
        assert_eq!(ns.parse_invoke("attune.invoke.python"), None);
        assert_eq!(ns.parse_invoke("other.invoke.python.3"), None);
        assert_eq!(
            ns.parse_action("attune.action.core.echo"),
            Some("core.echo")
        );
        assert_eq!(ns.parse_action("attune.action.core"), None);
        assert_eq!(ns.parse_jobs("attune.jobs.node.20"), Some(("node", "20")));
    }

    #[test]
    fn registry_ops_round_trip() {
        for op in RegistryOp::ALL {
            assert_eq!(RegistryOp::from_suffix(op.as_str()), Some(op));
        }
        assert_eq!(RegistryOp::from_suffix("nope"), None);
    }

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("runtime name", "python", false).is_ok());
        assert!(check_token("version", "3.12", true).is_ok());
        assert!(check_token("runtime name", "py.thon", false).is_err());
        assert!(check_token("version", "3 12", true).is_err());
        assert!(check_token("version", "3.*", true).is_err());
        assert!(check_token("version", "3..1", true).is_err());
        assert!(check_token("version", "", true).is_err());
    }
}
