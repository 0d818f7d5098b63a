//! The one resolver: action → runtime → constraint → version.
//!
//! The registry's router and async enqueue, its `resolve` operation, and the Rust client behind
//! `attune invoke` all decide "which version runs this action" by calling [`resolve`], so a
//! by-name invocation and `attune resolve` cannot disagree, and a refusal is worded once.
//!
//! The resolver is pure: callers look the action and its runtime up wherever they keep them (the
//! registry's in-memory view, KV for the client) and hand them in. Two modes:
//! - [`Mode::Sync`]: the caller waits for the result, so only a version some live runner serves
//!   will do;
//! - [`Mode::Job`]: a durable job waits for a runner, so with none up the version that *would*
//!   be chosen if every enabled version were available is fine. A job is refused only when no
//!   enabled registered version satisfies the action, since such a job could never run.

use crate::api::{ResolveCandidate, ResolveReply};
use crate::key::VersionKey;
use crate::model::{Action, Runtime};
use crate::subject::Namespace;
use crate::version::{select, Constraint, NoMatch, Selection, Verdict, VersionError};
use crate::wire::RejectCode;

/// Whether the caller waits for the result now or queues a durable job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A request the caller waits on: only a version with a live runner will do.
    Sync,
    /// A durable job: an enabled version with no runner up yet is acceptable.
    Job,
}

/// Why an action cannot be resolved. The `Display` text is the one wording every component
/// sends; [`Refusal::code`] is the reject code that goes with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No action by that ref is registered.
    #[error(
        "unknown action \"{0}\": no action by that name is registered (see `attune action list`)"
    )]
    UnknownAction(String),
    /// The action is registered but disabled.
    #[error("action {0} is disabled")]
    Disabled(String),
    /// The action names a runtime nobody registered (its pack was loaded against another one).
    #[error("runtime \"{runtime}\" of {action} is not registered")]
    UnknownRuntime {
        /// The action ref.
        action: String,
        /// The runtime it names.
        runtime: String,
    },
    /// The constraint (the action's, or an override) does not parse.
    #[error("{0}")]
    BadConstraint(#[source] VersionError),
    /// No version fits: the message names the runtime, the constraint, what is registered and
    /// what is available.
    #[error("{0}")]
    NoVersion(#[source] NoMatch),
}

impl Refusal {
    /// The reject code a rejection reply carries for this refusal.
    pub fn code(&self) -> RejectCode {
        match self {
            Refusal::UnknownAction(_) => RejectCode::UnknownAction,
            Refusal::Disabled(_) => RejectCode::Disabled,
            Refusal::BadConstraint(_) => RejectCode::BadRequest,
            Refusal::UnknownRuntime { .. } | Refusal::NoVersion(_) => RejectCode::Unavailable,
        }
    }
}

/// What resolving one action found: the action's runtime and constraint, a verdict on every
/// registered version, and the decision.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The canonical runtime name.
    pub runtime: String,
    /// The constraint that applied, as written (`""` when there is none).
    pub constraint_text: String,
    /// The constraint that applied, parsed.
    pub constraint: Constraint,
    /// Every registered version with its verdict (empty when the runtime is unknown).
    pub verdicts: Vec<(String, Verdict)>,
    /// The chosen version, with one sentence on why it won; or why nothing can run.
    pub outcome: Result<Chosen, Refusal>,
}

/// The version an action runs on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The runtime and version.
    pub key: VersionKey,
    /// One sentence on why this version won.
    pub reason: String,
}

impl Resolution {
    /// The chosen version, or the refusal.
    pub fn into_key(self) -> Result<VersionKey, Refusal> {
        self.outcome.map(|c| c.key)
    }
}

/// Resolves `action_ref` (looked up by the caller: `action`, and its runtime via `runtime_of`)
/// to one version. `constraint` replaces the action's own constraint when given (to ask "what
/// if"). Fails with [`Refusal::UnknownAction`] or [`Refusal::BadConstraint`] before anything
/// else is known; every other refusal comes with the verdicts that explain it.
pub fn resolve<'a>(
    action_ref: &str,
    action: Option<&'a Action>,
    runtime_of: impl FnOnce(&str) -> Option<&'a Runtime>,
    constraint: Option<&str>,
    mode: Mode,
) -> Result<Resolution, Refusal> {
    let action = action.ok_or_else(|| Refusal::UnknownAction(action_ref.to_string()))?;
    let constraint_text = constraint
        .or(action.runtime_version.as_deref())
        .unwrap_or("")
        .trim()
        .to_string();
    let parsed = Constraint::parse(&constraint_text).map_err(Refusal::BadConstraint)?;
    let mut resolution = Resolution {
        runtime: action.runtime.clone(),
        constraint_text,
        constraint: parsed,
        verdicts: Vec::new(),
        outcome: Err(Refusal::Disabled(action.reference.clone())),
    };
    let Some(runtime) = runtime_of(&action.runtime) else {
        if action.enabled {
            resolution.outcome = Err(Refusal::UnknownRuntime {
                action: action.reference.clone(),
                runtime: action.runtime.clone(),
            });
        }
        return Ok(resolution);
    };
    let selected = select_version(runtime, &resolution.constraint, mode);
    resolution.verdicts = match &selected {
        Ok(sel) => sel.verdicts.clone(),
        Err(no) => no.verdicts.clone(),
    };
    // A disabled action keeps its verdicts (they still explain the runtime), but never runs.
    if action.enabled {
        resolution.outcome = selected
            .map(|sel| Chosen {
                key: VersionKey::new(&runtime.name, sel.chosen),
                reason: sel.reason,
            })
            .map_err(Refusal::NoVersion);
    }
    Ok(resolution)
}

/// The resolution as `resolve` reports it (the registry operation and `attune resolve -o json`):
/// the decision, and every registered version of `runtime` with its flags and verdict.
pub fn report(
    action_ref: &str,
    resolution: &Resolution,
    runtime: Option<&Runtime>,
    ns: &Namespace,
) -> ResolveReply {
    let candidates = resolution
        .verdicts
        .iter()
        .filter_map(|(name, verdict)| {
            let v = runtime?.version(name)?;
            Some(ResolveCandidate {
                version: name.clone(),
                verdict: *verdict,
                explanation: verdict.explain().to_string(),
                is_default: v.is_default,
                enabled: v.enabled,
                available: v.available,
                verified_at: v.verified_at,
            })
        })
        .collect();
    let (version, subject, reason, error) = match &resolution.outcome {
        Ok(chosen) => (
            Some(chosen.key.version.clone()),
            Some(chosen.key.invoke_subject(ns)),
            chosen.reason.clone(),
            None,
        ),
        Err(refusal @ Refusal::NoVersion(_)) => (
            None,
            None,
            "no registered version can take this action now".to_string(),
            Some(refusal.to_string()),
        ),
        Err(refusal) => (None, None, refusal.to_string(), Some(refusal.to_string())),
    };
    ResolveReply {
        action: action_ref.to_string(),
        runtime: resolution.runtime.clone(),
        constraint: resolution.constraint_text.clone(),
        version,
        subject,
        reason,
        error,
        candidates,
    }
}

/// Selection in `mode`: for a job, when no version is usable now, the version that would be
/// chosen if every enabled version had a live runner. Sensors are placed with it too ([`Mode::Sync`]:
/// a sensor runs on the version an action with its constraint would run on now).
pub fn select_version(
    runtime: &Runtime,
    constraint: &Constraint,
    mode: Mode,
) -> Result<Selection, NoMatch> {
    let mut candidates = runtime.candidates();
    let now = select(&runtime.name, &candidates, constraint);
    match (now, mode) {
        (Err(_), Mode::Job) => {
            for c in &mut candidates {
                c.available = true;
            }
            select(&runtime.name, &candidates, constraint)
        }
        (now, _) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuntimeVersion;
    use serde_json::json;

    fn runtime(versions: &[(&str, bool, bool, bool)]) -> Runtime {
        let mut rt: Runtime = serde_json::from_value(json!({
            "ref": "core.python", "name": "python", "pack": "core"
        }))
        .unwrap();
        rt.versions = versions
            .iter()
            .map(|(v, is_default, enabled, available)| {
                let mut rv: RuntimeVersion =
                    serde_json::from_value(json!({ "version": v })).unwrap();
                rv.is_default = *is_default;
                rv.enabled = *enabled;
                rv.available = *available;
                rv
            })
            .collect();
        rt
    }

    fn action(constraint: Option<&str>, enabled: bool) -> Action {
        let mut a: Action = serde_json::from_value(json!({
            "ref": "core.info", "pack": "core", "name": "info", "runner_type": "python3",
            "runtime": "python", "entry_point": "info.py"
        }))
        .unwrap();
        a.runtime_version = constraint.map(Into::into);
        a.enabled = enabled;
        a
    }

    fn run(
        a: Option<&Action>,
        rt: Option<&Runtime>,
        constraint: Option<&str>,
        mode: Mode,
    ) -> Result<Resolution, Refusal> {
        resolve("core.info", a, |_| rt, constraint, mode)
    }

    fn chosen(r: Result<Resolution, Refusal>) -> String {
        r.unwrap().into_key().unwrap().version
    }

    #[test]
    fn sync_picks_the_highest_available_match() {
        let rt = runtime(&[
            ("3.11", false, true, true),
            ("3.12", true, true, true),
            ("3.13", false, true, true),
        ]);
        let a = action(Some(">=3.12"), true);
        let r = run(Some(&a), Some(&rt), None, Mode::Sync).unwrap();
        assert_eq!(r.constraint_text, ">=3.12");
        let c = r.outcome.clone().unwrap();
        assert_eq!(c.key, VersionKey::new("python", "3.13"));
        assert!(c.reason.contains(">=3.12"), "{}", c.reason);
        assert_eq!(r.verdicts.len(), 3);
        // Without a constraint, the default wins.
        assert_eq!(
            chosen(run(Some(&action(None, true)), Some(&rt), None, Mode::Sync)),
            "3.12"
        );
        // An override replaces the action's constraint.
        assert_eq!(
            chosen(run(Some(&a), Some(&rt), Some("~3.11"), Mode::Sync)),
            "3.11"
        );
    }

    #[test]
    fn sync_refuses_when_no_runner_serves_a_match() {
        let rt = runtime(&[("3.12", true, true, true), ("3.13", false, true, false)]);
        let a = action(Some(">=3.13"), true);
        let err = run(Some(&a), Some(&rt), None, Mode::Sync)
            .unwrap()
            .into_key()
            .unwrap_err();
        assert_eq!(err.code(), RejectCode::Unavailable);
        assert_eq!(
            err.to_string(),
            "no available python version satisfies \">=3.13\" (registered: 3.12, 3.13; available: 3.12)"
        );
    }

    #[test]
    fn a_job_may_wait_for_an_enabled_version_without_runners() {
        let rt = runtime(&[("3.12", true, true, true), ("3.13", false, true, false)]);
        let a = action(Some(">=3.13"), true);
        assert_eq!(chosen(run(Some(&a), Some(&rt), None, Mode::Job)), "3.13");
        // What is usable now still wins for a job.
        assert_eq!(
            chosen(run(Some(&action(None, true)), Some(&rt), None, Mode::Job)),
            "3.12"
        );
    }

    #[test]
    fn a_job_is_refused_when_no_enabled_version_could_ever_run_it() {
        let rt = runtime(&[("3.12", true, true, true), ("3.13", false, false, false)]);
        let a = action(Some(">=3.13"), true);
        let err = run(Some(&a), Some(&rt), None, Mode::Job)
            .unwrap()
            .into_key()
            .unwrap_err();
        assert!(matches!(err, Refusal::NoVersion(_)));
        assert!(err.to_string().contains("disabled: 3.13"), "{err}");
    }

    #[test]
    fn unknown_action_and_bad_constraint_fail_before_anything_else() {
        let err = run(None, None, None, Mode::Sync).unwrap_err();
        assert_eq!(err.code(), RejectCode::UnknownAction);
        assert!(err.to_string().starts_with("unknown action \"core.info\""));
        let a = action(None, true);
        let err = run(Some(&a), None, Some(">=banana"), Mode::Sync).unwrap_err();
        assert_eq!(err.code(), RejectCode::BadRequest);
    }

    #[test]
    fn disabled_actions_and_unknown_runtimes_are_refused_with_their_codes() {
        let rt = runtime(&[("3.12", true, true, true)]);
        let off = action(None, false);
        let r = run(Some(&off), Some(&rt), None, Mode::Sync).unwrap();
        assert_eq!(r.verdicts.len(), 1, "verdicts still explain the runtime");
        let err = r.into_key().unwrap_err();
        assert_eq!(err.code(), RejectCode::Disabled);
        assert_eq!(err.to_string(), "action core.info is disabled");
        let err = run(Some(&action(None, true)), None, None, Mode::Job)
            .unwrap()
            .into_key()
            .unwrap_err();
        assert_eq!(err.code(), RejectCode::Unavailable);
        assert_eq!(
            err.to_string(),
            "runtime \"python\" of core.info is not registered"
        );
    }
}
