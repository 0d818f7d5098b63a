//! The NATS micro service: one endpoint per verified version, and the path of one invocation.
//!
//! Read top to bottom, [`Dispatcher::admit`] and [`Dispatcher::invoke`] are the whole invocation
//! path: admission (back-pressure) → parse → check → wait for a slot → execute → reply.
//!
//! Back-pressure: async-nats delivers every message of a subscription to the client, so the
//! runner bounds what it accepts itself. `concurrency` permits run at once; a request waits for a
//! permit at most until its own deadline (its timeout, counted from arrival); and at most
//! `concurrency + max_pending` requests are accepted at a time. One more is answered at once with
//! `rejected` / 503 "runner overloaded" instead of queueing without bound.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_nats::service::{Request, Service, ServiceExt};
use attune_nats::model::{EnvOp, EnvVar};
use attune_nats::reply::{encode, new_id, read_request, request_id, Rejection};
use attune_nats::subject::{RUNNER_QUEUE_GROUP, RUNNER_SERVICE};
use attune_nats::wire::RejectCode;
use attune_nats::{InvocationReply, InvocationRequest, VersionKey};
use futures::StreamExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn, Instrument};

use crate::catalog::{Catalog, Served};
use crate::check::check_request;
use crate::config::RunnerConfig;
use crate::execute::{self, ExecSpec, Limits};
use crate::template::Vars;

/// Counts accepted invocations (waiting or running) and wakes a drain when none is left.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Accepted and not yet answered.
    count: AtomicUsize,
    /// Notified whenever `count` drops to zero.
    idle: Notify,
}

/// Decrements the tracker when an invocation is answered, however its task ends.
#[derive(Debug)]
pub struct TrackerGuard(Arc<Tracker>);

impl Tracker {
    /// Accepts one more invocation if fewer than `limit` are accepted.
    pub fn try_enter(self: &Arc<Self>, limit: usize) -> Option<TrackerGuard> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| TrackerGuard(self.clone()))
    }

    /// Accepted and unanswered invocations.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no invocation is accepted.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything the invocation path shares: config, catalog, slots.
#[derive(Debug)]
pub struct Dispatcher {
    /// The runner's settings.
    pub config: RunnerConfig,
    /// What is served.
    pub catalog: Arc<Catalog>,
    /// One permit per concurrent execution.
    pub slots: Semaphore,
    /// Accepted invocations, for admission and drain.
    pub tracker: Arc<Tracker>,
    /// The base environment of every process (PATH, HOME, LANG, LC_ALL, TMPDIR).
    pub base_env: Vec<(String, String)>,
    /// Turns `true` when drain's grace is over: running processes are killed.
    pub abort: watch::Receiver<bool>,
    /// Private directory for parameter files.
    pub params_dir: PathBuf,
}

/// The minimal environment of every execution and verification, from this process's own.
pub fn base_env(path: &str) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), path.to_string())];
    for key in ["HOME", "LANG", "LC_ALL", "TMPDIR"] {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_string(), v));
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), "/".into()));
    }
    env
}

/// Sends a reply; a rejection also carries the micro-service error headers.
async fn respond(request: &Request, reply: &InvocationReply, rejection: Option<&Rejection>) {
    let headers = rejection.map(Rejection::headers).unwrap_or_default();
    if let Err(e) = request
        .respond_with_headers(Ok(encode(reply)), headers)
        .await
    {
        warn!(error = %e, id = %reply.id, "could not send the reply");
    }
}

/// What [`Dispatcher::run`] ends with: the reply, and the rejection when nothing ran.
pub(crate) type Answer = (InvocationReply, Option<Rejection>);

impl Dispatcher {
    /// Admission for one message, called by the endpoint loop: accept (and spawn the invocation)
    /// or refuse at once when the runner already holds its maximum.
    pub async fn admit(self: &Arc<Self>, request: Request, key: Arc<VersionKey>) {
        let limit = self.config.concurrency + self.config.max_pending;
        let Some(guard) = self.tracker.try_enter(limit) else {
            let rejection = Rejection::new(
                RejectCode::Unavailable,
                format!(
                    "runner {} overloaded: {limit} invocations accepted already, try again or add runners",
                    self.config.name
                ),
            );
            let id = request_id(&request.message.payload).unwrap_or_else(new_id);
            let reply = self.stamp(rejection.reply(id, ""), &key, None);
            respond(&request, &reply, Some(&rejection)).await;
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.invoke(request, &key).await;
            drop(guard);
        });
    }

    /// Says who served a reply: this runner, `key`, and the detected version if it was served.
    fn stamp(
        &self,
        reply: InvocationReply,
        key: &VersionKey,
        served: Option<&Served>,
    ) -> InvocationReply {
        reply.served_by(
            &key.runtime,
            &key.version,
            &self.config.name,
            served.and_then(|s| s.verified.detected_version.as_deref()),
        )
    }

    /// One invocation, from the raw message to the reply.
    #[instrument(skip_all, fields(runtime = %key.runtime, version = %key.version, id, action))]
    async fn invoke(&self, request: Request, key: &VersionKey) {
        let arrived = Instant::now();
        let span = tracing::Span::current();
        let mut invocation = match read_request(&request.message.payload, None) {
            Ok(r) => r,
            Err(rejection) => {
                let id = request_id(&request.message.payload).unwrap_or_else(new_id);
                let reply = self.stamp(rejection.reply(id, ""), key, None);
                return respond(&request, &reply, Some(&rejection)).await;
            }
        };
        let id = invocation.id.clone().unwrap_or_else(new_id);
        span.record("id", id.as_str())
            .record("action", invocation.action.as_str());
        let (reply, rejection) = self.run(&id, &mut invocation, key, arrived, false).await;
        debug!(status = reply.status.as_str(), "replying");
        respond(&request, &reply, rejection.as_ref()).await;
    }

    /// Checks, waits for a slot, executes; the reply and, for a rejection, why.
    /// `slot_held`: the caller already holds a slot (an async job pulled because one was free,
    /// see `jobs.rs`), so none is taken here.
    pub(crate) async fn run(
        &self,
        id: &str,
        invocation: &mut InvocationRequest,
        key: &VersionKey,
        arrived: Instant,
        slot_held: bool,
    ) -> Answer {
        let lookup = self.catalog.lookup(&invocation.action, key);
        let action_ref = invocation.action.clone();
        let reject = |r: Rejection, served: Option<&Served>| -> Answer {
            let reply = self.stamp(r.reply(id, action_ref.as_str()), key, served);
            (reply, Some(r))
        };
        let Some(served) = lookup.served else {
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!("runner {} does not serve {key}", self.config.name),
                ),
                None,
            );
        };
        if let Err(r) = check_request(lookup.action.as_deref(), key, invocation) {
            return reject(r, Some(&served));
        }
        let prepared = lookup.action.expect("checked above");
        let action = &prepared.action;
        debug!(parameters = %prepared.masked(&invocation.parameters), "accepted");

        let timeout = action.timeout(invocation.timeout_seconds);
        let deadline = arrived + timeout;
        // Before taking a slot: a pack still being fetched, or an environment still being built,
        // is waited for (within the deadline) rather than rejected.
        let wants_env = crate::env::wants_env(&served.config);
        let (pack_dir, env_interpreter) = self
            .catalog
            .wait_prepared(&action.pack, key, wants_env, deadline)
            .await;
        let Some(pack_dir) = pack_dir else {
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!(
                        "pack {} is not available on runner {} yet",
                        action.pack, self.config.name
                    ),
                ),
                Some(&served),
            );
        };
        if wants_env && env_interpreter.is_none() {
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!(
                        "the environment of pack {} for {key} is not ready on runner {}",
                        action.pack, self.config.name
                    ),
                ),
                Some(&served),
            );
        }
        let wait_for_slot = async {
            if slot_held {
                Ok(None)
            } else {
                self.slots.acquire().await.map(Some)
            }
        };
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline.into(), wait_for_slot).await else {
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!(
                        "runner {} had no free slot within the timeout of {timeout:?}",
                        self.config.name
                    ),
                ),
                Some(&served),
            );
        };

        let script = match pack_dir.script(&action.entry_point) {
            Ok(s) => s,
            Err(why) => {
                return reject(
                    Rejection::bad_request(format!("action {}: {why}", action.reference)),
                    Some(&served),
                )
            }
        };
        let program = env_interpreter.unwrap_or_else(|| served.verified.binary.clone());
        let env_dir = crate::env::env_dir(&self.config.envs_dir, &action.pack, key);
        let vars = Vars::new(&pack_dir.path, &env_dir, &program, None);
        let mut args: Vec<OsString> = served
            .config
            .interpreter
            .args
            .iter()
            .map(|a| vars.render(a).into())
            .collect();
        args.push(script.into_os_string());
        let mut env = self.base_env.clone();
        apply_env_vars(&mut env, &served.config.env_vars, &vars);
        for (k, v) in [
            ("ATTUNE_EXEC_ID", id),
            ("ATTUNE_ACTION", action.reference.as_str()),
            ("ATTUNE_PACK_REF", action.pack.as_str()),
            ("ATTUNE_RUNTIME", key.runtime.as_str()),
            ("ATTUNE_RUNTIME_VERSION", key.version.as_str()),
        ] {
            set_env(&mut env, k, v.to_string());
        }
        let spec = ExecSpec {
            program,
            args,
            cwd: pack_dir.path.clone(),
            env,
            parameters: execute::format_parameters(&invocation.parameters, action.parameter_format),
            delivery: action.parameter_delivery,
            params_dir: self.params_dir.clone(),
            params_ext: execute::params_extension(action.parameter_format),
            timeout: deadline.saturating_duration_since(Instant::now()),
        };
        let limits = Limits {
            output_cap: self.config.output_cap,
            kill_grace: self.config.kill_grace,
        };
        let outcome = execute::run(spec, limits, self.abort.clone()).await;
        drop(pack_dir);
        let reply = match outcome {
            Ok(outcome) => {
                let format = action.output_format;
                InvocationReply::finished(id, action.reference.as_str(), outcome, timeout, |out| {
                    execute::parse_output(out, format)
                })
            }
            Err(e) => InvocationReply::not_started(id, action.reference.as_str(), e.to_string()),
        };
        let reply = self.stamp(reply, key, Some(&served));
        info!(status = reply.status.as_str(), exit_code = ?reply.exit_code, duration_ms = reply.duration_ms, "finished");
        (reply, None)
    }
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// Applies a runtime's `env_vars` (set / prepend / append) on top of `env`. Names starting
/// `ATTUNE_` are reserved and skipped.
pub fn apply_env_vars(
    env: &mut Vec<(String, String)>,
    vars: &std::collections::BTreeMap<String, EnvVar>,
    templates: &Vars,
) {
    for (name, var) in vars {
        if name.starts_with("ATTUNE_") {
            continue;
        }
        let (value, op, sep) = match var {
            EnvVar::Value(v) => (templates.render(v), EnvOp::Set, ":".to_string()),
            EnvVar::Op {
                value,
                operation,
                separator,
            } => (
                templates.render(value),
                *operation,
                separator.clone().unwrap_or_else(|| ":".into()),
            ),
        };
        let old = env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let new = match (op, old) {
            (EnvOp::Prepend, Some(old)) if !old.is_empty() => format!("{value}{sep}{old}"),
            (EnvOp::Append, Some(old)) if !old.is_empty() => format!("{old}{sep}{value}"),
            _ => value,
        };
        set_env(env, name, new);
    }
}

/// The micro service and its endpoint loops.
#[derive(Debug)]
pub struct Endpoints {
    /// The `attune-runner` service; `None` once stopped.
    service: tokio::sync::Mutex<Option<Service>>,
    /// Subjects with an endpoint already.
    started: std::sync::Mutex<HashMap<String, ()>>,
    /// The endpoint loops, joined on drain.
    loops: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Endpoints {
    /// Starts the `attune-runner` service (no endpoints yet).
    pub async fn start(
        client: &async_nats::Client,
        config: &RunnerConfig,
    ) -> Result<Self, async_nats::Error> {
        let service = client
            .service_builder()
            .description(format!("Attune runner {}", config.name))
            .metadata(HashMap::from([
                ("host".to_string(), config.host.clone()),
                ("runner".to_string(), config.name.clone()),
            ]))
            .queue_group(RUNNER_QUEUE_GROUP)
            .start(RUNNER_SERVICE, env!("CARGO_PKG_VERSION"))
            .await?;
        Ok(Endpoints {
            service: tokio::sync::Mutex::new(Some(service)),
            started: Default::default(),
            loops: Default::default(),
        })
    }

    /// Adds the endpoint of one served version (once) and starts its loop.
    pub async fn add(
        &self,
        dispatcher: &Arc<Dispatcher>,
        served: &Served,
    ) -> Result<(), async_nats::Error> {
        let v = &served.verified;
        let key = Arc::new(v.key.clone());
        let subject = key.invoke_subject(&dispatcher.config.namespace);
        if self
            .started
            .lock()
            .expect("not poisoned")
            .contains_key(&subject)
        {
            return Ok(());
        }
        let guard = self.service.lock().await;
        let Some(service) = guard.as_ref() else {
            return Ok(());
        };
        let mut metadata = HashMap::from([
            ("runtime".to_string(), key.runtime.clone()),
            ("version".to_string(), key.version.clone()),
            ("host".to_string(), dispatcher.config.host.clone()),
            ("binary".to_string(), v.binary.display().to_string()),
        ]);
        if let Some(d) = &v.detected_version {
            metadata.insert("detected_version".to_string(), d.clone());
        }
        let mut endpoint = service
            .endpoint_builder()
            .name(key.endpoint())
            .metadata(metadata)
            .queue_group(RUNNER_QUEUE_GROUP)
            .add(subject.clone())
            .await?;
        drop(guard);
        info!(%subject, "serving");
        self.started
            .lock()
            .expect("not poisoned")
            .insert(subject.clone(), ());
        let dispatcher = dispatcher.clone();
        let task = tokio::spawn(
            async move {
                // Ends when the service stops and every buffered request has been admitted.
                while let Some(request) = endpoint.next().await {
                    dispatcher.admit(request, key.clone()).await;
                }
                debug!("endpoint closed");
            }
            .instrument(tracing::info_span!("endpoint", %subject)),
        );
        self.loops.lock().expect("not poisoned").push(task);
        Ok(())
    }

    /// Stops taking work: unsubscribes every endpoint, then waits until each loop has admitted
    /// the requests already delivered to it.
    pub async fn stop(&self) {
        if let Some(service) = self.service.lock().await.take() {
            let _ = service.stop().await;
        }
        let loops = std::mem::take(&mut *self.loops.lock().expect("not poisoned"));
        for l in loops {
            let _ = l.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn env_vars_set_prepend_append_and_skip_reserved() {
        let mut env = vec![("PATH".to_string(), "/bin".to_string())];
        let vars: BTreeMap<String, EnvVar> = serde_json::from_value(serde_json::json!({
            "PATH": {"value": "{pack_dir}/bin", "operation": "prepend"},
            "PYTHONPATH": {"value": "{pack_dir}/lib", "operation": "append", "separator": ":"},
            "MODE": "fast",
            "ATTUNE_ACTION": "spoofed"
        }))
        .unwrap();
        let t = Vars::new(
            std::path::Path::new("/p"),
            std::path::Path::new("/e"),
            std::path::Path::new("/i"),
            None,
        );
        apply_env_vars(&mut env, &vars, &t);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/p/bin:/bin"));
        assert_eq!(get("PYTHONPATH"), Some("/p/lib"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("ATTUNE_ACTION"), None);
    }

    #[tokio::test]
    async fn tracker_bounds_admission_and_reports_idle() {
        let t = Arc::new(Tracker::default());
        let a = t.try_enter(2).unwrap();
        let b = t.try_enter(2).unwrap();
        assert!(t.try_enter(2).is_none());
        drop(a);
        assert_eq!(t.count(), 1);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.idle().await }
        });
        drop(b);
        waiter.await.unwrap();
    }
}
