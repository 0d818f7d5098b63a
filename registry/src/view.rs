//! The in-memory view of runtimes and actions that the router and `resolve` answer from.
//!
//! The view is fed two ways: directly by the registry right after each publish (so an API change
//! such as `version.set_default` steers the very next request), and by KV watches on
//! `attune-runtimes` / `attune-actions` (so several registry instances sharing one NATS stay in
//! step). Both carry the same data, so the order they arrive in does not matter for long.
//!
//! Every change recomputes the route of every action up front — the invoke subject, or the
//! rejection with its code and message — so the router's hot path is one hash lookup and a
//! cheap clone, with no parsing, selection or formatting per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::Subject;
use attune_nats::api::{ResolveCandidate, ResolveReply};
use attune_nats::wire::RejectCode;
use attune_nats::{select, Action, Constraint, Namespace, Runtime};

/// Where a by-name request goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// Forward to this invoke subject.
    Forward(Subject),
    /// Answer at once with a rejection.
    Reject {
        /// Why (its number goes in `Nats-Service-Error-Code`).
        code: RejectCode,
        /// The user-facing message.
        message: Arc<str>,
    },
}

/// Why `resolve` could not answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such action is registered.
    #[error("no action \"{0}\" is registered")]
    UnknownAction(String),
    /// The override constraint does not parse.
    #[error("{0}")]
    BadConstraint(String),
}

#[derive(Default)]
struct State {
    runtimes: HashMap<String, Runtime>,
    actions: HashMap<String, Action>,
    routes: HashMap<String, Route>,
}

/// Runtimes, actions and precomputed routes; shared by the router and the API.
pub struct View {
    ns: Namespace,
    state: RwLock<Arc<State>>,
}

impl View {
    /// An empty view for `ns` (every by-name request is "unknown action" until filled).
    pub fn new(ns: Namespace) -> Self {
        View {
            ns,
            state: RwLock::new(Arc::new(State::default())),
        }
    }

    /// The route of `action_ref`, or `None` when it is not registered. The hot path.
    pub fn route(&self, action_ref: &str) -> Option<Route> {
        self.read().routes.get(action_ref).cloned()
    }

    /// Replaces the whole view (after a publish).
    pub fn replace(&self, runtimes: &[Runtime], actions: &[Action]) {
        let state = State {
            runtimes: runtimes
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            actions: actions
                .iter()
                .map(|a| (a.reference.clone(), a.clone()))
                .collect(),
            routes: HashMap::new(),
        };
        self.install(state);
    }

    /// Applies one KV change to a runtime (`None`: deleted).
    pub fn set_runtime(&self, name: &str, runtime: Option<Runtime>) {
        self.modify(|s| match runtime {
            Some(rt) => {
                s.runtimes.insert(name.to_string(), rt);
            }
            None => {
                s.runtimes.remove(name);
            }
        });
    }

    /// Applies one KV change to an action (`None`: deleted).
    pub fn set_action(&self, reference: &str, action: Option<Action>) {
        self.modify(|s| match action {
            Some(a) => {
                s.actions.insert(reference.to_string(), a);
            }
            None => {
                s.actions.remove(reference);
            }
        });
    }

    /// Where an async job for `action_ref` is queued: the jobs subject of the version
    /// [`select_for_job`](attune_nats::jobs::select_for_job) picks (a queued job may wait for a
    /// runner), or why it can never run.
    pub fn job_route(&self, action_ref: &str) -> Result<String, (RejectCode, String)> {
        let state = self.read();
        let Some(action) = state.actions.get(action_ref) else {
            let message = format!("no action \"{action_ref}\" is registered");
            return Err((RejectCode::UnknownAction, message));
        };
        if !action.enabled {
            let message = format!("action {} is disabled", action.reference);
            return Err((RejectCode::Disabled, message));
        }
        let Some(runtime) = state.runtimes.get(&action.runtime) else {
            let message = format!(
                "runtime \"{}\" of {} is not registered",
                action.runtime, action.reference
            );
            return Err((RejectCode::Unavailable, message));
        };
        let constraint = Constraint::parse_optional(action.runtime_version.as_deref())
            .map_err(|e| (RejectCode::Unavailable, e.to_string()))?;
        attune_nats::jobs::select_for_job(runtime, &constraint)
            .map(|sel| self.ns.jobs(&runtime.name, &sel.chosen))
            .map_err(|no| (RejectCode::Unavailable, no.message))
    }

    /// Which version and subject `action_ref` would use now, with a verdict for every registered
    /// version. `constraint` replaces the action's own constraint when given.
    pub fn resolve(
        &self,
        action_ref: &str,
        constraint: Option<&str>,
    ) -> Result<ResolveReply, ResolveError> {
        let state = self.read();
        let action = state
            .actions
            .get(action_ref)
            .ok_or_else(|| ResolveError::UnknownAction(action_ref.to_string()))?;
        let written = constraint
            .or(action.runtime_version.as_deref())
            .unwrap_or("")
            .trim()
            .to_string();
        let parsed =
            Constraint::parse(&written).map_err(|e| ResolveError::BadConstraint(e.to_string()))?;
        let mut reply = ResolveReply {
            action: action.reference.clone(),
            runtime: action.runtime.clone(),
            constraint: written,
            version: None,
            subject: None,
            reason: String::new(),
            error: None,
            candidates: Vec::new(),
        };
        let Some(runtime) = state.runtimes.get(&action.runtime) else {
            let msg = format!(
                "runtime \"{}\" of {} is not registered",
                action.runtime, action.reference
            );
            reply.reason = msg.clone();
            reply.error = Some(msg);
            return Ok(reply);
        };
        let (verdicts, outcome) = match select(&runtime.name, &runtime.candidates(), &parsed) {
            Ok(sel) => (sel.verdicts, Ok((sel.chosen, sel.reason))),
            Err(no) => (no.verdicts, Err(no.message)),
        };
        reply.candidates = verdicts
            .into_iter()
            .filter_map(|(name, verdict)| {
                let v = runtime.version(&name)?;
                Some(ResolveCandidate {
                    version: name,
                    verdict,
                    explanation: verdict.explain().to_string(),
                    is_default: v.is_default,
                    enabled: v.enabled,
                    available: v.available,
                    verified_at: v.verified_at.clone(),
                })
            })
            .collect();
        match outcome {
            _ if !action.enabled => {
                let msg = format!("action {} is disabled", action.reference);
                reply.reason = msg.clone();
                reply.error = Some(msg);
            }
            Ok((chosen, reason)) => {
                reply.subject = Some(self.ns.invoke(&runtime.name, &chosen));
                reply.version = Some(chosen);
                reply.reason = reason;
            }
            Err(message) => {
                reply.reason = "no registered version can take this action now".to_string();
                reply.error = Some(message);
            }
        }
        Ok(reply)
    }

    /// How many actions the view knows (for logs and tests).
    pub fn action_count(&self) -> usize {
        self.read().actions.len()
    }

    fn read(&self) -> Arc<State> {
        // A poisoned lock only means a writer panicked mid-swap; the Arc inside is still whole.
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn modify(&self, f: impl FnOnce(&mut State)) {
        let current = self.read();
        let mut next = State {
            runtimes: current.runtimes.clone(),
            actions: current.actions.clone(),
            routes: HashMap::new(),
        };
        f(&mut next);
        self.install(next);
    }

    fn install(&self, mut state: State) {
        state.routes = state
            .actions
            .values()
            .map(|a| (a.reference.clone(), route_of(&self.ns, &state.runtimes, a)))
            .collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }
}

/// Decides where requests for `action` go, given the runtimes as they are now.
fn route_of(ns: &Namespace, runtimes: &HashMap<String, Runtime>, action: &Action) -> Route {
    let reject = |code, message: String| Route::Reject {
        code,
        message: message.into(),
    };
    if !action.enabled {
        return reject(
            RejectCode::Disabled,
            format!("action {} is disabled", action.reference),
        );
    }
    let Some(runtime) = runtimes.get(&action.runtime) else {
        return reject(
            RejectCode::Unavailable,
            format!(
                "runtime \"{}\" of {} is not registered",
                action.runtime, action.reference
            ),
        );
    };
    let constraint = match Constraint::parse_optional(action.runtime_version.as_deref()) {
        Ok(c) => c,
        Err(e) => return reject(RejectCode::Unavailable, e.to_string()),
    };
    match select(&runtime.name, &runtime.candidates(), &constraint) {
        Ok(sel) => Route::Forward(Subject::from(ns.invoke(&runtime.name, &sel.chosen))),
        Err(no) => reject(RejectCode::Unavailable, no.message),
    }
}
