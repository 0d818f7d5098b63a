//! The in-memory view of runtimes and actions that the router and `resolve` answer from.
//!
//! The view is fed two ways: directly by the registry right after each publish (so an API change
//! such as `version.set_default` steers the very next request), and by KV watches on
//! `attune-runtimes` / `attune-actions` (so several registry instances sharing one NATS stay in
//! step). Both carry the same data, so the order they arrive in does not matter for long.
//!
//! Every change recomputes the route of every action up front — the invoke subject, or the
//! rejection with its code and message — so the router's hot path is one hash lookup and a
//! cheap clone, with no parsing, selection or formatting per request. The same decisions, as
//! [`ActionRoute`] documents, go to whoever watches [`View::routes`] ([`crate::routes`] writes
//! the ones that changed to KV `attune-routes`, for clients).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::Subject;
use attune_nats::api::ResolveReply;
use attune_nats::reply::Rejection;
use attune_nats::resolve::{report, resolve, Mode, Refusal};
use attune_nats::wire::{ActionRoute, RouteTarget};
use attune_nats::{Action, Namespace, Runtime};
use tokio::sync::watch;

/// Where a by-name request goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// Forward to this invoke subject.
    Forward(Subject),
    /// Answer at once with this rejection.
    Reject(Arc<Rejection>),
}

#[derive(Default)]
struct State {
    runtimes: HashMap<String, Runtime>,
    actions: HashMap<String, Action>,
    routes: HashMap<String, Route>,
}

/// Every action's route document, by action ref.
pub type RouteDocs = Arc<HashMap<String, ActionRoute>>;

/// Runtimes, actions and precomputed routes; shared by the router and the API.
pub struct View {
    ns: Namespace,
    state: RwLock<Arc<State>>,
    /// The route documents, re-sent only when one of them changes.
    docs: watch::Sender<RouteDocs>,
}

impl View {
    /// An empty view for `ns` (every by-name request is "unknown action" until filled).
    pub fn new(ns: Namespace) -> Self {
        View {
            ns,
            state: RwLock::new(Arc::new(State::default())),
            docs: watch::Sender::new(Arc::default()),
        }
    }

    /// The route documents, current and as they change.
    pub fn routes(&self) -> watch::Receiver<RouteDocs> {
        self.docs.subscribe()
    }

    /// The route of `action_ref`: forward, or reject (an unknown action too). The hot path.
    pub fn route(&self, action_ref: &str) -> Route {
        match self.read().routes.get(action_ref) {
            Some(route) => route.clone(),
            None => Route::Reject(Arc::new(
                Refusal::UnknownAction(action_ref.to_string()).into(),
            )),
        }
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

    /// Where an async job for `action_ref` is queued: the jobs subject of the version the
    /// resolver picks for a job (a queued job may wait for a runner), or why it can never run.
    pub fn job_route(&self, action_ref: &str) -> Result<String, Refusal> {
        let state = self.read();
        resolve(
            action_ref,
            state.actions.get(action_ref),
            |rt| state.runtimes.get(rt),
            None,
            Mode::Job,
        )?
        .into_key()
        .map(|key| key.jobs_subject(&self.ns))
    }

    /// Which version and subject `action_ref` would use now, with a verdict for every registered
    /// version. `constraint` replaces the action's own constraint when given. Fails only for an
    /// unknown action or an invalid constraint; every other refusal is part of the reply.
    pub fn resolve(
        &self,
        action_ref: &str,
        constraint: Option<&str>,
    ) -> Result<ResolveReply, Refusal> {
        let state = self.read();
        let action = state.actions.get(action_ref);
        let resolution = resolve(
            action_ref,
            action,
            |rt| state.runtimes.get(rt),
            constraint,
            Mode::Sync,
        )?;
        let runtime = state.runtimes.get(&resolution.runtime);
        Ok(report(action_ref, &resolution, runtime, &self.ns))
    }

    /// Every registered version as `(runtime, version, enabled, available)`, for metrics.
    pub fn versions(&self) -> Vec<(String, String, bool, bool)> {
        let state = self.read();
        let mut out: Vec<(String, String, bool, bool)> = state
            .runtimes
            .values()
            .flat_map(|rt| {
                rt.versions
                    .iter()
                    .map(|v| (rt.name.clone(), v.version.clone(), v.enabled, v.available))
            })
            .collect();
        out.sort();
        out
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
        let docs: HashMap<String, ActionRoute> = state
            .actions
            .values()
            .map(|a| (a.reference.clone(), document(&self.ns, &state.runtimes, a)))
            .collect();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
        self.docs.send_if_modified(|current| {
            let changed = **current != docs;
            if changed {
                *current = Arc::new(docs);
            }
            changed
        });
    }
}

/// The route document of `action`: both decisions of the one resolver, sync and job.
fn document(ns: &Namespace, runtimes: &HashMap<String, Runtime>, action: &Action) -> ActionRoute {
    let target = |mode| {
        let decided = resolve(
            &action.reference,
            Some(action),
            |rt| runtimes.get(rt),
            None,
            mode,
        )
        .and_then(|r| r.into_key());
        match decided {
            Ok(key) => RouteTarget::Version {
                subject: match mode {
                    Mode::Sync => key.invoke_subject(ns),
                    Mode::Job => key.jobs_subject(ns),
                },
                runtime: key.runtime,
                version: key.version,
            },
            Err(refusal) => RouteTarget::Refused {
                message: refusal.to_string(),
            },
        }
    };
    ActionRoute {
        action: action.reference.clone(),
        sync: target(Mode::Sync),
        job: target(Mode::Job),
        parameters: action.parameters.clone(),
        timeout_seconds: action.timeout_seconds,
    }
}

/// Decides where requests for `action` go, given the runtimes as they are now.
fn route_of(ns: &Namespace, runtimes: &HashMap<String, Runtime>, action: &Action) -> Route {
    let decided = resolve(
        &action.reference,
        Some(action),
        |rt| runtimes.get(rt),
        None,
        Mode::Sync,
    )
    .and_then(|r| r.into_key());
    match decided {
        Ok(key) => Route::Forward(Subject::from(key.invoke_subject(ns))),
        Err(refusal) => Route::Reject(Arc::new(refusal.into())),
    }
}
