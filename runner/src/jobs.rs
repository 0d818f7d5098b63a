//! Durable asynchronous invocations: pulling jobs from the stream `ATTUNE_JOBS`, running them
//! through the same path as sync requests, storing results, retrying, acknowledging.
//!
//! For every version it serves, the runner pulls from the one durable consumer all runners of
//! that version share ([`VersionKey::consumer`]). It pulls only what it can run now: a pull loop waits
//! until an execution slot is free (the same slots sync requests use), then asks for at most as
//! many jobs as there are free slots, so no runner hoards jobs another could be running. The
//! slots are taken when the jobs arrive, not while the pull waits, so an idle runner's slots stay
//! free for sync requests; a job whose slot a sync request took in between waits for the next. One
//! job:
//!
//! 1. Read its record in `attune-results`. A final record means it already ran to the end (a
//!    redelivery after the result was stored, or the same id published again): acknowledge and
//!    stop, so each id has exactly one final result.
//! 2. Run it with [`Dispatcher::run`], exactly as a sync request, sending a progress
//!    acknowledgement every [`PROGRESS_INTERVAL`] so a long action keeps its job.
//! 3. Record the attempt. A retryable outcome with attempts left (the action's [`RetryPolicy`])
//!    stores the record as not final and asks for redelivery after the policy's delay (a delayed
//!    negative acknowledgement: the job stays in the stream, nothing is republished). Otherwise
//!    the record is final; a reply too large for a message goes to `attune-results-files`.
//! 4. Store the record, announce a final one on `attune.results.<id>`, and only then
//!    acknowledge. A runner killed before that never acknowledges, and the server redelivers the
//!    job to another runner after [`ACK_WAIT`](attune_nats::jobs::ACK_WAIT).
//!
//! The attempt number is the count of recorded attempts plus one, not the delivery count: a
//! delivery whose runner died, or which found the runner not ready yet (pack not fetched, action
//! not seen yet), records nothing and is not an attempt. Such unrecorded deliveries are bounded
//! ([`MAX_UNRECORDED_DELIVERIES`]), so a job that kills every runner ends as a dead letter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, kv, message::AckKind};
use async_nats::jetstream::{object_store::ObjectStore, stream};
use attune_nats::concurrency::Concurrency;
use attune_nats::jetstream::StoreError;
use attune_nats::jobs::{
    consumer_config, Attempt, Job, ResultRecord, RetryPolicy, PROGRESS_INTERVAL,
};
use attune_nats::name::check_id;
use attune_nats::reply::{check_request, Rejection};
use attune_nats::subject::HEADER_MSG_ID;
use attune_nats::wire::RejectCode;
use attune_nats::VersionKey;
use attune_nats::{InvocationReply, Namespace, Status};
use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn, Instrument};

use crate::admission::TrackerGuard;
use crate::catalog::Served;
use crate::concurrency::SlotLease;
use crate::history::Origin;
use crate::service::Dispatcher;
use attune_nats::executions::ExecutionMode;
use attune_nats::shutdown::{self, Shutdown, ShutdownTrigger};

/// How long one pull waits for jobs before asking again (also the longest a drain waits for a
/// pull loop to notice it).
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Most jobs asked for in one pull (when that many slots are free).
const MAX_PULL: usize = 64;
/// Deliveries without a recorded attempt (runner died, runner not ready) before a job is given up.
pub const MAX_UNRECORDED_DELIVERIES: u64 = 10;
/// Deliveries of a job naming an action this runner does not know before it is rejected.
const UNKNOWN_ACTION_DELIVERIES: u64 = 3;
/// Wait before redelivering a job this runner could not run yet (its pack or action not there).
const NOT_READY_DELAY: Duration = Duration::from_secs(1);

/// The jobs side of a runner: one pull loop per served version.
pub struct Jobs {
    /// Publishes results on `attune.results.<id>`.
    nats: async_nats::Client,
    /// The namespace in use.
    ns: Namespace,
    /// The jobs stream, to open consumers on.
    stream: stream::Stream,
    /// `attune-results`.
    results: kv::Store,
    /// `attune-results-files`, for replies too large for a message.
    files: ObjectStore,
    /// Largest record stored inline.
    inline_limit: usize,
    /// Stops the pull loops.
    stop: ShutdownTrigger,
    /// Versions with a pull loop, each with the trigger that stops just that loop.
    started: Mutex<HashMap<String, ShutdownTrigger>>,
    /// The pull loops, joined on drain.
    loops: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("stream", &self.ns.stream_jobs())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// A slot taken before pulling, returned to the dispatcher when the job is done with it.
struct Slot(Arc<Dispatcher>);

impl Slot {
    /// Takes a slot as a permit that outlives any borrow of the dispatcher.
    fn hold(dispatcher: &Arc<Dispatcher>, permit: tokio::sync::SemaphorePermit<'_>) -> Slot {
        permit.forget();
        Slot(dispatcher.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.add_permits(1);
    }
}

/// What a pulled job holds while it is handled: its slot if one was free on arrival (given back
/// once it has run) and its place in the tracker (drain waits for it).
struct Claim {
    slot: Option<Slot>,
    _tracked: TrackerGuard,
}

/// Runs `work` to its end, extending the job's ack deadline every `progress` meanwhile, so a
/// job that waits or runs long is not redelivered to another runner.
async fn with_progress<T>(
    msg: &jetstream::Message,
    progress: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + progress, progress);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    warn!(error = %e, "could not extend the job's ack deadline");
                }
            }
        }
    }
}

/// The cluster-wide slot of a job of a limited action: at once when one is free, else after
/// *parking*: the job takes a place among the parked (bounded per runner), gives back the
/// runner's slot it holds (`slot`), and waits, keeping its delivery with progress
/// acknowledgements. `None` when the runner starts draining meanwhile.
async fn park_for_slot(
    dispatcher: &Dispatcher,
    msg: &jetstream::Message,
    progress: Duration,
    action: &str,
    limit: Concurrency,
    id: &str,
    slot: &mut Option<Slot>,
) -> Option<SlotLease> {
    if let Ok(lease) = dispatcher.cluster.try_take(action, limit, id).await {
        return Some(lease);
    }
    let parked = with_progress(msg, progress, dispatcher.parking.acquire())
        .await
        .expect("the parking is never closed");
    drop(slot.take());
    debug!(
        limit = limit.limit,
        "every slot of the action is taken: the job waits for one"
    );
    let taken = dispatcher
        .cluster
        .take(action, limit, id, None, dispatcher.stopped());
    let lease = with_progress(msg, progress, taken).await.ok();
    drop(parked);
    lease
}

/// What became of one delivery.
enum Disposition {
    /// The record is final: announce it and acknowledge.
    Final(ResultRecord),
    /// Run again after the delay; the record (if any) is stored first.
    Retry(Option<ResultRecord>, Duration),
}

impl Jobs {
    /// The jobs side over the stream, the results bucket and the results object store, which the
    /// registry provisioned and the runner opened.
    pub fn new(
        client: &async_nats::Client,
        ns: &Namespace,
        stream: stream::Stream,
        results: kv::Store,
        files: ObjectStore,
    ) -> Self {
        let max_payload = client.server_info().max_payload;
        Jobs {
            nats: client.clone(),
            ns: ns.clone(),
            stream,
            results,
            files,
            inline_limit: attune_nats::reply::body_limit(max_payload),
            stop: shutdown::channel().0,
            started: Mutex::default(),
            loops: Mutex::default(),
        }
    }

    /// Starts pulling the jobs of one served version (once).
    pub async fn add(
        self: &Arc<Self>,
        dispatcher: &Arc<Dispatcher>,
        served: &Served,
    ) -> Result<(), StoreError> {
        let key = served.verified.key.clone();
        let name = key.consumer();
        let (trigger, removed) = shutdown::channel();
        {
            let mut started = self.started.lock().expect("not poisoned");
            if self.stop.is_triggered() || started.contains_key(&name) {
                return Ok(());
            }
            started.insert(name.clone(), trigger);
        }
        let consumer = match self.consumer(&key).await {
            Ok(c) => c,
            Err(e) => {
                self.started.lock().expect("not poisoned").remove(&name);
                return Err(e);
            }
        };
        info!(consumer = %name, subject = %key.jobs_subject(&self.ns), "pulling jobs");
        let task = tokio::spawn(
            self.clone()
                .pull_loop(
                    dispatcher.clone(),
                    consumer,
                    Arc::new(key),
                    self.stop.subscribe(),
                    removed,
                )
                .instrument(tracing::info_span!("jobs", consumer = %name)),
        );
        self.loops.lock().expect("not poisoned").push(task);
        Ok(())
    }

    /// Stops pulling the jobs of `key` (a version no longer served): the loop hands over what it
    /// already got and ends; the durable consumer stays, for the runners that still serve it.
    pub fn remove(&self, key: &VersionKey) {
        if let Some(trigger) = self
            .started
            .lock()
            .expect("not poisoned")
            .remove(&key.consumer())
        {
            trigger.trigger();
        }
    }

    /// Stops pulling and waits until every pull loop has handed over the jobs it already got.
    pub async fn stop(&self) {
        self.stop.trigger();
        let loops = std::mem::take(&mut *self.loops.lock().expect("not poisoned"));
        for l in loops {
            let _ = l.await;
        }
    }

    /// Opens this version's durable consumer, creating it the first time: the one JetStream
    /// object a runner creates (consumer info, then consumer create on the jobs stream).
    async fn consumer(&self, key: &VersionKey) -> Result<PullConsumer, StoreError> {
        let config = consumer_config(&self.ns, key);
        let name = key.consumer();
        self.stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| StoreError::new("consumer", name, e))
    }

    /// Pulls as many jobs as there are free slots, hands each to its own task, repeats.
    async fn pull_loop(
        self: Arc<Self>,
        dispatcher: Arc<Dispatcher>,
        mut consumer: PullConsumer,
        key: Arc<VersionKey>,
        mut stopped: Shutdown,
        mut removed: Shutdown,
    ) {
        // One signal for "the runner stops" and "this version is no longer served".
        let (either, mut shutdown) = shutdown::channel();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.recv() => {}
                _ = removed.recv() => {}
            }
            either.trigger();
        });
        let mut failures = 0u32;
        loop {
            // Wait until a slot is free, but do not hold it while the pull waits for jobs: sync
            // requests arriving meanwhile must find it.
            // Biased: with a slot free both branches are ready, and an unbiased select would
            // go on pulling (another 2 s pull) half the time after the runner was told to stop.
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                permit = dispatcher.slots.acquire() => drop(permit),
            };
            // And a place to park, should a job pulled have to wait for its action's
            // cluster-wide slot: parked jobs are bounded, the rest stay queued in the stream.
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                permit = dispatcher.parking.acquire() => drop(permit),
            };
            let free = dispatcher.slots.available_permits().clamp(1, MAX_PULL);
            let batch = consumer
                .batch()
                .max_messages(free)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, "pulling jobs failed; retrying");
                    if self.pause(&mut shutdown, failures).await {
                        break;
                    }
                    if let Ok(c) = self.consumer(&key).await {
                        consumer = c;
                    }
                    continue;
                }
            };
            // Not interrupted by shutdown: a job delivered to this pull must be handed over, or
            // it would wait out its ack deadline. The pull ends within PULL_EXPIRES.
            while let Some(msg) = batch.next().await {
                match msg {
                    Ok(msg) => {
                        failures = 0;
                        // Taken here, before the next pull looks for free slots. If a sync
                        // request took the slot meanwhile, the job waits for one.
                        let slot = dispatcher
                            .slots
                            .try_acquire()
                            .ok()
                            .map(|p| Slot::hold(&dispatcher, p));
                        let guard = dispatcher
                            .tracker
                            .try_enter(usize::MAX)
                            .expect("no limit for jobs already pulled");
                        let this = self.clone();
                        let (d, k) = (dispatcher.clone(), key.clone());
                        let progress = Self::progress_interval(&consumer);
                        tokio::spawn(async move {
                            let claim = Claim {
                                slot,
                                _tracked: guard,
                            };
                            this.handle(d, msg, &k, progress, claim).await;
                        });
                    }
                    Err(e) => {
                        // The consumer or stream went away (a wiped JetStream, a restart):
                        // open it again before the next pull.
                        debug!(error = %e, "pull ended with an error");
                        failures += 1;
                        if let Ok(c) = self.consumer(&key).await {
                            consumer = c;
                        }
                        break;
                    }
                }
            }
        }
        debug!("stopped pulling");
    }

    /// How often to extend the ack deadline of a running job: [`PROGRESS_INTERVAL`], or a third of
    /// the consumer's ack wait if an operator made that shorter.
    fn progress_interval(consumer: &PullConsumer) -> Duration {
        let ack_wait = consumer.cached_info().config.ack_wait;
        if ack_wait.is_zero() {
            return PROGRESS_INTERVAL;
        }
        PROGRESS_INTERVAL
            .min(ack_wait / 3)
            .max(Duration::from_millis(100))
    }

    /// Waits before retrying a failed pull (longer after repeated failures); `true` on shutdown.
    async fn pause(&self, shutdown: &mut Shutdown, failures: u32) -> bool {
        let delay = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
        tokio::select! {
            _ = shutdown.recv() => true,
            _ = tokio::time::sleep(delay) => false,
        }
    }

    /// One delivery of one job, from the message to the acknowledgement.
    #[instrument(skip_all, fields(id, attempt))]
    async fn handle(
        &self,
        dispatcher: Arc<Dispatcher>,
        msg: jetstream::Message,
        key: &VersionKey,
        progress: Duration,
        claim: Claim,
    ) {
        let Claim { slot, _tracked } = claim;
        let (delivered, sequence) = msg
            .info()
            .map(|i| (i.delivered.max(1) as u64, i.stream_sequence))
            .unwrap_or((1, 0));
        // A job published straight to the stream skipped every edge check: make them here. A
        // job that fails them gets a final rejected record (under a safe id) and is never
        // redelivered.
        let parsed: Result<Job, Rejection> = serde_json::from_slice::<Job>(&msg.payload)
            .map_err(|e| Rejection::bad_request(format!("invalid job body: {e}")))
            .and_then(|job| check_request(&job.request).map(|()| job));
        let id = parsed
            .as_ref()
            .ok()
            .and_then(|j| j.request.id.clone())
            .or_else(|| {
                msg.headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_MSG_ID))
                    .map(|v| v.to_string())
            })
            // The id names a KV key and a subject: one that is not safe is not used.
            .filter(|id| check_id(id).is_ok())
            // Stable across redeliveries, so a job without a usable id still has one record.
            .unwrap_or_else(|| format!("{}-{sequence}", self.ns.stream_jobs()));
        let span = tracing::Span::current();
        span.record("id", id.as_str());

        let previous = match self.results.get(&id).await {
            Ok(v) => v.and_then(|b| serde_json::from_slice::<ResultRecord>(&b).ok()),
            Err(e) => {
                // Without knowing what ran before, running could make a second final result.
                warn!(error = %e, "cannot read the job's record; redelivering later");
                let _ = msg.ack_with(AckKind::Nak(Some(NOT_READY_DELAY))).await;
                return;
            }
        };
        if let Some(p) = previous.as_ref().filter(|p| p.is_final) {
            debug!(
                status = p.reply.status.as_str(),
                "already final: acknowledging"
            );
            let _ = msg.double_ack().await;
            return;
        }
        let attempts = previous.map(|p| p.attempts).unwrap_or_default();
        let attempt = attempts.len() as u32 + 1;
        span.record("attempt", attempt);
        let unrecorded = delivered.saturating_sub(attempts.len() as u64);
        let subject = msg.subject.to_string();
        let enqueued_at = parsed.as_ref().ok().and_then(|j| j.enqueued_at);
        let (event, rule) = parsed
            .as_ref()
            .ok()
            .map(|j| (j.event.clone(), j.rule.clone()))
            .unwrap_or_default();
        let record =
            |reply: InvocationReply, attempts: Vec<Attempt>, is_final: bool| ResultRecord {
                dead_letter: is_final && reply.status != Status::Succeeded,
                reply,
                attempts,
                is_final,
                object: None,
                subject: subject.clone(),
                enqueued_at,
                event: event.clone(),
                rule: rule.clone(),
                updated_at: time::OffsetDateTime::now_utc(),
                next_attempt_at: None,
            };
        let stamp = |reply: InvocationReply| {
            reply.served_by(&key.runtime, &key.version, &dispatcher.config.name, None)
        };

        let disposition = match parsed {
            Err(rejection) => {
                let reply = stamp(rejection.reply(&id, ""));
                let mut attempts = attempts;
                attempts.push(Attempt::of(attempt, &reply));
                Disposition::Final(record(reply, attempts, true))
            }
            Ok(_) if unrecorded > MAX_UNRECORDED_DELIVERIES => {
                let mut reply = stamp(InvocationReply::rejected(
                    &id,
                    "",
                    format!(
                        "delivered {delivered} times without a recorded attempt: runners died running it, or none could run it"
                    ),
                ));
                reply.status = Status::Failed;
                let mut attempts = attempts;
                attempts.push(Attempt::of(attempt, &reply));
                Disposition::Final(record(reply, attempts, true))
            }
            Ok(job) => {
                // A limited action's job takes one of its cluster-wide slots first. None free:
                // the job parks here (a bounded number per runner, see the pull loop), giving
                // back its execution slot meanwhile, and keeps its delivery with progress
                // acknowledgements; a drain hands it back to the stream.
                let limited = dispatcher
                    .catalog
                    .lookup(&job.request.action, key)
                    .action
                    .and_then(|p| p.action.concurrency);
                let mut slot = slot;
                let cluster_slot = match limited {
                    None => None,
                    Some(limit) => {
                        let action = job.request.action.as_str();
                        let taken = park_for_slot(
                            &dispatcher,
                            &msg,
                            progress,
                            action,
                            limit,
                            &id,
                            &mut slot,
                        );
                        match taken.await {
                            Some(lease) => Some(lease),
                            None => {
                                info!("runner stopping: the waiting job goes back to the queue");
                                let _ = msg.ack_with(AckKind::Nak(None)).await;
                                return;
                            }
                        }
                    }
                };
                let slot = match slot {
                    Some(slot) => slot,
                    None => {
                        let p = with_progress(&msg, progress, dispatcher.slots.acquire()).await;
                        Slot::hold(&dispatcher, p.expect("the slots are never closed"))
                    }
                };
                let mut request = job.request;
                request.id = Some(id.clone());
                let origin = Origin {
                    mode: ExecutionMode::Job,
                    attempts: u64::from(attempt),
                    requested_at: job.enqueued_at,
                    event: job.event.clone(),
                    rule: job.rule.clone(),
                };
                let run = dispatcher.run(&id, &mut request, key, Instant::now(), true, &origin);
                let (reply, code) = with_progress(&msg, progress, run).await;
                drop(slot);
                drop(cluster_slot);
                if *dispatcher.abort.borrow() {
                    // Killed by this runner's drain, not by its own doing: another runner runs it.
                    info!("drain killed the job: leaving it for another runner");
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return;
                }
                // The runner may lag behind KV by a moment (an action or pack just registered):
                // such a delivery is tried again, a few times for an unknown action (a job
                // published directly may name one that does not exist), more for a pack or
                // environment still being prepared.
                let patience = match code.map(|r| r.code) {
                    Some(RejectCode::Unavailable) => MAX_UNRECORDED_DELIVERIES,
                    Some(RejectCode::UnknownAction) => UNKNOWN_ACTION_DELIVERIES,
                    _ => 0,
                };
                if unrecorded < patience {
                    debug!(error = ?reply.error, "runner not ready for the job yet: redelivering");
                    Disposition::Retry(None, NOT_READY_DELAY)
                } else {
                    let policy = dispatcher
                        .catalog
                        .lookup(&request.action, key)
                        .action
                        .and_then(|p| p.action.retry.clone());
                    let mut attempts = attempts;
                    attempts.push(Attempt::of(attempt, &reply));
                    match policy.filter(|p: &RetryPolicy| p.retries(reply.status, attempt)) {
                        Some(p) => {
                            let delay = p.delay_after(attempt);
                            let mut r = record(reply, attempts, false);
                            r.next_attempt_at = Some(time::OffsetDateTime::now_utc() + delay);
                            info!(?delay, "retrying");
                            Disposition::Retry(Some(r), delay)
                        }
                        None => Disposition::Final(record(reply, attempts, true)),
                    }
                }
            }
        };

        match &disposition {
            Disposition::Retry(Some(_), _) => dispatcher.metrics.job("retrying"),
            Disposition::Retry(None, _) => {}
            Disposition::Final(r) if r.dead_letter => dispatcher.metrics.job("dead_letter"),
            Disposition::Final(_) => dispatcher.metrics.job("succeeded"),
        }
        match disposition {
            Disposition::Retry(record, delay) => {
                if let Some(record) = record {
                    if let Err(e) = self.store(&id, record).await {
                        // Not recorded: the delivery is redelivered after the ack deadline.
                        warn!(error = %e, "could not record the attempt");
                        return;
                    }
                }
                if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                    warn!(error = %e, "could not schedule the retry");
                }
            }
            Disposition::Final(record) => {
                let status = record.reply.status;
                let stored = match self.store(&id, record).await {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "could not store the result; the job will be redelivered");
                        return;
                    }
                };
                if let Err(e) = self.nats.publish(self.ns.results(&id), stored).await {
                    warn!(error = %e, "could not announce the result");
                }
                if let Err(e) = msg.double_ack().await {
                    // The result is stored: a redelivery finds it final and only acknowledges.
                    warn!(error = %e, "could not acknowledge the job");
                }
                debug!(status = status.as_str(), "job done");
            }
        }
    }

    /// Stores `record` under `id` (the reply in the object store when too large), returning
    /// the bytes stored in KV, which are also what `attune.results.<id>` carries.
    async fn store(&self, id: &str, mut record: ResultRecord) -> Result<bytes::Bytes, StoreError> {
        let mut body = serde_json::to_vec(&record).expect("records serialise");
        if body.len() > self.inline_limit {
            let full = serde_json::to_vec(&record.reply).expect("replies serialise");
            self.files
                .put(id, &mut full.as_slice())
                .await
                .map_err(|e| StoreError::new("object store", self.ns.object_results_files(), e))?;
            record.reply.result = Value::Null;
            record.reply.stdout = String::new();
            record.reply.stderr = String::new();
            record.object = Some(id.to_string());
            body = serde_json::to_vec(&record).expect("records serialise");
        }
        let body = bytes::Bytes::from(body);
        self.results
            .put(id, body.clone())
            .await
            .map_err(|e| StoreError::new("KV bucket", self.ns.kv_results(), e))?;
        Ok(body)
    }
}
