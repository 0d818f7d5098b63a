//! Request and reply bodies of every registry API operation (`attune.registry.<operation>`).
//!
//! The registry decodes these and the CLI encodes them, so both sides use the very same types and
//! cannot drift apart. Every request may be sent as `{}` (or an empty body) where it has no required
//! field; optional fields may be left out. A failed operation answers with
//! [`ApiError`](crate::wire::ApiError) instead, plus the micro-service error headers; its `code` is
//! one of [`code`].

use serde::{Deserialize, Serialize};

use crate::model::{Action, PackMeta, Rule, Runtime, Sensor, TriggerType};
use crate::version::Verdict;
use crate::wire::{RunnerHeartbeat, SensorLease};

/// The status codes a registry operation can fail with (HTTP-like, so they read at a glance).
pub mod code {
    /// The request body is not valid JSON for the operation, or a field is invalid.
    pub const BAD_REQUEST: u16 = 400;
    /// The registry's policy refuses the operation: registering by path when the registry was
    /// not started with `--allow-register-from`, or from a directory outside those it names.
    pub const FORBIDDEN: u16 = 403;
    /// The pack, runtime, version or action does not exist.
    pub const NOT_FOUND: u16 = 404;
    /// The change would break something else (a runtime still used by another pack).
    pub const CONFLICT: u16 = 409;
    /// The pack was rejected by validation; `details` lists every `file:line: message`.
    pub const PACK_REJECTED: u16 = 422;
    /// The registry failed (database, JetStream); retrying may help.
    pub const INTERNAL: u16 = 500;
    /// A dependency of the operation is unavailable (object store, uploaded archive missing).
    pub const UNAVAILABLE: u16 = 503;
}

/// A request without fields (`pack.list`, `runtime.list`, `runner.list`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `pack.register`: a directory on the registry's host, or the digest of an archive the client
/// has put in the `attune-pack-files` object store (made by
/// [`archive::pack_dir`](crate::archive::pack_dir), named by its digest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRegisterRequest {
    /// A pack directory as the registry's host sees it; refused (403) unless the registry was
    /// started with `--allow-register-from` naming a directory that contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The digest (`sha256-…`) of an uploaded pack archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Reply of `pack.register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackRegisterReply {
    /// The registered pack, with its digest.
    pub pack: PackMeta,
    /// Probable mistakes that did not stop the registration, as `file:line: message`.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Reply of `pack.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackListReply {
    /// Every registered pack, by ref.
    pub packs: Vec<PackMeta>,
}

/// A request naming one thing by ref (`pack.get`, `pack.remove`, `action.get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRequest {
    /// The pack ref (`core`) or action ref (`core.echo`).
    #[serde(rename = "ref")]
    pub reference: String,
}

/// Reply of `pack.get`: the pack and everything it defines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackGetReply {
    /// The pack's metadata.
    pub pack: PackMeta,
    /// Runtimes it defines, with their versions and live state.
    pub runtimes: Vec<Runtime>,
    /// Its actions.
    pub actions: Vec<Action>,
    /// Its sensors.
    pub sensors: Vec<Sensor>,
    /// Its rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Reply of `pack.remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRemoveReply {
    /// The ref of the pack that is gone.
    pub removed: String,
}

/// Reply of `runtime.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeListReply {
    /// Every runtime, by name.
    pub runtimes: Vec<Runtime>,
}

/// `runtime.get`: a runtime by name or alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRequest {
    /// The runtime's name or one of its aliases (`python3`).
    pub name: String,
}

/// Reply of `runtime.get`, `version.set_default` and `version.set_enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeReply {
    /// The runtime as it is now.
    pub runtime: Runtime,
}

/// `version.set_default`: make one version the runtime's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDefaultRequest {
    /// Runtime name or alias.
    pub runtime: String,
    /// A registered version name (`3.13`).
    pub version: String,
}

/// `version.set_enabled`: allow or forbid selecting one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEnabledRequest {
    /// Runtime name or alias.
    pub runtime: String,
    /// A registered version name.
    pub version: String,
    /// `false` takes the version out of selection without unregistering it.
    pub enabled: bool,
}

/// `action.list`: all actions, or those of one pack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionListRequest {
    /// Only this pack's actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
}

/// Reply of `action.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionListReply {
    /// The actions, by ref.
    pub actions: Vec<Action>,
}

/// Reply of `action.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReply {
    /// The action.
    pub action: Action,
}

/// `rule.list`: all rules, or those of one pack.
pub type RuleListRequest = PackFilter;

/// Reply of `rule.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleListReply {
    /// The rules, by ref.
    pub rules: Vec<Rule>,
}

/// Reply of `rule.get` and `rule.set_enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReply {
    /// The rule.
    pub rule: Rule,
}

/// `rule.set_enabled`: the operator's choice, which outlives re-registrations of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetEnabledRequest {
    /// The rule ref (`examples.stats_on_tick`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// `rule.list`, `sensor.list` and `trigger.list`: all of them, or those of one pack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackFilter {
    /// Only this pack's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
}

/// A sensor and, when a runner runs it, that runner's lease (holder, pid, counters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorStatus {
    /// The sensor.
    pub sensor: Sensor,
    /// Its lease, absent when no runner runs it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<SensorLease>,
}

/// Reply of `sensor.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorListReply {
    /// The sensors, by ref.
    pub sensors: Vec<SensorStatus>,
}

/// Reply of `sensor.get` and `sensor.set_enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReply {
    /// The sensor and its lease.
    #[serde(flatten)]
    pub status: SensorStatus,
}

/// `sensor.set_enabled`: the operator's choice, which outlives re-registrations of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorSetEnabledRequest {
    /// The sensor ref (`examples.clock`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Whether it runs.
    pub enabled: bool,
}

/// Reply of `trigger.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerListReply {
    /// The trigger types, by ref.
    pub triggers: Vec<TriggerType>,
}

/// Reply of `trigger.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerReply {
    /// The trigger type.
    pub trigger: TriggerType,
}

/// `resolve`: which version and subject an action would use now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The action ref (`core.py_info`).
    pub action: String,
    /// Replaces the action's own constraint, to ask "what if".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
}

/// Reply of `resolve`. A failed selection is still a reply (with `error` set), because the
/// candidates explain it; only an unknown action is an API error (404).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveReply {
    /// The action ref.
    pub action: String,
    /// The canonical runtime name.
    pub runtime: String,
    /// The constraint used, as written; `""` when there is none.
    pub constraint: String,
    /// The chosen version, when one fits.
    pub version: Option<String>,
    /// The invoke subject the router forwards to, when a version fits.
    pub subject: Option<String>,
    /// One sentence on the outcome.
    pub reason: String,
    /// Why nothing fits (`no available python version satisfies …`), else `null`.
    pub error: Option<String>,
    /// Every registered version with its verdict.
    pub candidates: Vec<ResolveCandidate>,
}

/// One version considered by `resolve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveCandidate {
    /// The version name.
    pub version: String,
    /// Chosen, or why not.
    pub verdict: Verdict,
    /// The verdict in words.
    pub explanation: String,
    /// Whether it is the runtime's default.
    pub is_default: bool,
    /// Whether an operator allows it.
    pub enabled: bool,
    /// Whether a live runner serves it.
    pub available: bool,
    /// The newest runner report that verified it (RFC 3339 on the wire).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub verified_at: Option<time::OffsetDateTime>,
}

/// Most runners in one page of `runner.list`.
pub const RUNNER_PAGE_MAX: usize = 500;
/// Most bytes of heartbeats in one page of `runner.list`, whatever the limit: a page always fits
/// in a NATS message, however many versions and warm pools each runner reports.
pub const RUNNER_PAGE_BYTES: usize = 256 * 1024;

/// Request of `runner.list`: one page of live runners, by id. `{}` is the first page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerListRequest {
    /// Only runners whose id sorts after this one (the `next` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Most runners in the page (at most [`RUNNER_PAGE_MAX`], the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Reply of `runner.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerListReply {
    /// The live runners' latest heartbeats, by id.
    pub runners: Vec<RunnerHeartbeat>,
    /// When more runners follow: the `after` of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accept_their_documented_shapes() {
        let r: RefRequest = serde_json::from_str(r#"{"ref":"core"}"#).unwrap();
        assert_eq!(r.reference, "core");
        let r: PackRegisterRequest = serde_json::from_str(r#"{"digest":"sha256-ab"}"#).unwrap();
        assert_eq!((r.path, r.digest.as_deref()), (None, Some("sha256-ab")));
        let r: ActionListRequest = serde_json::from_str("{}").unwrap();
        assert!(r.pack.is_none());
        let r: ResolveRequest = serde_json::from_str(r#"{"action":"core.echo"}"#).unwrap();
        assert!(r.constraint.is_none());
        let _: Empty = serde_json::from_str("{}").unwrap();
    }

    #[test]
    fn resolve_reply_has_the_documented_keys() {
        let reply = ResolveReply {
            action: "core.py_info".into(),
            runtime: "python".into(),
            constraint: String::new(),
            version: None,
            subject: None,
            reason: String::new(),
            error: Some("no available python version".into()),
            candidates: vec![ResolveCandidate {
                version: "3.12".into(),
                verdict: Verdict::NotAvailable,
                explanation: Verdict::NotAvailable.explain().into(),
                is_default: true,
                enabled: true,
                available: false,
                verified_at: None,
            }],
        };
        let v = serde_json::to_value(&reply).unwrap();
        for key in [
            "action",
            "runtime",
            "constraint",
            "version",
            "subject",
            "reason",
            "error",
            "candidates",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["candidates"][0]["verdict"], "not_available");
    }
}
