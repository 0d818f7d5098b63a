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

use crate::jetstream::Bucket;
use crate::jobs::{publish_job, select_for_job, Enqueued, Job, ResultRecord};
use crate::model::{Action, Runtime};
use crate::subject::{Namespace, RegistryOp};
use crate::version::{select, Constraint, NoMatch, Selection, VersionError};
use crate::wire::{ApiError, InvocationReply, InvocationRequest};

/// Extra time a requester waits beyond the action's own timeout, for queueing and transport.
pub const REPLY_GRACE: Duration = Duration::from_secs(5);
/// Timeout used when neither the caller nor the action gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What can go wrong talking to Attune, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry has never published here (or under this prefix).
    #[error("no Attune registry has published on this NATS server (KV bucket \"{0}\" is missing): start one with `attune registry serve` or `attune up`, or check --prefix")]
    NotPublished(String),
    /// No such action.
    #[error("unknown action \"{0}\" (see `attune action list`)")]
    UnknownAction(String),
    /// The action names a runtime nobody registered (a stale action).
    #[error("action {action} uses runtime \"{runtime}\", which is not registered")]
    UnknownRuntime {
        /// The action.
        action: String,
        /// The runtime it names.
        runtime: String,
    },
    /// A constraint given on the command line is invalid.
    #[error(transparent)]
    Constraint(#[from] VersionError),
    /// No available version satisfies the action.
    #[error("{0}")]
    NoVersion(NoMatch),
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
    /// A reply did not parse.
    #[error("malformed reply on {subject}: {message}")]
    Malformed {
        /// The subject asked.
        subject: String,
        /// The parse error.
        message: String,
    },
    /// Parameters given as `key=value` are malformed.
    #[error("{0}")]
    Parameters(String),
    /// Any other NATS failure.
    #[error("NATS: {0}")]
    Nats(String),
}

fn details(details: &[String]) -> String {
    details.iter().map(|d| format!("\n  {d}")).collect()
}

/// An action resolved to the version it would run on now, with the reasoning.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The action.
    pub action: Action,
    /// Its runtime with current availability.
    pub runtime: Runtime,
    /// The constraint that applied (the action's, or an override).
    pub constraint: Constraint,
    /// The chosen version and the verdict on every candidate, or why none fits.
    pub outcome: Result<Selection, NoMatch>,
}

impl Resolved {
    /// The invoke subject of the chosen version, if one was chosen.
    pub fn subject(&self, ns: &Namespace) -> Option<String> {
        self.outcome
            .as_ref()
            .ok()
            .map(|s| ns.invoke(&self.runtime.name, &s.chosen))
    }
}

/// A connection to one Attune installation (one NATS server and prefix).
#[derive(Clone)]
pub struct Client {
    nats: async_nats::Client,
    ns: Namespace,
    js: jetstream::Context,
}

impl Client {
    /// Wraps a connected NATS client.
    pub fn new(nats: async_nats::Client, ns: Namespace) -> Self {
        let js = jetstream::new(nats.clone());
        Client { nats, ns, js }
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
        self.js
            .get_key_value(&name)
            .await
            .map_err(|_| ClientError::NotPublished(name))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        bucket: Bucket,
        key: &str,
    ) -> Result<Option<T>, ClientError> {
        let store = self.bucket(bucket).await?;
        let Some(bytes) = store
            .get(key)
            .await
            .map_err(|e| ClientError::Nats(e.to_string()))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Malformed {
                subject: format!("KV {}/{key}", bucket.name(&self.ns)),
                message: e.to_string(),
            })
    }

    /// One action from the `attune-actions` bucket.
    pub async fn action(&self, reference: &str) -> Result<Action, ClientError> {
        self.get_json(Bucket::Actions, reference)
            .await?
            .ok_or_else(|| ClientError::UnknownAction(reference.to_string()))
    }

    /// One runtime from the `attune-runtimes` bucket, by canonical name.
    pub async fn runtime(&self, name: &str) -> Result<Option<Runtime>, ClientError> {
        self.get_json(Bucket::Runtimes, name).await
    }

    /// Resolves `reference` against the versions available now. `constraint` overrides the
    /// action's own (for `attune resolve --constraint`).
    pub async fn resolve(
        &self,
        reference: &str,
        constraint: Option<&str>,
    ) -> Result<Resolved, ClientError> {
        let action = self.action(reference).await?;
        let runtime =
            self.runtime(&action.runtime)
                .await?
                .ok_or_else(|| ClientError::UnknownRuntime {
                    action: action.reference.clone(),
                    runtime: action.runtime.clone(),
                })?;
        let constraint =
            Constraint::parse_optional(constraint.or(action.runtime_version.as_deref()))?;
        let outcome = select(&runtime.name, &runtime.candidates(), &constraint);
        Ok(Resolved {
            action,
            runtime,
            constraint,
            outcome,
        })
    }

    /// Sends `request` to `subject` and waits for the reply. The wait is the request's timeout
    /// (else the action's, else [`DEFAULT_TIMEOUT`]) plus [`REPLY_GRACE`].
    pub async fn invoke_subject(
        &self,
        subject: &str,
        request: &InvocationRequest,
        action_timeout: Option<f64>,
    ) -> Result<InvocationReply, ClientError> {
        let run_for = request
            .timeout_seconds
            .or(action_timeout)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_TIMEOUT);
        let body = serde_json::to_vec(request).expect("requests always serialise");
        let bytes = self.request(subject, body, run_for + REPLY_GRACE).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            subject: subject.to_string(),
            message: e.to_string(),
        })
    }

    /// Resolves `request.action`, then invokes the chosen version's subject. Fails at once, never
    /// after a timeout, when no available version fits.
    pub async fn invoke(
        &self,
        request: &InvocationRequest,
    ) -> Result<InvocationReply, ClientError> {
        let resolved = self.resolve(&request.action, None).await?;
        let subject = match &resolved.outcome {
            Ok(sel) => self.ns.invoke(&resolved.runtime.name, &sel.chosen),
            Err(no) => return Err(ClientError::NoVersion(no.clone())),
        };
        self.invoke_subject(&subject, request, resolved.action.timeout_seconds)
            .await
    }

    // ---- asynchronous invocations (durable jobs) ----

    /// Resolves `request.action` as [`Client::invoke`] does (see [`select_for_job`]: with no
    /// runner up, the version that would be chosen if its runners were) and enqueues it as a
    /// durable job on that version's jobs subject. Returns once the stream has stored it; fails
    /// at once when no enabled version satisfies the action (nothing is queued then).
    pub async fn enqueue(&self, request: &InvocationRequest) -> Result<Enqueued, ClientError> {
        let resolved = self.resolve(&request.action, None).await?;
        let version = match select_for_job(&resolved.runtime, &resolved.constraint) {
            Ok(sel) => sel.chosen,
            Err(no) => return Err(ClientError::NoVersion(no)),
        };
        let subject = self.ns.jobs(&resolved.runtime.name, &version);
        self.enqueue_subject(&subject, request).await
    }

    /// Enqueues `request` on a jobs subject already chosen (`attune.jobs.<runtime>.<version>`).
    pub async fn enqueue_subject(
        &self,
        subject: &str,
        request: &InvocationRequest,
    ) -> Result<Enqueued, ClientError> {
        let mut request = request.clone();
        let id = request
            .id
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        let job = Job {
            request,
            enqueued_at: Some(crate::time::now_rfc3339()),
        };
        let ack = publish_job(&self.js, &self.ns, subject, &job)
            .await
            .map_err(ClientError::Nats)?;
        Ok(Enqueued {
            id,
            status: "queued".to_string(),
            subject: subject.to_string(),
            duplicate: ack.duplicate,
        })
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
            .map_err(|e| ClientError::Nats(e.to_string()))?;
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
            Ok(None) => Err(ClientError::Nats(format!(
                "subscription to {subject} ended"
            ))),
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
            .map_err(|e| ClientError::Nats(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| ClientError::Nats(e.to_string()))?;
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
        use tokio::io::AsyncReadExt;
        let Some(name) = record.object.clone() else {
            return Ok(record);
        };
        let store_name = self.ns.object_results_files();
        let err = |e: &dyn std::fmt::Display| {
            ClientError::Nats(format!(
                "reading result {name} from object store {store_name}: {e}"
            ))
        };
        let store = self
            .js
            .get_object_store(&store_name)
            .await
            .map_err(|e| err(&e))?;
        let mut object = store.get(&name).await.map_err(|e| err(&e))?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(|e| err(&e))?;
        record.reply = serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            subject: format!("object {store_name}/{name}"),
            message: e.to_string(),
        })?;
        Ok(record)
    }

    /// Calls one registry API operation.
    pub async fn api<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: RegistryOp,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let subject = self.ns.registry(op);
        let body = serde_json::to_vec(request).expect("API requests always serialise");
        let bytes = self
            .request(&subject, body, Duration::from_secs(30))
            .await?;
        if let Ok(err) = serde_json::from_slice::<ApiError>(&bytes) {
            return Err(ClientError::Api(err));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            subject,
            message: e.to_string(),
        })
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
                _ => ClientError::Nats(e.to_string()),
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
