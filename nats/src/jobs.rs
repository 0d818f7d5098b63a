//! Durable asynchronous invocations: the job a runner pulls from the work-queue stream
//! `ATTUNE_JOBS`, the result record it leaves in KV `attune-results`, retry policies, and the one
//! configuration of the stream (provisioned by the registry, opened by runners), its consumers
//! and the results object store.
//!
//! The life of a job: a client resolves the action's version exactly as for a sync call, then
//! publishes the request to `attune.jobs.<runtime>.<version>` with `Nats-Msg-Id` = the invocation
//! id (so a second publish of the same id within [`DUPLICATE_WINDOW`] is dropped by the server),
//! and waits for the stream's acknowledgement: "accepted" means stored. Every runner serving that
//! version pulls from one shared durable consumer ([`VersionKey::consumer`]), only when it has a free
//! slot. It runs the job, records the attempt in the [`ResultRecord`], and either asks for a
//! later redelivery (a retryable outcome with attempts left: a negative acknowledgement with the
//! [`RetryPolicy`] delay) or writes the final record, announces it on `attune.results.<id>`, and
//! only then acknowledges. A runner that dies mid-job never acknowledges it, so the server
//! redelivers it to another runner after the acknowledgement deadline.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, object_store, stream};
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;

use crate::jetstream::{byte_limit, OpenError, StoreError, StoreOptions};
use crate::key::VersionKey;
use crate::subject::Namespace;
use crate::wire::{InvocationReply, InvocationRequest, Status};

/// Why a job could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The jobs stream does not exist (no registry has provisioned it).
    #[error(transparent)]
    Stream(#[from] OpenError),
    /// The stream did not store the job (full, gone, or no answer).
    #[error("enqueueing on {subject}")]
    Publish {
        /// The jobs subject.
        subject: String,
        /// The server's or client's explanation.
        #[source]
        source: jetstream::context::PublishError,
    },
}

/// Request header that makes a by-name call (`attune.action.<pack>.<action>`) asynchronous: the
/// router enqueues the job and answers with an [`Enqueued`] instead of forwarding it.
pub const HEADER_ASYNC: &str = "Attune-Async";

/// How long the stream remembers a `Nats-Msg-Id`: a job published twice within it runs once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a runner may hold a job without a sign of life before it is redelivered elsewhere.
/// Runners send a progress acknowledgement every [`PROGRESS_INTERVAL`] while the job runs.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often a runner tells the server it is still working on a job.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// The longest retry delay, whatever the backoff computes.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// The most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// The body of a job message on `attune.jobs.<runtime>.<version>`: an invocation request, plus
/// when it was enqueued. Any client may publish a plain [`InvocationRequest`] there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The invocation, as for a sync call.
    #[serde(flatten)]
    pub request: InvocationRequest,
    /// When the client enqueued it (RFC 3339 on the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub enqueued_at: Option<OffsetDateTime>,
    /// The event that caused it, when a rule enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The rule that enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// What enqueueing answers: the id to ask for the result with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The invocation id (the key in `attune-results`, the token of `attune.results.<id>`).
    pub id: String,
    /// Always `queued`.
    pub status: String,
    /// The job subject it was stored under (`attune.jobs.shell.default`).
    pub subject: String,
    /// The stream already held a job with this id: nothing new was queued.
    #[serde(default)]
    pub duplicate: bool,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first run.
    pub attempt: u32,
    /// How it ended.
    pub status: Status,
    /// The process's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The runner that ran it.
    pub runner: Option<String>,
    /// Start time (RFC 3339 on the wire).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Wall time of the run.
    pub duration_ms: f64,
}

impl Attempt {
    /// The attempt summary of a reply.
    pub fn of(attempt: u32, reply: &InvocationReply) -> Self {
        Attempt {
            attempt,
            status: reply.status,
            exit_code: reply.exit_code,
            error: reply.error.clone(),
            runner: reply.runner.clone(),
            started_at: reply.started_at,
            duration_ms: reply.duration_ms,
        }
    }
}

/// The value in KV `attune-results` (key: invocation id), and the message on
/// `attune.results.<id>`: the [`InvocationReply`] of the latest attempt, with every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The reply of the latest attempt, flattened: a record reads like a sync reply.
    #[serde(flatten)]
    pub reply: InvocationReply,
    /// Every recorded attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// No further attempt will run: this is the result.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Final and not succeeded: the job failed for good and is kept for inspection.
    pub dead_letter: bool,
    /// When the reply was too large for a NATS message: the object in `attune-results-files`
    /// holding the full reply. `result`, `stdout` and `stderr` are then empty here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The job subject it ran from.
    pub subject: String,
    /// When the job was enqueued, when the publisher said (RFC 3339 on the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub enqueued_at: Option<OffsetDateTime>,
    /// The event that caused the job, when a rule enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The rule that enqueued the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Time of this record (RFC 3339 on the wire).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When retrying: time of the next attempt (RFC 3339 on the wire).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// How to space retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay before every retry.
    #[default]
    Fixed,
    /// The delay doubles after every retry.
    Exponential,
}

/// An action's `retry:` block: async jobs whose outcome is in `on` run again, up to
/// `max_attempts` runs in all. Sync calls never retry (the caller is waiting and may retry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Runs in all, the first included (1..=100).
    pub max_attempts: u32,
    /// Delay before the first retry, in seconds.
    #[serde(default)]
    pub delay_seconds: f64,
    /// How the delay grows.
    #[serde(default)]
    pub backoff: Backoff,
    /// Which outcomes are retried: `failed` and/or `timed_out` (default both).
    #[serde(default = "retryable_default")]
    pub on: Vec<Status>,
}

fn retryable_default() -> Vec<Status> {
    vec![Status::Failed, Status::TimedOut]
}

impl RetryPolicy {
    /// Whether a run that ended with `status` as attempt `attempt` runs again.
    pub fn retries(&self, status: Status, attempt: u32) -> bool {
        attempt < self.max_attempts && self.on.contains(&status)
    }

    /// The wait after attempt `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let base = self.delay_seconds.max(0.0);
        let secs = match self.backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32),
        };
        Duration::from_secs_f64(secs.min(MAX_RETRY_DELAY.as_secs_f64()))
    }

    /// Every problem with the policy's values, for the pack loader (field name, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            out.push((
                "max_attempts",
                format!(
                    "max_attempts must be between 1 and {MAX_ATTEMPTS}, not {}",
                    self.max_attempts
                ),
            ));
        }
        if !(self.delay_seconds.is_finite()
            && self.delay_seconds >= 0.0
            && self.delay_seconds <= MAX_RETRY_DELAY.as_secs_f64())
        {
            out.push((
                "delay_seconds",
                format!(
                    "delay_seconds must be between 0 and {}, not {}",
                    MAX_RETRY_DELAY.as_secs(),
                    self.delay_seconds
                ),
            ));
        }
        for s in &self.on {
            if !matches!(s, Status::Failed | Status::TimedOut) {
                out.push((
                    "on",
                    format!(
                        "retry on \"{}\" is not possible: only failed and timed_out are retried",
                        s.as_str()
                    ),
                ));
            }
        }
        out
    }
}

/// The jobs stream's settings, with the operator's limits.
fn jobs_stream_config(ns: &Namespace, opts: &StoreOptions) -> stream::Config {
    stream::Config {
        name: ns.stream_jobs(),
        description: Some("Attune asynchronous invocations".to_string()),
        subjects: vec![ns.jobs_all()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: opts.replicas.max(1),
        max_age: opts.jobs_max_age,
        max_bytes: byte_limit(opts.jobs_max_bytes),
        // A full queue refuses new jobs (the publisher sees it) rather than dropping old ones.
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Creates the jobs stream with the operator's limits, or updates them when they differ.
/// Idempotent. For the registry's set-up step only.
pub async fn provision_jobs_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<stream::Stream, StoreError> {
    crate::jetstream::provision_stream(js, jobs_stream_config(ns, opts)).await
}

/// Opens the jobs stream, which the registry provisions, and checks that it is what runners rely
/// on: a work queue over every jobs subject. Never creates or changes it.
pub async fn open_jobs_stream(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<stream::Stream, OpenError> {
    let name = ns.stream_jobs();
    let s = js
        .get_stream(&name)
        .await
        .map_err(|e| OpenError::from_error("stream", &name, e))?;
    let config = &s.cached_info().config;
    let differs = if config.retention != stream::RetentionPolicy::WorkQueue {
        Some(format!(
            "retention is {:?}, but jobs need a work queue",
            config.retention
        ))
    } else if !config.subjects.contains(&ns.jobs_all()) {
        Some(format!(
            "subjects are {:?}, but jobs are published on {}",
            config.subjects,
            ns.jobs_all()
        ))
    } else {
        None
    };
    match differs {
        Some(differs) => Err(OpenError::Mismatch {
            kind: "stream",
            name,
            differs,
        }),
        None => Ok(s),
    }
}

/// Publishes `job` to the jobs `subject` with `Nats-Msg-Id` = its id and waits for the stream's
/// acknowledgement, so success means the job is stored. Never creates the stream: without a
/// registry having provisioned it, this fails with [`OpenError::Missing`].
pub async fn publish_job(
    js: &jetstream::Context,
    ns: &Namespace,
    subject: &str,
    job: &Job,
) -> Result<jetstream::publish::PublishAck, EnqueueError> {
    let id = job.request.id.clone().unwrap_or_default();
    let body: bytes::Bytes = serde_json::to_vec(job).expect("jobs serialise").into();
    let send = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(crate::subject::HEADER_MSG_ID, id.as_str());
        js.publish_with_headers(subject.to_string(), headers, body.clone())
            .await?
            .await
    };
    let failed = |source| EnqueueError::Publish {
        subject: subject.to_string(),
        source,
    };
    match send().await {
        Ok(ack) => Ok(ack),
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
            Err(EnqueueError::Stream(OpenError::Missing {
                kind: "stream",
                name: ns.stream_jobs(),
            }))
        }
        Err(e) => Err(failed(e)),
    }
}

/// The consumer configuration of one version's jobs.
pub fn consumer_config(ns: &Namespace, key: &VersionKey) -> consumer::pull::Config {
    let name = key.consumer();
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("Attune runners of {key}")),
        filter_subject: key.jobs_subject(ns),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Retries are counted in the result record, not by deliveries; a job is never dropped.
        max_deliver: -1,
        ..Default::default()
    }
}

/// Creates the object store of results too large for a NATS message, kept as long as the
/// results, or updates its age and replicas. Idempotent. For the registry's set-up step only.
pub async fn provision_results_files(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<object_store::ObjectStore, StoreError> {
    crate::jetstream::provision_object_store(
        js,
        ns.object_results_files(),
        "Attune asynchronous results too large for a message",
        opts.results_ttl,
        opts,
    )
    .await
}

/// Opens the object store of results too large for a message, which the registry provisions.
pub async fn open_results_files(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<object_store::ObjectStore, OpenError> {
    crate::jetstream::open_object_store(js, ns.object_results_files()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_is_a_job() {
        let job: Job = serde_json::from_str(r#"{"id":"j1","action":"core.noop"}"#).unwrap();
        assert_eq!(job.request.id.as_deref(), Some("j1"));
        assert_eq!(job.request.action, "core.noop");
        assert!(job.enqueued_at.is_none());
    }

    #[test]
    fn a_record_reads_like_a_reply_with_attempts() {
        let reply = InvocationReply::rejected("j1", "core.noop", "nope");
        let record = ResultRecord {
            attempts: vec![Attempt::of(1, &reply)],
            reply,
            is_final: true,
            dead_letter: true,
            object: None,
            subject: "attune.jobs.shell.default".into(),
            enqueued_at: None,
            event: None,
            rule: None,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            next_attempt_at: None,
        };
        let v = serde_json::to_value(&record).unwrap();
        assert_eq!(v["id"], "j1");
        assert_eq!(v["status"], "rejected");
        assert_eq!(v["final"], true);
        assert_eq!(v["attempts"][0]["attempt"], 1);
        let back: ResultRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn backoff_doubles_when_exponential() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts":4,"delay_seconds":0.5,"backoff":"exponential"}"#,
        )
        .unwrap();
        assert_eq!(p.on, vec![Status::Failed, Status::TimedOut]);
        assert_eq!(p.delay_after(1), Duration::from_millis(500));
        assert_eq!(p.delay_after(3), Duration::from_secs(2));
        assert!(p.retries(Status::Failed, 3));
        assert!(!p.retries(Status::Failed, 4));
        assert!(!p.retries(Status::Succeeded, 1));
        let fixed = RetryPolicy {
            backoff: Backoff::Fixed,
            ..p
        };
        assert_eq!(fixed.delay_after(3), Duration::from_millis(500));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let p = RetryPolicy {
            max_attempts: 0,
            delay_seconds: -1.0,
            backoff: Backoff::Fixed,
            on: vec![Status::Rejected],
        };
        let fields: Vec<_> = p.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["max_attempts", "delay_seconds", "on"]);
    }
}
