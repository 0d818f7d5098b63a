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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::service::{Request, Service, ServiceExt};
use async_nats::HeaderMap;
use attune_nats::model::{EnvOp, EnvVar};
use attune_nats::subject::{
    HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, RUNNER_QUEUE_GROUP, RUNNER_SERVICE,
};
use attune_nats::wire::RejectCode;
use attune_nats::{InvocationReply, InvocationRequest, Status};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn, Instrument};

use crate::catalog::{Catalog, Served};
use crate::check::{check_request, Rejection};
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
async fn respond(request: &Request, reply: &InvocationReply, code: Option<RejectCode>) {
    let body = serde_json::to_vec(reply)
        .expect("a reply serialises")
        .into();
    let mut headers = HeaderMap::new();
    if let Some(code) = code {
        headers.insert(
            HEADER_SERVICE_ERROR,
            reply.error.as_deref().unwrap_or("rejected"),
        );
        headers.insert(HEADER_SERVICE_ERROR_CODE, code.code().to_string().as_str());
    }
    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
        warn!(error = %e, id = %reply.id, "could not send the reply");
    }
}

impl Dispatcher {
    /// Admission for one message, called by the endpoint loop: accept (and spawn the invocation)
    /// or refuse at once when the runner already holds its maximum.
    pub async fn admit(self: &Arc<Self>, request: Request, runtime: Arc<str>, version: Arc<str>) {
        let limit = self.config.concurrency + self.config.max_pending;
        let Some(guard) = self.tracker.try_enter(limit) else {
            let mut reply = InvocationReply::rejected(
                request_id(&request),
                "",
                format!(
                    "runner {} overloaded: {limit} invocations accepted already, try again or add runners",
                    self.config.name
                ),
            );
            self.stamp(&mut reply, &runtime, &version, None);
            respond(&request, &reply, Some(RejectCode::Unavailable)).await;
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.invoke(request, &runtime, &version).await;
            drop(guard);
        });
    }

    fn stamp(
        &self,
        reply: &mut InvocationReply,
        runtime: &str,
        version: &str,
        served: Option<&Served>,
    ) {
        reply.runtime = Some(runtime.to_string());
        reply.version = Some(version.to_string());
        reply.runner = Some(self.config.name.clone());
        reply.detected_version = served.and_then(|s| s.verified.detected_version.clone());
    }

    /// One invocation, from the raw message to the reply.
    #[instrument(skip_all, fields(runtime, version, id, action))]
    async fn invoke(&self, request: Request, runtime: &str, version: &str) {
        let arrived = Instant::now();
        let span = tracing::Span::current();
        span.record("runtime", runtime).record("version", version);
        let mut invocation: InvocationRequest =
            match serde_json::from_slice(&request.message.payload) {
                Ok(r) => r,
                Err(e) => {
                    let mut reply = InvocationReply::rejected(
                        uuid::Uuid::new_v4().to_string(),
                        "",
                        format!("invalid request body: {e}"),
                    );
                    self.stamp(&mut reply, runtime, version, None);
                    return respond(&request, &reply, Some(RejectCode::BadRequest)).await;
                }
            };
        let id = invocation
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        span.record("id", id.as_str())
            .record("action", invocation.action.as_str());
        let (reply, code) = self
            .run(&id, &mut invocation, runtime, version, arrived, false)
            .await;
        debug!(status = reply.status.as_str(), "replying");
        respond(&request, &reply, code).await;
    }

    /// Checks, waits for a slot, executes; the reply and, for a rejection, its code.
    /// `slot_held`: the caller already holds a slot (an async job pulled because one was free,
    /// see `jobs.rs`), so none is taken here.
    pub(crate) async fn run(
        &self,
        id: &str,
        invocation: &mut InvocationRequest,
        runtime: &str,
        version: &str,
        arrived: Instant,
        slot_held: bool,
    ) -> (InvocationReply, Option<RejectCode>) {
        let lookup = self.catalog.lookup(&invocation.action, runtime, version);
        let action_ref = invocation.action.clone();
        let reject = |r: Rejection, served: Option<&Served>| {
            let mut reply = InvocationReply::rejected(id, action_ref.as_str(), r.reason);
            self.stamp(&mut reply, runtime, version, served);
            (reply, Some(r.code))
        };
        let Some(served) = lookup.served else {
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!(
                        "runner {} does not serve {runtime} {version}",
                        self.config.name
                    ),
                ),
                None,
            );
        };
        if let Err(r) = check_request(lookup.action.as_deref(), runtime, version, invocation) {
            return reject(r, Some(&served));
        }
        let prepared = lookup.action.expect("checked above");
        let action = &prepared.action;
        debug!(parameters = %prepared.masked(&invocation.parameters), "accepted");

        let timeout = invocation
            .timeout_seconds
            .or(action.timeout_seconds)
            .filter(|t| t.is_finite() && *t > 0.0)
            .map_or(self.config.default_timeout, Duration::from_secs_f64);
        let deadline = arrived + timeout;
        // Before taking a slot: a pack still being fetched, or an environment still being built,
        // is waited for (within the deadline) rather than rejected.
        let wants_env = crate::env::wants_env(&served.config);
        let (pack_dir, env_interpreter) = self
            .catalog
            .wait_prepared(&action.pack, runtime, version, wants_env, deadline)
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
                        "the environment of pack {} for {runtime} {version} is not ready on runner {}",
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
                    Rejection::new(
                        RejectCode::BadRequest,
                        format!("action {}: {why}", action.reference),
                    ),
                    Some(&served),
                )
            }
        };
        let program = env_interpreter.unwrap_or_else(|| served.verified.binary.clone());
        let env_dir = crate::env::env_dir(&self.config.envs_dir, &action.pack, runtime, version);
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
            ("ATTUNE_RUNTIME", runtime),
            ("ATTUNE_RUNTIME_VERSION", version),
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
        let outcome = match execute::run(spec, limits, self.abort.clone()).await {
            Ok(o) => o,
            Err(e) => {
                let mut reply =
                    InvocationReply::rejected(id, action.reference.as_str(), e.to_string());
                reply.status = Status::Failed;
                self.stamp(&mut reply, runtime, version, Some(&served));
                return (reply, None);
            }
        };
        drop(pack_dir);

        let mut reply = InvocationReply::rejected(id, action.reference.as_str(), "");
        reply.error = None;
        self.stamp(&mut reply, runtime, version, Some(&served));
        reply.exit_code = outcome.exit_code;
        reply.started_at = Some(outcome.started_at);
        reply.duration_ms = outcome.duration.as_secs_f64() * 1000.0;
        reply.status = if outcome.timed_out {
            reply.error = Some(format!("timed out after {timeout:?}; process group killed"));
            Status::TimedOut
        } else if outcome.aborted {
            reply.error = Some("the runner shut down before the action finished".into());
            Status::Failed
        } else if outcome.exit_code == Some(0) {
            Status::Succeeded
        } else {
            if let Some(sig) = outcome.signal {
                reply.error = Some(format!("killed by signal {sig}"));
            }
            Status::Failed
        };
        if reply.status == Status::Succeeded {
            match execute::parse_output(&outcome.stdout.text, action.output_format) {
                Ok(v) => reply.result = v,
                Err(e) => {
                    reply.result = Value::Null;
                    reply.error = Some(e);
                }
            }
        }
        reply.stdout = outcome.stdout.text;
        reply.stderr = outcome.stderr.text;
        reply.stdout_truncated = outcome.stdout.truncated;
        reply.stderr_truncated = outcome.stderr.truncated;
        info!(status = reply.status.as_str(), exit_code = ?reply.exit_code, duration_ms = reply.duration_ms, "finished");
        (reply, None)
    }
}

/// The request id if the body has one (for replies to refused messages), else a new one.
fn request_id(request: &Request) -> String {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<String>,
    }
    serde_json::from_slice::<IdOnly>(&request.message.payload)
        .ok()
        .and_then(|r| r.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// `<pack>/actions/<entry_point>`, resolved, and refused if it lands outside the pack (a symlink
/// pointing out) or does not exist.
pub fn contained_script(pack_dir: &Path, entry_point: &str) -> Result<PathBuf, String> {
    let script = pack_dir.join("actions").join(entry_point);
    let resolved = script
        .canonicalize()
        .map_err(|e| format!("entry point {entry_point:?} not found in the pack: {e}"))?;
    if !resolved.starts_with(pack_dir) {
        return Err(format!("entry point {entry_point:?} escapes the pack"));
    }
    Ok(resolved)
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
        let subject = dispatcher.config.namespace.invoke(&v.runtime, &v.version);
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
            ("runtime".to_string(), v.runtime.clone()),
            ("version".to_string(), v.version.clone()),
            ("host".to_string(), dispatcher.config.host.clone()),
            ("binary".to_string(), v.binary.display().to_string()),
        ]);
        if let Some(d) = &v.detected_version {
            metadata.insert("detected_version".to_string(), d.clone());
        }
        let mut endpoint = service
            .endpoint_builder()
            .name(format!("{}-{}", v.runtime, v.version.replace('.', "_")))
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
        let (runtime, version): (Arc<str>, Arc<str>) =
            (v.runtime.as_str().into(), v.version.as_str().into());
        let dispatcher = dispatcher.clone();
        let task = tokio::spawn(
            async move {
                // Ends when the service stops and every buffered request has been admitted.
                while let Some(request) = endpoint.next().await {
                    dispatcher
                        .admit(request, runtime.clone(), version.clone())
                        .await;
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
        let t = Vars::new(Path::new("/p"), Path::new("/e"), Path::new("/i"), None);
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
