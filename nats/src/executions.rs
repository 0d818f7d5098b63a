//! Execution records: what ran, where, how it ended, kept in the stream `ATTUNE_EXECUTIONS`.
//!
//! The runner that runs an invocation (sync by subject or by name, an async job, a job a rule
//! fired) publishes its record twice on `attune.executions.<pack>.<action>.<id>`: when the
//! process starts (`state: running`) and when it ends. The stream keeps one message per subject,
//! so the newest record of an execution replaces the older one, and one execution is one
//! last-by-subject read. Age and size limits (the registry's flags) bound the history; the
//! oldest records go first.
//!
//! Recording must never fail or slow an invocation: runners publish from a queue of their own
//! and count what they could not store (see `runner/src/history.rs`).

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::jetstream::{
    byte_limit, provision_stream, read_stream, StoreError, StoreOptions, Window,
};
use crate::name::check_id;
use crate::subject::Namespace;
use crate::wire::Status;

/// The most of stdout (and of stderr) a record keeps: an excerpt, not the result.
pub const EXCERPT_BYTES: usize = 4096;

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// Its process runs.
    Running,
    /// It ended (its `status` says how) or was refused before it ran.
    Finished,
}

/// How the invocation came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// A request waiting for its reply (by subject or by name).
    Sync,
    /// A durable job (`--async`, or fired by a rule).
    Job,
}

/// One execution's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The invocation id (the job id for a job).
    pub id: String,
    /// The action ref.
    pub action: String,
    /// Running or finished.
    pub state: ExecutionState,
    /// How it ended; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Sync or job.
    pub mode: ExecutionMode,
    /// The parameters, secret ones replaced by `********`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// The action's `runtime_version` constraint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// The runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The version it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The interpreter's own version (`3.12.4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_version: Option<String>,
    /// The runner that ran it; absent when the registry refused it before any runner (no
    /// version to route to, or a rule's job that could not be enqueued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The process's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the request reached the runner, or the job was enqueued.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub requested_at: Option<OffsetDateTime>,
    /// When the process started.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Wall time of the process, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Which delivery of a job this is (1 for a sync call).
    pub attempts: u64,
    /// The event that fired it, for a job a rule enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The rule that fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Whether a pre-started interpreter ran it.
    #[serde(default)]
    pub warm: bool,
    /// The start of stdout, at most [`EXCERPT_BYTES`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    /// The start of stderr, at most [`EXCERPT_BYTES`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// Whether `stdout` or `stderr` is cut (here or already in the reply).
    #[serde(default)]
    pub output_truncated: bool,
    /// Why it was refused, timed out or failed to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExecutionRecord {
    /// The record of an invocation the registry refused before any runner saw it: `error` says
    /// why. `event` and `rule` name what fired it, for a rule's job.
    pub fn refused(
        id: &str,
        action: &str,
        mode: ExecutionMode,
        error: String,
        event: Option<String>,
        rule: Option<String>,
    ) -> ExecutionRecord {
        let now = OffsetDateTime::now_utc();
        ExecutionRecord {
            id: id.to_string(),
            action: action.to_string(),
            state: ExecutionState::Finished,
            status: Some(Status::Rejected),
            mode,
            parameters: Map::new(),
            constraint: None,
            runtime: None,
            version: None,
            detected_version: None,
            runner: None,
            exit_code: None,
            requested_at: Some(now),
            started_at: None,
            finished_at: Some(now),
            duration_ms: None,
            attempts: 1,
            event,
            rule,
            warm: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            error: Some(error),
        }
    }

    /// Publishes the record without waiting for the stream (the registry's refusals: the reply
    /// already told the caller; the record is for the history). Invalid ids or refs have no
    /// subject and are not recorded.
    pub async fn publish_unacked(&self, client: &async_nats::Client, ns: &Namespace) {
        if crate::name::check_action_ref(&self.action).is_err() || check_id(&self.id).is_err() {
            return;
        }
        let body = serde_json::to_vec(self).expect("records serialise");
        if let Err(e) = client.publish(self.subject(ns), body.into()).await {
            tracing::debug!(error = %e, id = %self.id, "could not record a refusal");
        }
    }

    /// The subject it is published on.
    pub fn subject(&self, ns: &Namespace) -> String {
        ns.execution(&self.action, &self.id)
    }
}

/// The first [`EXCERPT_BYTES`] of `text` (cut at a character boundary), and whether it was cut.
pub fn excerpt(text: &str) -> (String, bool) {
    if text.len() <= EXCERPT_BYTES {
        return (text.to_string(), false);
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// The executions stream's settings.
fn executions_stream_config(ns: &Namespace, opts: &StoreOptions) -> stream::Config {
    stream::Config {
        name: ns.stream_executions(),
        description: Some("Attune execution records".to_string()),
        subjects: vec![ns.executions_all()],
        retention: stream::RetentionPolicy::Limits,
        // The newest record of an execution replaces its "running" one.
        max_messages_per_subject: 1,
        max_age: opts.executions_max_age,
        max_bytes: byte_limit(opts.executions_max_bytes),
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        num_replicas: opts.replicas.max(1),
        ..Default::default()
    }
}

/// Creates the executions stream with the operator's limits, or updates them. For the
/// registry's set-up step only.
pub async fn provision_executions(
    js: &jetstream::Context,
    ns: &Namespace,
    opts: &StoreOptions,
) -> Result<stream::Stream, StoreError> {
    provision_stream(js, executions_stream_config(ns, opts)).await
}

/// Publishes `record` and waits for the stream to store it.
pub async fn publish_record(
    js: &jetstream::Context,
    ns: &Namespace,
    record: &ExecutionRecord,
) -> Result<(), async_nats::Error> {
    let body = serde_json::to_vec(record).expect("records serialise");
    js.publish(record.subject(ns), body.into()).await?.await?;
    Ok(())
}

/// Which stream of a process a live line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One message on `attune.output.<id>`: a line of output (at most [`LIVE_LINE_BYTES`], secret
/// parameter values masked), or the end of the execution with how many lines the rate and size
/// bounds dropped. Live only: nothing is stored, and nobody listening costs nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMessage {
    /// Which stream, for a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<OutputStream>,
    /// The line, without its newline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Set on the last message of the execution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub end: bool,
    /// With `end`: lines not sent (rate or size bound).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The longest live line; the rest of a longer line follows as further lines.
pub const LIVE_LINE_BYTES: usize = 4096;

/// `text` with every secret value replaced by `***` (secrets of fewer than 3 characters are
/// left: masking them would mangle the output and hide nothing).
pub fn mask_secrets(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// What `attune execution list` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only this action (`<pack>.<action>`).
    pub action: Option<String>,
    /// Only this pack's actions.
    pub pack: Option<String>,
    /// Only this status (`running` for those still running).
    pub status: Option<String>,
    /// Only those run by this runner.
    pub runner: Option<String>,
    /// Only those run on this version.
    pub version: Option<String>,
    /// Only those requested (or, lacking that, started) at or after this time.
    pub since: Option<OffsetDateTime>,
}

impl ExecutionFilter {
    /// Whether `r` passes every condition.
    pub fn keeps(&self, r: &ExecutionRecord) -> bool {
        let status = match (r.state, r.status) {
            (ExecutionState::Running, _) => "running",
            (_, Some(s)) => s.as_str(),
            (_, None) => "finished",
        };
        let when = r.requested_at.or(r.started_at);
        self.action.as_ref().is_none_or(|a| &r.action == a)
            && self
                .pack
                .as_ref()
                .is_none_or(|p| r.action.split_once('.').is_some_and(|(rp, _)| rp == p))
            && self.status.as_ref().is_none_or(|s| s == status)
            && self
                .runner
                .as_ref()
                .is_none_or(|x| r.runner.as_ref() == Some(x))
            && self
                .version
                .as_ref()
                .is_none_or(|v| r.version.as_ref() == Some(v))
            && self
                .since
                .is_none_or(|since| when.is_some_and(|w| w >= since))
    }

    /// The subject filter that narrows the read before decoding.
    fn subject(&self, ns: &Namespace) -> String {
        match (&self.action, &self.pack) {
            (Some(a), _) => ns.executions_of(a),
            (None, Some(p)) => ns.executions_of(&format!("{p}.*")),
            (None, None) => ns.executions_all(),
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A filter value that cannot be part of a subject.
    #[error("{0}")]
    BadFilter(String),
    /// The stream did not answer.
    #[error(transparent)]
    Nats(#[from] async_nats::Error),
}

/// The newest `limit` records passing `filter`, newest first, skipping the first `skip` of
/// those (paging). Reads every record of the filter's subject kept in the stream.
pub async fn list_executions(
    js: &jetstream::Context,
    ns: &Namespace,
    filter: &ExecutionFilter,
    skip: usize,
    limit: usize,
) -> Result<Vec<ExecutionRecord>, ReadError> {
    for (what, value) in [("action", &filter.action), ("pack", &filter.pack)] {
        if let Some(v) = value {
            let ok = match what {
                "action" => crate::name::check_action_ref(v).is_ok(),
                _ => crate::name::check_name(v).is_ok(),
            };
            if !ok {
                return Err(ReadError::BadFilter(format!(
                    "--{what} {v:?} is not a valid {what}"
                )));
            }
        }
    }
    let keep = filter.clone();
    let decode = move |m: jetstream::Message| {
        serde_json::from_slice::<ExecutionRecord>(&m.payload)
            .ok()
            .filter(|r| keep.keeps(r))
    };
    let mut read = read_stream(
        js,
        &ns.stream_executions(),
        filter.subject(ns),
        Window::Last(skip.saturating_add(limit)),
        decode,
    )
    .await?;
    let mut out = Vec::new();
    while let Some(r) = read.next().await {
        out.push(r?);
    }
    out.reverse();
    Ok(out.into_iter().skip(skip).take(limit).collect())
}

/// The record of execution `id`, if the stream keeps one.
pub async fn get_execution(
    js: &jetstream::Context,
    ns: &Namespace,
    id: &str,
) -> Result<Option<ExecutionRecord>, ReadError> {
    check_id(id).map_err(|e| ReadError::BadFilter(format!("execution id {id:?}: {e}")))?;
    let decode = |m: jetstream::Message| serde_json::from_slice::<ExecutionRecord>(&m.payload).ok();
    let mut read = read_stream(
        js,
        &ns.stream_executions(),
        ns.execution_by_id(id),
        Window::Last(1),
        decode,
    )
    .await?;
    Ok(read.next().await.transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, status: Option<Status>) -> ExecutionRecord {
        ExecutionRecord {
            id: "x1".into(),
            action: action.into(),
            state: if status.is_some() {
                ExecutionState::Finished
            } else {
                ExecutionState::Running
            },
            status,
            mode: ExecutionMode::Sync,
            parameters: Map::new(),
            constraint: None,
            runtime: Some("python".into()),
            version: Some("3.12".into()),
            detected_version: None,
            runner: Some("r1".into()),
            exit_code: None,
            requested_at: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1)),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            attempts: 1,
            event: None,
            rule: None,
            warm: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            error: None,
        }
    }

    #[test]
    fn filters_keep_what_they_name() {
        let done = record("core.echo", Some(Status::Succeeded));
        let running = record("core.echo", None);
        let f = |f: ExecutionFilter| (f.keeps(&done), f.keeps(&running));
        assert_eq!(f(ExecutionFilter::default()), (true, true));
        let status = |s: &str| ExecutionFilter {
            status: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(f(status("running")), (false, true));
        assert_eq!(f(status("succeeded")), (true, false));
        let pack = ExecutionFilter {
            pack: Some("core".into()),
            ..Default::default()
        };
        assert_eq!(f(pack), (true, true));
        let other = ExecutionFilter {
            pack: Some("cor".into()),
            ..Default::default()
        };
        assert_eq!(f(other), (false, false));
        let late = ExecutionFilter {
            since: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::hours(2)),
            ..Default::default()
        };
        assert_eq!(f(late), (false, false));
        let version = ExecutionFilter {
            version: Some("3.12".into()),
            runner: Some("r1".into()),
            ..Default::default()
        };
        assert_eq!(f(version), (true, true));
    }

    #[test]
    fn excerpts_cut_at_a_character_boundary() {
        assert_eq!(excerpt("short"), ("short".to_string(), false));
        let long = "é".repeat(EXCERPT_BYTES);
        let (cut, truncated) = excerpt(&long);
        assert!(truncated && cut.len() <= EXCERPT_BYTES && cut.len() >= EXCERPT_BYTES - 1);
    }

    #[test]
    fn a_record_lives_on_a_subject_ending_in_its_id() {
        let r = record("core.echo", None);
        assert_eq!(
            r.subject(&Namespace::default()),
            "attune.executions.core.echo.x1"
        );
        assert_eq!(
            Namespace::default().execution_by_id("x1"),
            "attune.executions.*.*.x1"
        );
    }
}
