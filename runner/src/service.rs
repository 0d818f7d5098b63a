//! The path of one invocation, from the request to the reply.
//!
//! Read top to bottom, [`Dispatcher::admit`], [`Dispatcher::invoke`] and [`Dispatcher::run`] are
//! the whole invocation path: admission (back-pressure, [`crate::admission`]) → read the request
//! (the shared edge check) → check it against the action ([`crate::check`]) → wait for the pack
//! and its environment → wait for a slot → execute ([`crate::execute`]) → reply (the shared
//! reply vocabulary of `attune_nats::reply`). A request waits for a slot at most until its own
//! deadline (its timeout, counted from arrival).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::object_store::ObjectStore;
use attune_nats::concurrency::{Concurrency, ConcurrencyPolicy};
use attune_nats::micro::Request;
use attune_nats::reply::{encode, new_id, read_request, request_id, Rejection};
use attune_nats::wire::RejectCode;
use attune_nats::{InvocationReply, InvocationRequest, VersionKey};
use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, instrument, warn};

use crate::admission::Tracker;
use crate::catalog::{Catalog, Served};
use crate::check::check_request;
use crate::concurrency::{ClusterSlots, SlotError, SlotLease};
use crate::config::RunnerConfig;
use crate::execute::{self, ExecSpec, Limits};
use crate::history::{Origin, Seen};
use crate::output::{parse_output, INLINE_PARSE_LIMIT};
use crate::procenv::{command_args, process_env};
use crate::template::Vars;
use crate::warm::PoolKey;

/// Everything the invocation path shares: config, catalog, slots.
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
    /// `attune-results-files`: where a reply too large for a message is kept whole.
    pub results_files: ObjectStore,
    /// The largest reply body sent inline (from the server's `max_payload`).
    pub reply_limit: usize,
    /// Pre-started interpreters.
    pub warm: crate::warm::Pools,
    /// Execution records, queued for `ATTUNE_EXECUTIONS`.
    pub history: crate::history::History,
    /// Live output, published on `attune.output.<id>`.
    pub live: crate::live::Live,
    /// Counters for `--metrics-addr`.
    pub metrics: crate::metrics::Metrics,
    /// The cluster-wide slots of actions with a concurrency limit.
    pub cluster: Arc<ClusterSlots>,
    /// Places for jobs waiting for their action's cluster-wide slot (one per execution slot).
    pub parking: Semaphore,
    /// Turns `true` when the runner starts draining: waits for a cluster-wide slot give up.
    pub stopping: watch::Receiver<bool>,
    /// Whether executions are recorded and their output streamed live (`--no-record` turns it
    /// off; the bench flips it to measure what recording costs).
    pub recording: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("runner", &self.config.name)
            .field("free_slots", &self.slots.available_permits())
            .field("accepted", &self.tracker.count())
            .field("reply_limit", &self.reply_limit)
            .finish_non_exhaustive()
    }
}

/// Sends a reply; a rejection also carries the micro-service error headers.
async fn respond(request: &Request, reply: &InvocationReply, rejection: Option<&Rejection>) {
    send(request, encode(reply), rejection).await;
}

/// Sends an encoded reply (`body`), with the error headers of `rejection` if it is one.
async fn send(request: &Request, body: Bytes, rejection: Option<&Rejection>) {
    let headers = rejection.map(Rejection::headers).unwrap_or_default();
    if let Err(e) = request.respond(body, headers).await {
        warn!(error = %e, "could not send the reply");
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

    /// Resolves once the runner starts draining: what waits for a cluster-wide slot gives up.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    /// Whether executions are recorded and streamed now.
    pub fn recording(&self) -> bool {
        self.recording.load(std::sync::atomic::Ordering::Relaxed)
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
        let origin = Origin::sync();
        let (reply, rejection) = self
            .run(&id, &mut invocation, key, arrived, false, &origin)
            .await;
        debug!(status = reply.status.as_str(), "replying");
        let body = self.fit(reply).await;
        send(&request, body, rejection.as_ref()).await;
    }

    /// A reply body that fits in one message: the reply as it is when it does; else the whole
    /// reply goes to `attune-results-files` (as `sync-<id>`) and the body sent is the reply
    /// without its bulk, naming the object. If storing fails, the reply sent is cut all the same
    /// and says why.
    async fn fit(&self, reply: InvocationReply) -> Bytes {
        let body = encode(&reply);
        if body.len() <= self.reply_limit {
            return body;
        }
        let name = format!("sync-{}", reply.id);
        match self
            .results_files
            .put(name.as_str(), &mut body.as_ref())
            .await
        {
            Ok(_) => encode(&reply.without_bulk(Some(name))),
            Err(e) => {
                warn!(error = %e, bytes = body.len(), "could not store a reply too large for a message");
                let mut slim = reply.without_bulk(None);
                slim.error = Some(format!(
                    "the reply ({} bytes) is larger than a NATS message allows and could not be stored whole: {e}",
                    body.len()
                ));
                encode(&slim)
            }
        }
    }

    /// Takes a cluster-wide slot of `action` for a sync invocation: at once or not at all
    /// (policy `reject`), or waiting until `deadline` (policy `wait`).
    async fn cluster_slot(
        &self,
        id: &str,
        action: &str,
        limit: Concurrency,
        deadline: Instant,
        timeout: std::time::Duration,
    ) -> Result<SlotLease, Rejection> {
        let taken = match limit.policy {
            ConcurrencyPolicy::Reject => self.cluster.try_take(action, limit, id).await,
            ConcurrencyPolicy::Wait => {
                self.cluster
                    .take(action, limit, id, Some(deadline.into()), self.stopped())
                    .await
            }
        };
        taken.map_err(|e| {
            let limit_text = limit.describe(action);
            match (e, limit.policy) {
                (SlotError::Full { .. }, ConcurrencyPolicy::Reject) => Rejection::new(
                    RejectCode::LimitReached,
                    format!(
                        "{limit_text}, and {} are running: try again later",
                        limit.limit
                    ),
                ),
                (SlotError::Full { .. }, ConcurrencyPolicy::Wait) => Rejection::new(
                    RejectCode::LimitReached,
                    format!("{limit_text}: no slot came free within the timeout of {timeout:?}"),
                ),
                (SlotError::Unreachable(why), _) => Rejection::new(
                    RejectCode::Unavailable,
                    format!("{limit_text}, but its slots cannot be checked: {why}"),
                ),
                (SlotError::GivenUp, _) => Rejection::new(
                    RejectCode::Unavailable,
                    format!("runner {} is stopping: try again", self.config.name),
                ),
            }
        })
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
        origin: &Origin,
    ) -> Answer {
        let mut seen = Seen::default();
        let answer = self
            .run_checked(id, invocation, key, arrived, slot_held, origin, &mut seen)
            .await;
        if self.recording() {
            self.history.finished(&answer.0, &seen, origin);
        }
        self.metrics.observe(&answer.0);
        answer
    }

    /// [`Dispatcher::run`] without the final record: fills `seen` once the request passed its
    /// checks, and records the start just before the process starts.
    #[allow(clippy::too_many_arguments)]
    async fn run_checked(
        &self,
        id: &str,
        invocation: &mut InvocationRequest,
        key: &VersionKey,
        arrived: Instant,
        slot_held: bool,
        origin: &Origin,
        seen: &mut Seen,
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
        let masked = prepared.masked(&invocation.parameters);
        debug!(parameters = %masked, "accepted");
        if let serde_json::Value::Object(parameters) = masked {
            seen.parameters = parameters;
        }
        seen.constraint = action.runtime_version.clone();

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
        // One `stat`: an environment whose interpreter was deleted is rebuilt in the background
        // and refused meanwhile, never run into a "failed" that is not the action's fault.
        if let Some(interpreter) = env_interpreter
            .as_deref()
            .filter(|i| !crate::env::is_usable_interpreter(i))
        {
            self.catalog.env_broken(&action.pack, key);
            return reject(
                Rejection::new(
                    RejectCode::Unavailable,
                    format!(
                        "the environment of pack {} for {key} on runner {} is broken (its \
                         interpreter {} is missing): it is being rebuilt, try again shortly",
                        action.pack,
                        self.config.name,
                        interpreter.display()
                    ),
                ),
                Some(&served),
            );
        }
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
        // A limited action takes one of its cluster-wide slots before a slot of this runner
        // (a job arrives holding both, see `jobs.rs`).
        let _cluster_slot = match action.concurrency.filter(|_| !slot_held) {
            Some(limit) => match self
                .cluster_slot(id, &action.reference, limit, deadline, timeout)
                .await
            {
                Ok(lease) => Some(lease),
                Err(r) => return reject(r, Some(&served)),
            },
            None => None,
        };
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
        let args = command_args(&served.config, &vars, script);
        let env = process_env(
            &self.base_env,
            &served.config,
            &vars,
            id,
            &action.reference,
            &action.pack,
            key,
        );
        // Live output masks what the secret parameters hold.
        let secrets: Vec<String> = prepared
            .secrets
            .iter()
            .filter_map(|name| invocation.parameters.get(name))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        seen.secrets = secrets.clone();
        let recording = self.recording();
        let tap = recording.then(|| self.live.tap(self.config.namespace.output(id), secrets));
        let spec = ExecSpec {
            program,
            args,
            cwd: pack_dir.path.clone(),
            env,
            parameters: crate::delivery::format_parameters(
                &invocation.parameters,
                action.parameter_format,
            ),
            delivery: action.parameter_delivery,
            params_dir: self.params_dir.clone(),
            params_ext: crate::delivery::params_extension(action.parameter_format),
            timeout: deadline.saturating_duration_since(Instant::now()),
            live: tap.clone(),
        };
        let limits = Limits {
            output_cap: self.config.output_cap,
            kill_grace: self.config.kill_grace,
        };
        if recording {
            self.history
                .started(id, &action.reference, key, seen, origin);
        }
        let warm = match (&served.config.warm, action.warm) {
            (Some(w), true) => {
                let preload = self.catalog.preload(&action.pack, &key.runtime);
                let env_dir = wants_env.then_some(env_dir.as_path());
                let pool = PoolKey::of(w.launcher, &action.pack, key, &spec, preload, env_dir);
                self.warm.get(&pool).await
            }
            _ => None,
        };
        let (outcome, ran_warm) = match warm {
            Some(ready) => match execute::run_warm(ready, spec, limits, self.abort.clone()).await {
                Ok((outcome, warm)) => (Ok(outcome), warm),
                Err(e) => (Err(e), false),
            },
            None => (execute::run(spec, limits, self.abort.clone()).await, false),
        };
        drop(pack_dir);
        if let Some(tap) = &tap {
            tap.finish();
        }
        let reply = match outcome {
            Ok(outcome) => {
                let big = outcome.stdout.text.len() > INLINE_PARSE_LIMIT;
                let (id, action_ref, format) = (
                    id.to_string(),
                    action.reference.clone(),
                    action.output_format,
                );
                let finish = move || {
                    InvocationReply::finished(id, action_ref, outcome, timeout, |out| {
                        parse_output(out, format)
                    })
                };
                if big {
                    tokio::task::spawn_blocking(finish)
                        .await
                        .expect("building a reply does not panic")
                } else {
                    finish()
                }
            }
            Err(e) => InvocationReply::not_started(id, action.reference.as_str(), e.to_string()),
        };
        let mut reply = self.stamp(reply, key, Some(&served));
        reply.warm = ran_warm;
        reply.mask_secrets(&seen.secrets);
        info!(warm = ran_warm, status = reply.status.as_str(), exit_code = ?reply.exit_code, duration_ms = reply.duration_ms, "finished");
        (reply, None)
    }
}
