//! Execution history: the runner's side of `ATTUNE_EXECUTIONS`.
//!
//! Each invocation this runner handles gets a record when its process starts and one when it
//! ends (see [`attune_nats::executions`]); the start record of an execution that ends within
//! [`START_HOLD`] is superseded before it is written. Recording must never fail or slow the invocation, so
//! the invocation only queues the record; one task publishes the queue in order (a record of an
//! execution's end is never stored before the record of its start), with up to
//! [`IN_FLIGHT`] publishes awaiting their acknowledgement at once. A record that cannot be
//! queued (the queue is full) or stored (the stream refused it, or did not answer in time) is
//! counted in [`History::dropped`], which the heartbeat carries to `attune runner list`.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use attune_nats::executions::{
    excerpt, mask_secrets, ExecutionMode, ExecutionRecord, ExecutionState,
};
use attune_nats::name::{check_action_ref, check_id};
use attune_nats::{InvocationReply, Namespace};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// Records waiting to be published; more are dropped (and counted).
const QUEUE: usize = 8192;
/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;
/// How long a publish may wait for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the record of an execution's start waits before it is published. The stream keeps
/// one record per execution, so an execution that ends sooner has its start record replaced
/// by its final one before anyone could read it: it is not written at all, and a fast call
/// costs one write instead of two.
const START_HOLD: Duration = Duration::from_millis(100);

/// How an invocation reached the runner, for its record.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Sync or job.
    pub mode: ExecutionMode,
    /// Which delivery of a job (1 for a sync call).
    pub attempts: u64,
    /// When the request arrived or the job was enqueued.
    pub requested_at: Option<OffsetDateTime>,
    /// The event that fired it.
    pub event: Option<String>,
    /// The rule that fired it.
    pub rule: Option<String>,
}

impl Origin {
    /// A sync request arriving now.
    pub fn sync() -> Origin {
        Origin {
            mode: ExecutionMode::Sync,
            attempts: 1,
            requested_at: Some(OffsetDateTime::now_utc()),
            event: None,
            rule: None,
        }
    }
}

/// What the checks learnt about an invocation that the record needs: its parameters with the
/// secret ones masked, and the action's constraint.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Masked parameters.
    pub parameters: Map<String, Value>,
    /// The action's `runtime_version`.
    pub constraint: Option<String>,
    /// The values of its secret parameters, masked in the output excerpts.
    pub secrets: Vec<String>,
}

/// The queue of records and what was dropped.
#[derive(Debug, Clone)]
pub struct History {
    tx: mpsc::Sender<ExecutionRecord>,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
    runner: String,
}

impl History {
    /// Starts the publishing task of runner `runner`; it ends when every [`History`] is dropped.
    pub fn start(js: Context, ns: Namespace, runner: String) -> History {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish(js, ns, rx, dropped.clone(), queued.clone()));
        History {
            tx,
            dropped,
            queued,
            runner,
        }
    }

    /// Records that could not be stored since the runner started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until every queued record is stored or dropped: drain calls it
    /// so the last records are not lost with the process.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.queued.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Queues `record`, or counts it as dropped.
    fn queue(&self, record: ExecutionRecord) {
        // The subject is made of the action ref and the id: a record of a request too broken
        // to have valid ones is not an execution (it was refused on arrival).
        if check_action_ref(&record.action).is_err() || check_id(&record.id).is_err() {
            return;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(record).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The record of an execution whose process is about to start.
    pub fn started(
        &self,
        id: &str,
        action: &str,
        key: &attune_nats::VersionKey,
        seen: &Seen,
        origin: &Origin,
    ) {
        self.queue(ExecutionRecord {
            id: id.to_string(),
            action: action.to_string(),
            state: ExecutionState::Running,
            status: None,
            mode: origin.mode,
            parameters: seen.parameters.clone(),
            constraint: seen.constraint.clone(),
            runtime: Some(key.runtime.clone()),
            version: Some(key.version.clone()),
            detected_version: None,
            runner: Some(self.runner.clone()),
            exit_code: None,
            requested_at: origin.requested_at,
            started_at: Some(OffsetDateTime::now_utc()),
            finished_at: None,
            duration_ms: None,
            attempts: origin.attempts,
            event: origin.event.clone(),
            rule: origin.rule.clone(),
            warm: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            error: None,
        });
    }

    /// The record of an execution that ended (or was refused) with `reply`.
    pub fn finished(&self, reply: &InvocationReply, seen: &Seen, origin: &Origin) {
        let (stdout, out_cut) = excerpt(&reply.stdout);
        let (stderr, err_cut) = excerpt(&reply.stderr);
        let (stdout, stderr) = (
            mask_secrets(&stdout, &seen.secrets),
            mask_secrets(&stderr, &seen.secrets),
        );
        let finished_at = reply
            .started_at
            .map(|s| s + time::Duration::nanoseconds((reply.duration_ms * 1_000_000.0) as i64));
        self.queue(ExecutionRecord {
            id: reply.id.clone(),
            action: reply.action.clone(),
            state: ExecutionState::Finished,
            status: Some(reply.status),
            mode: origin.mode,
            parameters: seen.parameters.clone(),
            constraint: seen.constraint.clone(),
            runtime: reply.runtime.clone(),
            version: reply.version.clone(),
            detected_version: reply.detected_version.clone(),
            runner: Some(self.runner.clone()),
            exit_code: reply.exit_code,
            requested_at: origin.requested_at,
            started_at: reply.started_at,
            finished_at: finished_at.or_else(|| Some(OffsetDateTime::now_utc())),
            duration_ms: reply.started_at.map(|_| reply.duration_ms),
            attempts: origin.attempts,
            event: origin.event.clone(),
            rule: origin.rule.clone(),
            warm: reply.warm,
            stdout,
            stderr,
            output_truncated: out_cut
                || err_cut
                || reply.stdout_truncated
                || reply.stderr_truncated,
            error: reply.error.clone(),
        });
    }
}

/// Publishes queued records in order, with up to [`IN_FLIGHT`] awaiting acknowledgement. A
/// start record waits [`START_HOLD`] first and is not published at all when the execution's final
/// record came meanwhile: it would replace it at once.
async fn publish(
    js: Context,
    ns: Namespace,
    mut rx: mpsc::Receiver<ExecutionRecord>,
    dropped: Arc<AtomicU64>,
    queued: Arc<AtomicU64>,
) {
    let settle = |ok: bool| {
        if !ok {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    };
    let mut acks = FuturesUnordered::new();
    // Start records held, oldest first, each with the time it is due; the ids of those not yet
    // superseded by their final record.
    let mut held: VecDeque<(Instant, ExecutionRecord)> = VecDeque::new();
    let mut starting: HashSet<String> = HashSet::new();
    let mut open = true;
    while open || !held.is_empty() || !acks.is_empty() {
        let due = held.front().map(|(at, _)| *at);
        let record = tokio::select! {
            next = rx.recv(), if open && acks.len() < IN_FLIGHT => match next {
                Some(r) if r.state == ExecutionState::Running => {
                    starting.insert(r.id.clone());
                    held.push_back((Instant::now() + START_HOLD, r));
                    continue;
                }
                Some(r) => {
                    if starting.remove(&r.id) {
                        settle(true); // the start record, superseded
                    }
                    r
                }
                None => {
                    // Nothing more comes: what is held goes now.
                    open = false;
                    let now = Instant::now();
                    for (at, _) in held.iter_mut() {
                        *at = now;
                    }
                    continue;
                }
            },
            // Held starts are due after their hold, or at once when the queue has closed.
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)),
                if due.is_some() && acks.len() < IN_FLIGHT =>
            {
                let (_, r) = held.pop_front().expect("one is held");
                if !starting.remove(&r.id) {
                    continue; // superseded and settled already
                }
                r
            }
            Some(acked) = acks.next(), if !acks.is_empty() => {
                let ok = matches!(acked, Ok(Ok(_)));
                if !ok {
                    warn!(result = ?acked.map(|r| r.map(|_| ())), "an execution record was not stored");
                }
                settle(ok);
                continue;
            }
        };
        let body = serde_json::to_vec(&record).expect("records serialise");
        match js.publish(record.subject(&ns), body.into()).await {
            Ok(ack) => acks.push(tokio::time::timeout(
                ACK_TIMEOUT,
                std::future::IntoFuture::into_future(ack),
            )),
            Err(e) => {
                warn!(error = %e, id = %record.id, "could not record an execution");
                settle(false);
            }
        }
    }
}
