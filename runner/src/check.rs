//! The checks every request passes before anything runs (docs/runner.md).
//!
//! A runner trusts nobody's routing: the action must exist and be enabled, its runtime must be the
//! subject's, the subject's version must satisfy the action's constraint, and the parameters must
//! pass the action's schema once defaults are applied. Anything else is a `rejected` reply whose
//! reason names the problem. Schemas and constraints are compiled once, when the action arrives
//! from KV ([`PreparedAction`]), never per request.

use std::path::{Component, Path};

use attune_nats::reply::Rejection;
use attune_nats::resolve::Refusal;
use attune_nats::version::Constraint;
use attune_nats::wire::RejectCode;
use attune_nats::{Action, InvocationRequest, VersionKey};
use serde_json::{Map, Value};

/// An action with everything the hot path needs precomputed.
#[derive(Debug)]
pub struct PreparedAction {
    /// The action as registered.
    pub action: Action,
    /// The compiled parameter schema.
    validator: jsonschema::Validator,
    /// The parsed `runtime_version`.
    pub constraint: Constraint,
    /// Names of `secret: true` parameters, masked in logs and schema errors.
    pub secrets: Vec<String>,
    /// Top-level defaults, applied to missing parameters before validation.
    defaults: Vec<(String, Value)>,
}

/// Why an action from KV cannot be served at all.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Its parameter schema does not compile.
    #[error("action {action}: parameter schema is invalid: {message}")]
    Schema {
        /// The action ref.
        action: String,
        /// The validator's explanation.
        message: String,
    },
    /// Its constraint does not parse.
    #[error("action {action}: {source}")]
    Constraint {
        /// The action ref.
        action: String,
        /// The parse error.
        source: attune_nats::version::VersionError,
    },
}

impl PreparedAction {
    /// Compiles the schema and constraint of `action`.
    pub fn new(action: Action) -> Result<Self, PrepareError> {
        let validator =
            jsonschema::validator_for(&action.parameters).map_err(|e| PrepareError::Schema {
                action: action.reference.clone(),
                message: e.to_string(),
            })?;
        let constraint =
            Constraint::parse_optional(action.runtime_version.as_deref()).map_err(|source| {
                PrepareError::Constraint {
                    action: action.reference.clone(),
                    source,
                }
            })?;
        let defaults = action
            .parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PreparedAction {
            secrets: action.secret_parameters(),
            action,
            validator,
            constraint,
            defaults,
        })
    }

    /// Whether the subject's version can serve this action.
    pub fn accepts_version(&self, version: &str) -> bool {
        self.constraint.accepts(version)
    }

    /// Applies defaults to `params` and validates them. Errors on secret parameters (or on the
    /// whole object, whose message would quote them) never show the value.
    pub fn check_parameters(&self, params: &mut Map<String, Value>) -> Result<(), Rejection> {
        for (k, d) in &self.defaults {
            params.entry(k.clone()).or_insert_with(|| d.clone());
        }
        let instance = Value::Object(std::mem::take(params));
        let problems: Vec<String> = self
            .validator
            .iter_errors(&instance)
            .map(|e| {
                let path = e.instance_path().as_str().to_string();
                let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
                let show_value = !first.is_empty() && !self.secrets.iter().any(|s| s == first);
                let message = if show_value {
                    e.to_string()
                } else {
                    e.masked_with("<hidden>").to_string()
                };
                if path.is_empty() {
                    message
                } else {
                    format!("{path}: {message}")
                }
            })
            .collect();
        let Value::Object(back) = instance else {
            unreachable!("built as an object above")
        };
        *params = back;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Rejection::new(
                RejectCode::BadRequest,
                format!(
                    "parameters of {} do not match its schema: {}",
                    self.action.reference,
                    problems.join("; ")
                ),
            ))
        }
    }

    /// The parameters with secret values replaced, for logs.
    pub fn masked(&self, params: &Map<String, Value>) -> Value {
        let mut copy = params.clone();
        for s in &self.secrets {
            if let Some(v) = copy.get_mut(s) {
                *v = Value::String("***".into());
            }
        }
        Value::Object(copy)
    }
}

/// Checks that an entry point names a file under `actions/` without leaving it: relative, and
/// made only of normal components. (The executor also checks the resolved path, for symlinks.)
pub fn entry_point_is_contained(entry_point: &str) -> bool {
    let p = Path::new(entry_point);
    !entry_point.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Everything [`check_request`] can refuse: unknown or disabled action, another runtime, a
/// version outside the constraint, an escaping entry point, parameters that fail the schema.
pub fn check_request(
    action: Option<&PreparedAction>,
    key: &VersionKey,
    request: &mut InvocationRequest,
) -> Result<(), Rejection> {
    let (runtime, version) = (key.runtime.as_str(), key.version.as_str());
    let Some(prepared) = action else {
        return Err(Refusal::UnknownAction(request.action.clone()).into());
    };
    let action = &prepared.action;
    if !action.enabled {
        return Err(Refusal::Disabled(action.reference.clone()).into());
    }
    if action.runtime != runtime {
        return Err(Rejection::new(
            RejectCode::VersionMismatch,
            format!(
                "action {} runs on runtime {}, not {runtime}",
                action.reference, action.runtime
            ),
        ));
    }
    if !prepared.accepts_version(version) {
        return Err(Rejection::new(
            RejectCode::VersionMismatch,
            format!(
                "{runtime} {version} does not satisfy {}'s runtime_version \"{}\"",
                action.reference, prepared.constraint
            ),
        ));
    }
    if !entry_point_is_contained(&action.entry_point) {
        return Err(Rejection::new(
            RejectCode::BadRequest,
            format!(
                "action {}: entry point \"{}\" escapes the pack's actions directory",
                action.reference, action.entry_point
            ),
        ));
    }
    prepared.check_parameters(&mut request.parameters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(params: Value, constraint: Option<&str>) -> PreparedAction {
        PreparedAction::new(Action {
            reference: "p.a".into(),
            pack: "p".into(),
            name: "a".into(),
            description: None,
            runner_type: "python".into(),
            runtime: "python".into(),
            entry_point: "a.py".into(),
            runtime_version: constraint.map(Into::into),
            parameters: params,
            output: None,
            parameter_delivery: Default::default(),
            parameter_format: Default::default(),
            output_format: Default::default(),
            timeout_seconds: None,
            enabled: true,
            retry: None,
            concurrency: None,
            warm: true,
        })
        .unwrap()
    }

    fn request(params: Value) -> InvocationRequest {
        InvocationRequest {
            action: "p.a".into(),
            parameters: params.as_object().unwrap().clone(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_applied_before_validation() {
        let a = action(
            json!({"type":"object","required":["n"],"properties":{"n":{"type":"integer","default":5}}}),
            None,
        );
        let mut r = request(json!({}));
        check_request(Some(&a), &VersionKey::new("python", "3.12"), &mut r).unwrap();
        assert_eq!(r.parameters["n"], 5);
    }

    #[test]
    fn version_outside_the_constraint_is_refused() {
        let a = action(json!({"type":"object"}), Some(">=3.12"));
        let err = check_request(
            Some(&a),
            &VersionKey::new("python", "3.11"),
            &mut request(json!({})),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::VersionMismatch);
        assert!(err.message.contains(">=3.12"), "{}", err.message);
        assert!(check_request(
            Some(&a),
            &VersionKey::new("python", "3.13"),
            &mut request(json!({}))
        )
        .is_ok());
    }

    #[test]
    fn other_runtime_and_unknown_action_are_refused() {
        let a = action(json!({"type":"object"}), None);
        let err = check_request(
            Some(&a),
            &VersionKey::new("node", "20"),
            &mut request(json!({})),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::VersionMismatch);
        let err = check_request(
            None,
            &VersionKey::new("python", "3.12"),
            &mut request(json!({})),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::UnknownAction);
    }

    #[test]
    fn schema_errors_never_show_secret_values() {
        let a = action(
            json!({"type":"object","properties":{
                "token":{"type":"integer","secret":true},"n":{"type":"integer"}}}),
            None,
        );
        let err = check_request(
            Some(&a),
            &VersionKey::new("python", "3.12"),
            &mut request(json!({"token":"hunter2-secret","n":"seven"})),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::BadRequest);
        assert!(!err.message.contains("hunter2"), "{}", err.message);
        assert!(
            err.message.contains("seven"),
            "non-secret values stay visible: {}",
            err.message
        );
        assert_eq!(
            a.masked(&request(json!({"token":"x"})).parameters)["token"],
            "***"
        );
    }

    #[test]
    fn entry_points_must_stay_in_the_pack() {
        assert!(entry_point_is_contained("echo.py"));
        assert!(entry_point_is_contained("lib/echo.py"));
        assert!(!entry_point_is_contained("../echo.py"));
        assert!(!entry_point_is_contained("/etc/passwd"));
        assert!(!entry_point_is_contained("a/../../b"));
        assert!(!entry_point_is_contained(""));
    }
}
