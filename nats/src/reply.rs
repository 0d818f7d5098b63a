//! The one reply vocabulary: how every responder reads a request, refuses it, builds a job, and
//! turns a finished process into a reply.
//!
//! Runner endpoints, the job puller, the router, async enqueue and the registry API all answer
//! through these functions. Copies drift — one copy of the rejection builder cleaned header values,
//! another panicked on a newline — so each decision is made here once:
//! - [`Rejection`]: a reject code and a message, as a `rejected` [`InvocationReply`] and the
//!   micro-service error headers ([`error_headers`]), whose values are always safe to send;
//! - [`read_request`] / [`request_id`]: the request checked at the edge (id alphabet, no control
//!   characters in the action), and the id a refusal answers with;
//! - [`new_job`]: a request stamped as a durable job;
//! - [`ProcessOutcome`] → [`InvocationReply::finished`]: how a run's exit, signal, timeout or abort
//!   becomes a status and an error message.

use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderValue};
use bytes::Bytes;
use serde_json::Value;
use time::OffsetDateTime;

use crate::jobs::Job;
use crate::name::{check_action_ref, check_id, check_parameter_name};
use crate::resolve::Refusal;
use crate::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE};
use crate::wire::{InvocationReply, InvocationRequest, RejectCode, Status};

/// Longest `Nats-Service-Error` value sent; the full message is in the reply body.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Room kept free in a message for headers and the fields around a reply.
pub const PAYLOAD_MARGIN: usize = 64 * 1024;
/// How much of stdout and of stderr a reply without its bulk keeps.
pub const BULK_KEPT: usize = 16 * 1024;

/// The largest reply (or result record) body sent inline on a connection whose server accepts
/// messages of at most `max_payload` bytes.
pub fn body_limit(max_payload: usize) -> usize {
    max_payload.saturating_sub(PAYLOAD_MARGIN).max(1024)
}

/// A refused request: the reject code for `Nats-Service-Error-Code` and the reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which kind of refusal.
    pub code: RejectCode,
    /// What is wrong, naming the action, version, field or parameter.
    pub message: String,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    /// A 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(RejectCode::BadRequest, message)
    }

    /// The `rejected` reply body for request `id` of `action`.
    pub fn reply(&self, id: impl Into<String>, action: impl Into<String>) -> InvocationReply {
        InvocationReply::rejected(id, action, self.message.clone())
    }

    /// The micro-service error headers that go with the reply.
    pub fn headers(&self) -> HeaderMap {
        error_headers(self.code.code(), &self.message)
    }

    /// The whole answer to request body `payload` about `action`: the error headers and the
    /// `rejected` reply, with the id the request carried (when valid) or a fresh one.
    pub fn answer(&self, payload: &[u8], action: &str) -> (HeaderMap, Bytes) {
        let id = request_id(payload).unwrap_or_else(new_id);
        (self.headers(), encode(&self.reply(id, action)))
    }
}

/// Answers the request `msg` with `rejection` about `action`, on a plain client (the router and
/// async enqueue answer this way; micro-service endpoints use [`Rejection::answer`] with their
/// own `respond`). A publish without a reply subject has nobody to answer: nothing is sent.
pub async fn reject(
    client: &async_nats::Client,
    msg: &async_nats::Message,
    action: &str,
    rejection: &Rejection,
) -> Result<(), async_nats::PublishError> {
    let id = request_id(&msg.payload).unwrap_or_else(new_id);
    reject_as(client, msg, &id, action, rejection).await
}

/// [`reject`] with the reply's id chosen by the caller (who records the refusal under it).
pub async fn reject_as(
    client: &async_nats::Client,
    msg: &async_nats::Message,
    id: &str,
    action: &str,
    rejection: &Rejection,
) -> Result<(), async_nats::PublishError> {
    let Some(reply) = msg.reply.clone() else {
        tracing::debug!(action, message = %rejection.message, "rejected a publish without reply subject");
        return Ok(());
    };
    let body = encode(&rejection.reply(id, action));
    client
        .publish_with_headers(reply, rejection.headers(), body)
        .await
}

/// An error and its causes on one line (`a: b: c`), for a message that crosses the bus, where
/// the receiver cannot walk the chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A reply as the bytes sent on the wire.
pub fn encode(reply: &InvocationReply) -> Bytes {
    Bytes::from(serde_json::to_vec(reply).expect("replies always serialise"))
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        Rejection::new(refusal.code(), refusal.to_string())
    }
}

/// `Nats-Service-Error-Code: <code>` and `Nats-Service-Error: <message>`, the message made safe
/// for a header (see [`header_value`]).
pub fn error_headers(code: u16, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_SERVICE_ERROR, header_value(message));
    headers.insert(HEADER_SERVICE_ERROR_CODE, HeaderValue::from(code as usize));
    headers
}

/// `text` as a header value that can always be sent: control characters (CR, LF, NUL, …) become
/// spaces, and it is cut at [`MAX_HEADER_VALUE`] bytes on a character boundary, marked with `…`.
pub fn header_value(text: &str) -> HeaderValue {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_HEADER_VALUE {
        let mut cut = MAX_HEADER_VALUE - '…'.len_utf8();
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
        clean.push('…');
    }
    // Cannot fail: nothing a header forbids is left.
    clean.parse().unwrap_or_default()
}

/// The request id a body carries, if it carries a valid one: the id a refusal of that body
/// answers with, so the requester can match it. Anything else gets a fresh id ([`new_id`]).
pub fn request_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    let id = serde_json::from_slice::<IdOnly>(payload).ok()?.id?;
    let id = id.as_str()?;
    check_id(id).is_ok().then(|| id.to_string())
}

/// Whether a message that arrived as a request is in fact a stored message replayed by a
/// JetStream consumer (its reply subject is an acknowledgement subject).
///
/// Why: nats-server does not check a push consumer's delivery subject against its creator's
/// publish rights, so a user allowed to read a stream through consumers could aim one at a
/// subject it may not publish to (a registry operation, an invoke subject) and have the server
/// deliver stored bytes there. Every responder drops such messages, so roles hold.
pub fn is_stream_replay(reply: Option<&str>) -> bool {
    reply.is_some_and(|r| r.starts_with(crate::subject::JS_ACK_PREFIX))
}

/// The checks every request's fields pass, wherever it arrives (a sync request, an enqueued or a
/// pulled job): a valid id, a plausible action ref, parameter names that are safe in every
/// delivery format (identifiers, none a shell, linker or interpreter reads), a positive timeout.
pub fn check_request(request: &InvocationRequest) -> Result<(), Rejection> {
    if let Some(id) = &request.id {
        check_id(id).map_err(|e| Rejection::bad_request(format!("field \"id\": {e}")))?;
    }
    check_action_ref(&request.action)
        .map_err(|e| Rejection::bad_request(format!("field \"action\": {e}")))?;
    for name in request.parameters.keys() {
        check_parameter_name(name).map_err(|e| {
            Rejection::bad_request(format!("field \"parameters\": parameter name {e}"))
        })?;
    }
    if let Some(t) = request.timeout_seconds {
        if !(t.is_finite() && t > 0.0) {
            return Err(Rejection::bad_request(format!(
                "field \"timeout_seconds\": {t} is not a positive number of seconds"
            )));
        }
    }
    Ok(())
}

/// On `attune.action.<pack>.<action>`, the body may name the action, but only the subject's:
/// per-action permissions are written on the subject, so the body must not be able to run another.
pub fn check_subject_action(body_action: &str, subject_action: &str) -> Result<(), Rejection> {
    if body_action == subject_action {
        return Ok(());
    }
    let shown: String = body_action.chars().take(64).collect();
    Err(Rejection::bad_request(format!(
        "field \"action\": the body names {shown:?} but the subject is for {subject_action:?}; leave it out or make them equal"
    )))
}

/// The `action` a request body names, without parsing the rest: for the router, which forwards
/// bodies untouched. `Ok(None)`: the body names none (or is empty).
pub fn body_action(payload: &[u8]) -> Result<Option<String>, Rejection> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        action: Option<std::borrow::Cow<'a, str>>,
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Head>(payload)
        .map(|h| h.action.map(|a| a.into_owned()))
        .map_err(|e| Rejection::bad_request(format!("invalid request body: {e}")))
}

/// A fresh invocation id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Reads and checks an invocation request body. An empty body is a request without fields;
/// `subject_action` (the `<pack>.<action>` of a by-name subject) fills in a missing action. The
/// fields must pass [`check_request`].
pub fn read_request(
    payload: &[u8],
    subject_action: Option<&str>,
) -> Result<InvocationRequest, Rejection> {
    /// The body as sent: like [`InvocationRequest`], but the action may be missing (the
    /// subject names it). Parsed once, straight into its fields: this is the hot path.
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        action: Option<String>,
        #[serde(default)]
        parameters: serde_json::Map<String, Value>,
        #[serde(default)]
        timeout_seconds: Option<f64>,
    }
    let invalid =
        |e: &dyn std::fmt::Display| Rejection::bad_request(format!("invalid request body: {e}"));
    let body: Body = if payload.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        serde_json::from_slice(payload).map_err(|e| invalid(&e))?
    };
    let action = body
        .action
        .or_else(|| subject_action.map(str::to_string))
        .ok_or_else(|| invalid(&"missing field `action`"))?;
    let request = InvocationRequest {
        id: body.id,
        action,
        parameters: body.parameters,
        timeout_seconds: body.timeout_seconds,
    };
    if let Some(subject_action) = subject_action {
        check_subject_action(&request.action, subject_action)?;
    }
    check_request(&request)?;
    Ok(request)
}

/// `request` as a durable job: given an id if it has none, stamped with the time it was enqueued.
pub fn new_job(mut request: InvocationRequest) -> Job {
    request.id.get_or_insert_with(new_id);
    Job {
        request,
        enqueued_at: Some(OffsetDateTime::now_utc()),
        event: None,
        rule: None,
    }
}

/// One captured output stream of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The text kept (lossy UTF-8), with the truncation marker appended when cut.
    pub text: String,
    /// Whether bytes were dropped at the cap.
    pub truncated: bool,
}

/// How a process that was started ended: what a runner knows once it has waited for it.
#[derive(Debug, Clone)]
pub struct ProcessOutcome {
    /// Exit code, when the process exited by itself.
    pub exit_code: Option<i32>,
    /// The terminating signal, when it was killed.
    pub signal: Option<i32>,
    /// Whether its timeout fired and its process group was killed.
    pub timed_out: bool,
    /// Whether it was killed because the runner stopped (drain grace exceeded).
    pub aborted: bool,
    /// Captured stdout.
    pub stdout: Captured,
    /// Captured stderr.
    pub stderr: Captured,
    /// When the process started.
    pub started_at: OffsetDateTime,
    /// Wall time from spawn to exit.
    pub duration: Duration,
}

impl InvocationReply {
    /// The reply of a process that ran: its status from how it ended (exit 0 succeeded, a
    /// timeout timed out, anything else failed), the error saying why when it did not succeed,
    /// and for a success the result `parse` makes of stdout (a parse failure keeps the status
    /// and sets the error). `timeout` is the limit it ran under, for the message.
    pub fn finished(
        id: impl Into<String>,
        action: impl Into<String>,
        outcome: ProcessOutcome,
        timeout: Duration,
        parse: impl FnOnce(&str) -> Result<Value, String>,
    ) -> Self {
        let mut reply = InvocationReply::rejected(id, action, String::new());
        reply.error = None;
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
            match parse(&outcome.stdout.text) {
                Ok(v) => reply.result = v,
                Err(e) => reply.error = Some(e),
            }
        }
        reply.stdout = outcome.stdout.text;
        reply.stderr = outcome.stderr.text;
        reply.stdout_truncated = outcome.stdout.truncated;
        reply.stderr_truncated = outcome.stderr.truncated;
        reply
    }

    /// The reply of a process that could not be started: failed, with why.
    pub fn not_started(
        id: impl Into<String>,
        action: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        let mut reply = InvocationReply::rejected(id, action, why);
        reply.status = Status::Failed;
        reply
    }

    /// This reply without its bulk, to fit in a message: `result` null, `stdout` and `stderr` cut
    /// to [`BULK_KEPT`] bytes each (flags set when cut), and `result_ref` naming the object that
    /// holds the whole reply (`None` when it could not be stored; `error` then says so).
    pub fn without_bulk(&self, result_ref: Option<String>) -> InvocationReply {
        fn head(text: &str, truncated: bool) -> (String, bool) {
            if text.len() <= BULK_KEPT {
                return (text.to_string(), truncated);
            }
            let mut cut = BULK_KEPT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut kept = text[..cut].to_string();
            kept.push_str(&format!(
                "\n[... {} bytes in the full reply]",
                text.len() - cut
            ));
            (kept, true)
        }
        let (stdout, stdout_truncated) = head(&self.stdout, self.stdout_truncated);
        let (stderr, stderr_truncated) = head(&self.stderr, self.stderr_truncated);
        InvocationReply {
            result: Value::Null,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            result_ref,
            ..self.clone_without_output()
        }
    }

    /// A copy with empty `result`, `stdout` and `stderr` (cheap: the bulk is not cloned).
    fn clone_without_output(&self) -> InvocationReply {
        InvocationReply {
            id: self.id.clone(),
            action: self.action.clone(),
            status: self.status,
            exit_code: self.exit_code,
            result: Value::Null,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            error: self.error.clone(),
            runtime: self.runtime.clone(),
            version: self.version.clone(),
            detected_version: self.detected_version.clone(),
            runner: self.runner.clone(),
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            result_ref: self.result_ref.clone(),
            warm: self.warm,
        }
    }

    /// Says who served it: the runtime and version, the runner, the detected full version.
    pub fn served_by(
        mut self,
        runtime: &str,
        version: &str,
        runner: &str,
        detected_version: Option<&str>,
    ) -> Self {
        self.runtime = Some(runtime.to_string());
        self.version = Some(version.to_string());
        self.runner = Some(runner.to_string());
        self.detected_version = detected_version.map(str::to_string);
        self
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn replies_under_the_ack_prefix_are_stream_replays() {
        assert!(is_stream_replay(Some("$JS.ACK.OBJ_x.c.1.2.3.4.5")));
        assert!(!is_stream_replay(Some("_INBOX_client.abc")));
        assert!(!is_stream_replay(None));
    }
    use super::*;
    use crate::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE};

    fn outcome(exit_code: Option<i32>, stdout: &str) -> ProcessOutcome {
        ProcessOutcome {
            exit_code,
            signal: None,
            timed_out: false,
            aborted: false,
            stdout: Captured {
                text: stdout.into(),
                truncated: false,
            },
            stderr: Captured::default(),
            started_at: OffsetDateTime::now_utc(),
            duration: Duration::from_millis(3),
        }
    }

    #[test]
    fn header_values_with_cr_lf_and_nul_are_sent_not_panicked_on() {
        let r = Rejection::bad_request("unknown action \"a\r\nInjected: yes\0\"");
        let headers = r.headers();
        let v = headers.get(HEADER_SERVICE_ERROR).unwrap().as_str();
        assert!(!v.chars().any(char::is_control), "{v:?}");
        assert!(v.contains("Injected: yes"), "{v:?}");
        assert_eq!(
            headers.get(HEADER_SERVICE_ERROR_CODE).unwrap().as_str(),
            "400"
        );
        // The body keeps the message as it was.
        assert_eq!(r.reply("1", "a").error.as_deref(), Some(r.message.as_str()));
    }

    #[test]
    fn a_4k_header_value_is_cut_on_a_char_boundary() {
        let long = "é".repeat(2048) + "\n";
        let v = header_value(&long);
        assert!(v.as_str().len() <= MAX_HEADER_VALUE, "{}", v.as_str().len());
        assert!(v.as_str().ends_with('…'));
        assert!(header_value("short").as_str() == "short");
    }

    #[test]
    fn request_ids_are_read_only_when_valid() {
        assert_eq!(request_id(br#"{"id":"job-1"}"#).as_deref(), Some("job-1"));
        assert_eq!(request_id(br#"{"id":"a\nb"}"#), None);
        assert_eq!(request_id(br#"{"id":7}"#), None);
        assert_eq!(request_id(b"not json"), None);
        assert_eq!(request_id(b""), None);
    }

    #[test]
    fn requests_are_checked_at_the_edge() {
        let r = read_request(br#"{"parameters":{"a":1}}"#, Some("core.echo")).unwrap();
        assert_eq!(r.action, "core.echo");
        let r = read_request(b"", Some("core.echo")).unwrap();
        assert!(r.parameters.is_empty());
        for bad in [
            r#"{"action":"core.echo","id":"a b"}"#,
            r#"{"action":"core.echo","id":"x:y"}"#,
            r#"{"action":"core\necho"}"#,
            r#"{"action":""}"#,
            r#"[1]"#,
            r#"{"action":"core.echo","parameters":[]}"#,
            r#"{"action":"core.echo","parameters":{"a\nb":1}}"#,
            r#"{"action":"core.echo","parameters":{"x; touch pwned; y":1}}"#,
            r#"{"action":"core.echo","parameters":{"LD_PRELOAD":"/tmp/x.so"}}"#,
            r#"{"action":"core.echo","parameters":{"bash_env":"/tmp/x"}}"#,
        ] {
            let err = read_request(bad.as_bytes(), None).unwrap_err();
            assert_eq!(err.code, RejectCode::BadRequest, "{bad}");
        }
        // The body may not name another action than the subject's.
        let err = read_request(br#"{"action":"core.other"}"#, Some("core.echo")).unwrap_err();
        assert!(
            err.message.contains("subject is for \"core.echo\""),
            "{}",
            err.message
        );
        assert!(read_request(br#"{"action":"core.echo"}"#, Some("core.echo")).is_ok());
        for t in ["0", "-1", "1e400"] {
            let body = format!(r#"{{"action":"core.echo","timeout_seconds":{t}}}"#);
            assert!(read_request(body.as_bytes(), None).is_err(), "{t}");
        }
        assert_eq!(
            body_action(br#"{"action":"a.b","x":[1]}"#)
                .unwrap()
                .as_deref(),
            Some("a.b")
        );
        assert_eq!(body_action(b"").unwrap(), None);
        assert_eq!(
            body_action(br#"{"parameters":{"action":"x.y"}}"#).unwrap(),
            None
        );
        assert!(body_action(b"[1]").is_err());
        assert!(
            read_request(br#"{"id":"a\r\nb","action":"core.echo"}"#, None)
                .unwrap_err()
                .message
                .contains("field \"id\"")
        );
    }

    #[test]
    fn a_reply_without_its_bulk_is_small_and_says_where_the_rest_is() {
        let mut big = outcome(Some(0), &"x".repeat(2 * 1024 * 1024));
        big.stderr.text = "é".repeat(BULK_KEPT);
        let reply = InvocationReply::finished("1", "p.a", big, Duration::from_secs(1), |s| {
            Ok(Value::String(s.to_string()))
        });
        let slim = reply.without_bulk(Some("sync-1".into()));
        assert!(encode(&slim).len() < 3 * BULK_KEPT + 4096);
        assert!(slim.stdout_truncated && slim.stderr_truncated);
        assert_eq!(slim.result, Value::Null);
        assert_eq!(slim.result_ref.as_deref(), Some("sync-1"));
        assert_eq!(slim.status, Status::Succeeded);
        assert!(slim.stdout.ends_with("bytes in the full reply]"));
        assert!(body_limit(1024 * 1024) < 1024 * 1024);
    }

    #[test]
    fn a_job_always_has_an_id_and_an_enqueue_time() {
        let job = new_job(InvocationRequest {
            action: "core.noop".into(),
            ..Default::default()
        });
        assert!(job.request.id.is_some() && job.enqueued_at.is_some());
        let kept = new_job(InvocationRequest {
            id: Some("j1".into()),
            action: "core.noop".into(),
            ..Default::default()
        });
        assert_eq!(kept.request.id.as_deref(), Some("j1"));
    }

    #[test]
    fn outcomes_become_statuses_with_reasons() {
        let t = Duration::from_secs(1);
        let ok = InvocationReply::finished("1", "p.a", outcome(Some(0), "{\"x\":1}"), t, |s| {
            serde_json::from_str(s).map_err(|e| e.to_string())
        });
        assert_eq!(ok.status, Status::Succeeded);
        assert_eq!(ok.result["x"], 1);
        assert!(ok.error.is_none());

        let bad_output = InvocationReply::finished("1", "p.a", outcome(Some(0), "x"), t, |_| {
            Err("not JSON".into())
        });
        assert_eq!(bad_output.status, Status::Succeeded);
        assert_eq!(bad_output.error.as_deref(), Some("not JSON"));

        let failed = InvocationReply::finished("1", "p.a", outcome(Some(3), ""), t, |_| {
            unreachable!("only successes are parsed")
        });
        assert_eq!((failed.status, failed.exit_code), (Status::Failed, Some(3)));

        let mut o = outcome(None, "");
        o.timed_out = true;
        let timed_out = InvocationReply::finished("1", "p.a", o, t, |_| unreachable!());
        assert_eq!(timed_out.status, Status::TimedOut);
        assert!(timed_out.error.unwrap().contains("timed out after 1s"));

        let mut o = outcome(None, "");
        o.signal = Some(9);
        let killed = InvocationReply::finished("1", "p.a", o, t, |_| unreachable!());
        assert_eq!(killed.error.as_deref(), Some("killed by signal 9"));

        let mut o = outcome(None, "");
        o.aborted = true;
        let aborted = InvocationReply::finished("1", "p.a", o, t, |_| unreachable!());
        assert_eq!(aborted.status, Status::Failed);

        let not_started = InvocationReply::not_started("1", "p.a", "cannot start").served_by(
            "python",
            "3.12",
            "r1",
            Some("3.12.1"),
        );
        assert_eq!(not_started.status, Status::Failed);
        assert_eq!(not_started.detected_version.as_deref(), Some("3.12.1"));
    }
}
