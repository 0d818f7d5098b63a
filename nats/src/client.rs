//! A Rust client of Attune: look up actions, resolve versions, invoke, call the registry API.
//!
//! The CLI is a thin shell over this, and so are the end-to-end tests and the benchmark, so the
//! invocation path (resolve → request → reply) reads the same everywhere. Resolution reads the
//! KV buckets the registry publishes, so it reflects availability as it is right now.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::ResolveReply;
use crate::connect::JetStreamDomain;
use crate::jetstream::Bucket;
use crate::jobs::{publish_job, EnqueueError, Enqueued, ResultRecord};
use crate::key::VersionKey;
use crate::model::{effective_timeout, Action, Runtime};
use crate::reply::{check_request, new_job, Rejection};
use crate::resolve::{report, resolve, Mode, Refusal, Resolution};
use crate::subject::{Namespace, RegistryOp};
use crate::wire::{ActionRoute, ApiError, InvocationReply, InvocationRequest};

/// Extra time a requester waits beyond the execution's own timeout, for queueing and transport.
pub const REPLY_GRACE: Duration = Duration::from_secs(5);
/// How long a registry API call may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Client::route`] waits for its one read before resolving the long way.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to Attune, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry has never published here (or under this prefix).
    #[error("no Attune registry has published on this NATS server (KV bucket \"{0}\" is missing): start one with `attune registry serve` or `attune up`, or check --prefix")]
    NotPublished(String),
    /// The JetStream holding Attune's buckets did not answer: not enabled, unreachable (a leaf
    /// node whose link to the hub is down), or another domain than `--js-domain` names.
    #[error("JetStream{} did not answer when opening KV bucket \"{bucket}\": is it enabled and reachable? Through a leaf node, check that the link to the hub is up and that --js-domain names the hub's domain (invocations by subject, attune.invoke.<runtime>.<version>, still reach runners on this server)", domain_note(.domain))]
    JetStreamUnreachable {
        /// The bucket being opened.
        bucket: String,
        /// The domain asked, if any.
        domain: Option<String>,
        /// async-nats' error.
        #[source]
        source: async_nats::Error,
    },
    /// The action cannot be resolved to a version: unknown, disabled, no version fits, …
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Nobody listens on the subject (no runner, or no registry for API calls).
    #[error("nobody is serving {0}: no runner (or registry) is listening there")]
    NoResponders(String),
    /// No reply within the timeout.
    #[error("no reply on {subject} within {timeout:?}")]
    Timeout {
        /// The subject asked.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The registry API answered with an error.
    #[error("{}{}", .0.error.message, details(&.0.error.details))]
    Api(ApiError),
    /// A reply (or a stored value) did not parse.
    #[error("malformed reply on {subject}")]
    Malformed {
        /// The subject asked, or the KV key or object read.
        subject: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The request is malformed (a bad id, action, parameter name or timeout).
    #[error("{}", .0.message)]
    Invalid(Rejection),
    /// Parameters given as `key=value` are malformed.
    #[error("{0}")]
    Parameters(String),
    /// Enqueueing a job failed.
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// Any other NATS failure.
    #[error("NATS: {what}")]
    Nats {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

impl ClientError {
    fn nats(what: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        ClientError::Nats {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// ` in domain "D"` for messages, or nothing.
fn domain_note(domain: &Option<String>) -> String {
    domain
        .as_ref()
        .map(|d| format!(" in domain \"{d}\""))
        .unwrap_or_default()
}

fn details(details: &[String]) -> String {
    details.iter().map(|d| format!("\n  {d}")).collect()
}

/// An action resolved against the versions available now, with everything that explains it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The action.
    pub action: Action,
    /// Its runtime with current availability (`None`: not registered).
    pub runtime: Option<Runtime>,
    /// The resolver's decision and verdicts.
    pub resolution: Resolution,
}

impl Resolved {
    /// The chosen version, or why none can run.
    pub fn key(&self) -> Result<VersionKey, Refusal> {
        self.resolution.outcome.clone().map(|c| c.key)
    }

    /// The decision as the registry's `resolve` operation reports it.
    pub fn report(&self, ns: &Namespace) -> ResolveReply {
        report(
            &self.action.reference,
            &self.resolution,
            self.runtime.as_ref(),
            ns,
        )
    }
}

/// What [`Client::verify`] gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// One answer per runner that answered, by runner id.
    pub answers: Vec<crate::wire::VerifyReply>,
    /// Live runners that were expected to answer and did not in time.
    pub missing: Vec<String>,
}

/// A connection to one Attune installation (one NATS server and prefix).
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    ns: Namespace,
    js: jetstream::Context,
    /// Where the registry's buckets and streams are (the account's own JetStream by default).
    domain: JetStreamDomain,
}

impl Client {
    /// Wraps a connected NATS client, using the account's own JetStream.
    pub fn new(nats: async_nats::Client, ns: Namespace) -> Self {
        Self::with_jetstream_domain(nats, ns, JetStreamDomain::local())
    }

    /// Wraps a connected NATS client whose Attune resources are in JetStream `domain` (a client
    /// on a leaf node reaching the hub's).
    pub fn with_jetstream_domain(
        nats: async_nats::Client,
        ns: Namespace,
        domain: JetStreamDomain,
    ) -> Self {
        let js = domain.context(nats.clone());
        Client {
            nats,
            ns,
            js,
            domain,
        }
    }

    /// The JetStream context of Attune's resources, for commands that read streams directly.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The namespace in use.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    async fn bucket(&self, bucket: Bucket) -> Result<kv::Store, ClientError> {
        let name = bucket.name(&self.ns);
        self.js.get_key_value(&name).await.map_err(|e| {
            let e: async_nats::Error = e.into();
            if crate::jetstream::stream_not_found(&*e) {
                ClientError::NotPublished(name)
            } else {
                ClientError::JetStreamUnreachable {
                    bucket: name,
                    domain: self.domain.name().map(str::to_string),
                    source: e,
                }
            }
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<T>, ClientError> {
        let store = self.bucket(bucket).await?;
        let Some(bytes) = store.get(key).await.map_err(|e| {
            ClientError::nats(format!("reading KV {}/{key}", bucket.name(&self.ns)), e)
        })?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ClientError::Malformed {
                subject: format!("KV {}/{key}", bucket.name(&self.ns)),
                source,
            })
    }

    /// The current route of `action` (KV `attune-routes`), with one request: a direct get of
    /// the key's last value. `None` when there is none to be had — an unknown action, a
    /// registry that keeps no routes, a bucket this client may not read — and then
    /// [`Client::resolve`] says why, in the resolver's words.
    pub async fn route(&self, action: &str) -> Option<ActionRoute> {
        // Only a well-formed ref makes a subject; anything else is the resolver's to refuse.
        crate::name::check_action_ref(action).ok()?;
        let subject =
            crate::jetstream::kv_direct_get(&self.domain, &Bucket::Routes.name(&self.ns), action);
        let req = async_nats::Request::new()
            .payload(bytes::Bytes::new())
            .timeout(Some(ROUTE_TIMEOUT));
        let msg = self.nats.send_request(subject, req).await.ok()?;
        if msg.status.is_some_and(|s| s != async_nats::StatusCode::OK) {
            return None;
        }
        // A deleted or purged key is a marker with an operation header and no value.
        if msg
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some()
        {
            return None;
        }
        serde_json::from_slice::<ActionRoute>(&msg.payload)
            .ok()
            .filter(|r| r.action == action)
    }

    /// One action from the `attune-actions` bucket.
    pub async fn action(&self, reference: &str) -> Result<Action, ClientError> {
        self.get_json(Bucket::Actions, reference)
            .await?
            .ok_or_else(|| Refusal::UnknownAction(reference.to_string()).into())
    }

    /// One runtime from the `attune-runtimes` bucket, by canonical name.
    pub async fn runtime(&self, name: &str) -> Result<Option<Runtime>, ClientError> {
        self.get_json(Bucket::Runtimes, name).await
    }

    /// Resolves `reference` against the versions available now ([`resolve`](crate::resolve)),
    /// in `mode`. `constraint` overrides the action's own (for `attune resolve --constraint`).
    pub async fn resolve(
        &self,
        reference: &str,
        constraint: Option<&str>,
        mode: Mode,
    ) -> Result<Resolved, ClientError> {
        let action: Option<Action> = self.get_json(Bucket::Actions, reference).await?;
        let runtime: Option<Runtime> = match &action {
            Some(a) => self.runtime(&a.runtime).await?,
            None => None,
        };
        let resolution = resolve(
            reference,
            action.as_ref(),
            |_| runtime.as_ref(),
            constraint,
            mode,
        )?;
        Ok(Resolved {
            action: action.expect("resolve refuses an unknown action"),
            runtime,
            resolution,
        })
    }

    /// Sends `request` to `subject` and waits for the reply. The wait is the timeout the runner
    /// enforces ([`effective_timeout`] of the request's and the action's, `action_timeout`) plus
    /// [`REPLY_GRACE`].
    pub async fn invoke_subject(
        &self,
        subject: &str,
        request: &InvocationRequest,
        action_timeout: Option<f64>,
    ) -> Result<InvocationReply, ClientError> {
        let run_for = effective_timeout(request.timeout_seconds, action_timeout);
        let body = serde_json::to_vec(request).expect("requests always serialise");
        let bytes = self.request(subject, body, run_for + REPLY_GRACE).await?;
        let reply: InvocationReply =
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Malformed {
                subject: subject.to_string(),
                source,
            })?;
        match &reply.result_ref {
            // Too large for a message: the whole reply is in the results object store.
            Some(name) => self.stored_reply(name).await,
            None => Ok(reply),
        }
    }

    /// Resolves `request.action`, then invokes the chosen version's subject. Fails at once, never
    /// after a timeout, when no available version fits.
    pub async fn invoke(
        &self,
        request: &InvocationRequest,
    ) -> Result<InvocationReply, ClientError> {
        let resolved = self.resolve(&request.action, None, Mode::Sync).await?;
        let subject = resolved.key()?.invoke_subject(&self.ns);
        self.invoke_subject(&subject, request, resolved.action.timeout_seconds)
            .await
    }

    // ---- asynchronous invocations (durable jobs) ----

    /// Resolves `request.action` for a job ([`Mode::Job`]: with no runner up, the version that
    /// would be chosen if its runners were) and enqueues it as a durable job on that version's
    /// jobs subject. Returns once the stream has stored it; fails at once when no enabled version
    /// satisfies the action (nothing is queued then).
    pub async fn enqueue(&self, request: &InvocationRequest) -> Result<Enqueued, ClientError> {
        let resolved = self.resolve(&request.action, None, Mode::Job).await?;
        let subject = resolved.key()?.jobs_subject(&self.ns);
        self.enqueue_subject(&subject, request).await
    }

    /// Enqueues `request` on a jobs subject already chosen (`attune.jobs.<runtime>.<version>`).
    pub async fn enqueue_subject(
        &self,
        subject: &str,
        request: &InvocationRequest,
    ) -> Result<Enqueued, ClientError> {
        check_request(request).map_err(ClientError::Invalid)?;
        let job = new_job(request.clone());
        let id = job.request.id.clone().unwrap_or_default();
        let ack = publish_job(&self.js, &self.ns, subject, &job).await?;
        Ok(Enqueued {
            id,
            status: "queued".to_string(),
            subject: subject.to_string(),
            duplicate: ack.duplicate,
        })
    }

    /// Publishes `event` on its trigger's subject and waits for the events stream to store it;
    /// a registry then evaluates it against the rules of its trigger.
    pub async fn publish_event(
        &self,
        event: &crate::events::Event,
    ) -> Result<async_nats::jetstream::publish::PublishAck, ClientError> {
        crate::events::check_trigger(&event.trigger)
            .map_err(|e| ClientError::Parameters(format!("trigger \"{}\": {e}", event.trigger)))?;
        crate::events::publish_event(&self.js, &self.ns, event)
            .await
            .map_err(|e| ClientError::nats(format!("publishing on {}", event.subject(&self.ns)), e))
    }

    /// The result record of job `id` as it is now (`None`: unknown, not started, or expired). A
    /// reply stored in the results object store is fetched, so the record is always complete.
    pub async fn result(&self, id: &str) -> Result<Option<ResultRecord>, ClientError> {
        match self.get_json::<ResultRecord>(Bucket::Results, id).await? {
            Some(record) => self.hydrate(record).await.map(Some),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the final result of job `id`. Subscribes to
    /// `attune.results.<id>` before reading KV, so a result stored in between is not missed.
    pub async fn wait_result(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<ResultRecord, ClientError> {
        use futures::StreamExt;
        let subject = self.ns.results(id);
        let mut sub = self
            .nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| ClientError::nats(format!("subscribing to {subject}"), e))?;
        if let Some(record) = self.result(id).await? {
            if record.is_final {
                return Ok(record);
            }
        }
        let wait = async {
            while let Some(msg) = sub.next().await {
                // Anything else on the subject (a foreign publisher's junk) is not the result.
                if let Ok(record) = serde_json::from_slice::<ResultRecord>(&msg.payload) {
                    if record.is_final {
                        return Some(record);
                    }
                }
            }
            None
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(record)) => self.hydrate(record).await,
            Ok(None) => Err(ClientError::nats(
                format!("waiting on {subject}"),
                "the subscription ended",
            )),
            Err(_) => Err(ClientError::Timeout { subject, timeout }),
        }
    }

    /// Every result record in `attune-results` (large replies are not fetched).
    pub async fn results(&self) -> Result<Vec<ResultRecord>, ClientError> {
        use futures::TryStreamExt;
        let store = self.bucket(Bucket::Results).await?;
        let keys: Vec<String> = store
            .keys()
            .await
            .map_err(|e| ClientError::nats("listing results", e))?
            .try_collect()
            .await
            .map_err(|e| ClientError::nats("listing results", e))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(r) = self.get_json::<ResultRecord>(Bucket::Results, &key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Replaces the reply of a record whose reply lives in the results object store.
    async fn hydrate(&self, mut record: ResultRecord) -> Result<ResultRecord, ClientError> {
        if let Some(name) = record.object.clone() {
            record.reply = self.stored_reply(&name).await?;
        }
        Ok(record)
    }

    /// A whole reply kept in the results object store under `name` (because it was too large
    /// for a message).
    async fn stored_reply(&self, name: &str) -> Result<InvocationReply, ClientError> {
        use tokio::io::AsyncReadExt;
        let store_name = self.ns.object_results_files();
        let what = format!("reading result {name} from object store {store_name}");
        let store = self
            .js
            .get_object_store(&store_name)
            .await
            .map_err(|e| ClientError::nats(&what, e))?;
        let mut object = store
            .get(name)
            .await
            .map_err(|e| ClientError::nats(&what, e))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ClientError::nats(&what, e))?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Malformed {
            subject: format!("object {store_name}/{name}"),
            source,
        })
    }

    /// Every live runner's latest heartbeat, by id: `runner.list` page after page.
    pub async fn runners(&self) -> Result<Vec<crate::RunnerHeartbeat>, ClientError> {
        let mut all = Vec::new();
        let mut request = crate::api::RunnerListRequest::default();
        loop {
            let page: crate::api::RunnerListReply =
                self.api(RegistryOp::RunnerList, &request).await?;
            all.extend(page.runners);
            match page.next {
                // A cursor that does not move on would loop for ever: stop there.
                Some(next) if request.after.as_ref() != Some(&next) => request.after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Asks the live runners to verify versions again now (`attune runtime verify`) and
    /// gathers their answers: every live, non-draining runner the request concerns (all, or the
    /// one it names) answers once its verification is over. Returns the answers, and the ids of
    /// the runners expected that did not answer within `timeout`. No live runner: both empty.
    pub async fn verify(
        &self,
        request: &crate::wire::VerifyRequest,
        timeout: Duration,
    ) -> Result<Verification, ClientError> {
        use futures::StreamExt;
        let live = self.runners().await?;
        let mut expected: std::collections::BTreeSet<String> = live
            .into_iter()
            .filter(|r| !r.draining)
            .map(|r| r.id)
            .filter(|id| request.runner.as_deref().is_none_or(|want| want == id))
            .collect();
        let mut answers = Vec::new();
        if expected.is_empty() {
            return Ok(Verification {
                answers,
                missing: Vec::new(),
            });
        }
        let subject = self.ns.runners_verify();
        let inbox = self.nats.new_inbox();
        let mut replies = self
            .nats
            .subscribe(inbox.clone())
            .await
            .map_err(|e| ClientError::nats(format!("subscribing {inbox}"), e))?;
        let body = serde_json::to_vec(request).expect("a verify request serialises");
        self.nats
            .publish_with_reply(subject.clone(), inbox, body.into())
            .await
            .map_err(|e| ClientError::nats(format!("publishing {subject}"), e))?;
        let deadline = tokio::time::Instant::now() + timeout;
        while !expected.is_empty() {
            let msg = match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(msg)) => msg,
                Ok(None) | Err(_) => break,
            };
            let reply: crate::wire::VerifyReply =
                serde_json::from_slice(&msg.payload).map_err(|source| ClientError::Malformed {
                    subject: subject.clone(),
                    source,
                })?;
            expected.remove(&reply.runner);
            answers.push(reply);
        }
        answers.sort_by(|a, b| a.runner.cmp(&b.runner));
        Ok(Verification {
            answers,
            missing: expected.into_iter().collect(),
        })
    }

    /// Calls one registry API operation.
    pub async fn api<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: RegistryOp,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let subject = self.ns.registry(op);
        let body = serde_json::to_vec(request).expect("API requests always serialise");
        let bytes = self.request(&subject, body, API_TIMEOUT).await?;
        if let Ok(err) = serde_json::from_slice::<ApiError>(&bytes) {
            return Err(ClientError::Api(err));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Malformed { subject, source })
    }

    async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, ClientError> {
        use async_nats::client::RequestErrorKind;
        let req = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(timeout));
        match self.nats.send_request(subject.to_string(), req).await {
            Ok(msg) => Ok(msg.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => ClientError::NoResponders(subject.to_string()),
                RequestErrorKind::TimedOut => ClientError::Timeout {
                    subject: subject.to_string(),
                    timeout,
                },
                _ => ClientError::nats(format!("requesting {subject}"), e),
            }),
        }
    }
}

/// Turns `key=value` arguments into parameters, typed by the action's schema: a value for an
/// integer, number, boolean, array or object parameter is parsed as JSON; a string parameter
/// takes the text as it is; an undeclared key is JSON if it parses, else text.
pub fn parse_assignments(
    schema: &Value,
    args: &[String],
) -> Result<Map<String, Value>, ClientError> {
    let props = schema.get("properties").and_then(Value::as_object);
    let mut out = Map::new();
    for arg in args {
        let Some((key, text)) = arg.split_once('=') else {
            return Err(ClientError::Parameters(format!(
                "parameter \"{arg}\" is not key=value"
            )));
        };
        if key.is_empty() {
            return Err(ClientError::Parameters(format!(
                "parameter \"{arg}\" has an empty name"
            )));
        }
        let declared = props
            .and_then(|p| p.get(key))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str);
        let value = match declared {
            Some("string") => Value::String(text.to_string()),
            Some(ty) => serde_json::from_str(text).map_err(|e| {
                ClientError::Parameters(format!(
                    "parameter {key} is declared {ty}, but \"{text}\" is not valid JSON for it: {e}"
                ))
            })?,
            None => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assignments_follow_the_schema_types() {
        let schema = json!({"type":"object","properties":{
            "name":{"type":"string"},"n":{"type":"integer"},"ok":{"type":"boolean"},
            "xs":{"type":"array"}}});
        let p =
            parse_assignments(&schema, &args(&["name=42", "n=42", "ok=true", "xs=[1,2]"])).unwrap();
        assert_eq!(p["name"], json!("42"));
        assert_eq!(p["n"], json!(42));
        assert_eq!(p["ok"], json!(true));
        assert_eq!(p["xs"], json!([1, 2]));
    }

    #[test]
    fn undeclared_keys_are_json_or_text() {
        let p = parse_assignments(&json!({}), &args(&["a=1", "b=hello world", "c="])).unwrap();
        assert_eq!(p["a"], json!(1));
        assert_eq!(p["b"], json!("hello world"));
        assert_eq!(p["c"], json!(""));
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let p = parse_assignments(&json!({}), &args(&["q=a=b"])).unwrap();
        assert_eq!(p["q"], json!("a=b"));
    }

    #[test]
    fn bad_assignments_say_what_is_wrong() {
        let schema = json!({"properties":{"n":{"type":"integer"}}});
        let e = parse_assignments(&schema, &args(&["n=many"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("parameter n is declared integer") && e.contains("\"many\""),
            "{e}"
        );
        assert!(parse_assignments(&schema, &args(&["novalue"])).is_err());
        assert!(parse_assignments(&schema, &args(&["=x"])).is_err());
    }
}
