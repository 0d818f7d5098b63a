//! A NATS micro service (`nats micro ls|info|stats`) whose endpoints are plain queue
//! subscriptions that the service owns, so that they can be *drained*.
//!
//! async-nats's own service endpoints can only be unsubscribed, and unsubscribing closes the
//! subscription's channel: the requests already received but not yet read are thrown away
//! unanswered, and their callers time out. A runner stops taking work on every rolling restart
//! and whenever a version stops verifying, with its endpoint's channel often holding a few
//! requests, so this was hit in normal operation. Here an endpoint is a subscription stopped
//! with [`Subscriber::drain`](async_nats::Subscriber::drain): the `UNSUB` goes out and every
//! request already received is still handed over, then the stream ends. One window is left:
//! async-nats 0.51 drops the subscription as soon as the `UNSUB` is written, so a request the
//! server sent in the round trip before it read the `UNSUB` is still lost.
//!
//! A drain needs the connection: while the client is disconnected it cannot complete, so the
//! callers bound their wait with [`DRAIN_WAIT`] and stop reading after it.
//!
//! Discovery answers `$SRV.PING|INFO|STATS` (for all services, this service's name, and this
//! instance's id) with the micro protocol's JSON, built from async-nats's own response types, so
//! `nats micro` and any micro-aware client see this service as they would any other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::service::{endpoint, Info, PingResponse, Stats};
use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::subject::{SERVICE_API, SERVICE_VERBS};

/// How long a drained endpoint is read before its caller gives up on the requests still
/// coming: a drain completes within a round trip when connected, never while disconnected.
pub const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a service or endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("subscribing to {subject}")]
pub struct MicroError {
    /// The subject that could not be subscribed.
    pub subject: String,
    /// What the client said.
    #[source]
    pub source: async_nats::SubscribeError,
}

/// What a service says about itself.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service name (`attune-runner`); instances share it.
    pub name: String,
    /// Its version (semver).
    pub version: String,
    /// One line for `nats micro info`.
    pub description: String,
    /// Free-form metadata (host, runner name).
    pub metadata: HashMap<String, String>,
}

/// One endpoint's counters, shared by the endpoint and the requests it delivered.
#[derive(Debug, Default)]
struct Counters {
    requests: usize,
    errors: usize,
    processing: Duration,
    /// The code and text of the last error answer.
    last_error: Option<(usize, String)>,
}

/// One endpoint as discovery shows it.
#[derive(Debug)]
struct EndpointState {
    info: endpoint::Info,
    counters: Arc<Mutex<Counters>>,
}

/// What the discovery task reads.
#[derive(Debug)]
struct State {
    config: ServiceConfig,
    id: String,
    started: time::OffsetDateTime,
    /// By id, in the order they were added: a subject can have a draining endpoint and its
    /// successor at once.
    endpoints: BTreeMap<u64, EndpointState>,
    next_id: u64,
}

/// A running micro service: discovery, and the endpoints added to it.
#[derive(Debug)]
pub struct MicroService {
    client: Client,
    state: Arc<Mutex<State>>,
    discovery: JoinHandle<()>,
}

impl MicroService {
    /// Starts answering discovery for a service described by `config` (no endpoints yet).
    pub async fn start(client: &Client, config: ServiceConfig) -> Result<Self, MicroError> {
        let id = crate::reply::new_id();
        let mut subscriptions = Vec::new();
        for verb in SERVICE_VERBS {
            for subject in [
                format!("{SERVICE_API}.{verb}"),
                format!("{SERVICE_API}.{verb}.{}", config.name),
                format!("{SERVICE_API}.{verb}.{}.{id}", config.name),
            ] {
                let sub = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| MicroError { subject, source })?;
                subscriptions.push(sub);
            }
        }
        let state = Arc::new(Mutex::new(State {
            config,
            id,
            started: time::OffsetDateTime::now_utc(),
            endpoints: BTreeMap::new(),
            next_id: 0,
        }));
        let discovery = tokio::spawn(answer_discovery(
            client.clone(),
            state.clone(),
            futures::stream::select_all(subscriptions),
        ));
        Ok(MicroService {
            client: client.clone(),
            state,
            discovery,
        })
    }

    /// Subscribes `subject` in `queue_group` as endpoint `name` with `metadata`, listed by
    /// discovery until the endpoint is drained or dropped.
    pub async fn add_endpoint(
        &self,
        name: &str,
        subject: &str,
        queue_group: &str,
        metadata: HashMap<String, String>,
    ) -> Result<Endpoint, MicroError> {
        let subscriber = self
            .client
            .queue_subscribe(subject.to_string(), queue_group.to_string())
            .await
            .map_err(|source| MicroError {
                subject: subject.to_string(),
                source,
            })?;
        let counters = Arc::new(Mutex::new(Counters::default()));
        let mut state = self.state.lock().expect("not poisoned");
        let id = state.next_id;
        state.next_id += 1;
        state.endpoints.insert(
            id,
            EndpointState {
                info: endpoint::Info {
                    name: name.to_string(),
                    subject: subject.to_string(),
                    queue_group: queue_group.to_string(),
                    metadata,
                },
                counters: counters.clone(),
            },
        );
        drop(state);
        Ok(Endpoint {
            subscriber,
            id,
            subject: subject.to_string(),
            client: self.client.clone(),
            counters,
            state: self.state.clone(),
        })
    }

    /// Stops answering discovery. Endpoints are drained by their owners.
    pub fn stop(&self) {
        self.discovery.abort();
    }
}

impl Drop for MicroService {
    fn drop(&mut self) {
        self.discovery.abort();
    }
}

/// One endpoint: a stream of [`Request`]s until it is drained.
#[derive(Debug)]
pub struct Endpoint {
    subscriber: Subscriber,
    id: u64,
    subject: String,
    client: Client,
    counters: Arc<Mutex<Counters>>,
    state: Arc<Mutex<State>>,
}

/// The requests, one by one, until the endpoint is drained (then `None`).
impl futures::Stream for Endpoint {
    type Item = Request;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Request>> {
        let this = self.get_mut();
        this.subscriber.poll_next_unpin(cx).map(|message| {
            let message = message?;
            Some(Request {
                message,
                received: Instant::now(),
                client: this.client.clone(),
                counters: this.counters.clone(),
            })
        })
    }
}

impl Endpoint {
    /// The subject it serves.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Stops the server routing requests here: the requests already received are still
    /// returned by the endpoint's stream, which then ends (see the module's note on what is
    /// left, and read it for at most [`DRAIN_WAIT`]). Discovery stops listing the endpoint.
    pub async fn drain(&mut self) -> Result<(), async_nats::UnsubscribeError> {
        self.unlist();
        self.subscriber.drain().await
    }

    fn unlist(&self) {
        self.state
            .lock()
            .expect("not poisoned")
            .endpoints
            .remove(&self.id);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.unlist();
    }
}

/// One request an endpoint received, answered with [`Request::respond`].
#[derive(Debug)]
pub struct Request {
    /// The request as it arrived.
    pub message: Message,
    received: Instant,
    client: Client,
    counters: Arc<Mutex<Counters>>,
}

impl Request {
    /// Sends `body` with `headers` to the request's reply subject, and counts it in the
    /// endpoint's stats: as an error when the headers carry the micro protocol's error header
    /// (`Nats-Service-Error`).
    pub async fn respond(
        &self,
        body: Bytes,
        headers: HeaderMap,
    ) -> Result<(), async_nats::PublishError> {
        let error = headers
            .get(crate::subject::HEADER_SERVICE_ERROR)
            .map(|text| {
                let code = headers
                    .get(crate::subject::HEADER_SERVICE_ERROR_CODE)
                    .and_then(|c| c.as_str().parse().ok())
                    .unwrap_or(0);
                (code, text.to_string())
            });
        {
            let mut c = self.counters.lock().expect("not poisoned");
            c.requests += 1;
            c.processing += self.received.elapsed();
            if let Some(e) = error {
                c.errors += 1;
                c.last_error = Some(e);
            }
        }
        let Some(reply) = self.message.reply.clone() else {
            // Nobody waits for an answer (a plain publish): nothing to send.
            return Ok(());
        };
        if headers.is_empty() {
            self.client.publish(reply, body).await
        } else {
            self.client.publish_with_headers(reply, headers, body).await
        }
    }
}

/// Answers discovery requests until aborted.
async fn answer_discovery(
    client: Client,
    state: Arc<Mutex<State>>,
    mut requests: futures::stream::SelectAll<Subscriber>,
) {
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let body = {
            let s = state.lock().expect("not poisoned");
            describe(&s, request.subject.as_str())
        };
        if let Some(body) = body {
            // Discovery is best effort: a lost answer is asked again by whoever asked.
            let _ = client.publish(reply, body).await;
        }
    }
}

/// The answer to discovery request `subject` (`$SRV.<VERB>[.name[.id]]`).
fn describe(s: &State, subject: &str) -> Option<Bytes> {
    let verb = subject.split('.').nth(1)?;
    let json = match verb {
        "PING" => serde_json::to_vec(&PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name: s.config.name.clone(),
            id: s.id.clone(),
            version: s.config.version.clone(),
            metadata: s.config.metadata.clone(),
        }),
        "INFO" => serde_json::to_vec(&Info {
            kind: "io.nats.micro.v1.info_response".into(),
            name: s.config.name.clone(),
            id: s.id.clone(),
            description: s.config.description.clone(),
            version: s.config.version.clone(),
            metadata: s.config.metadata.clone(),
            endpoints: s.endpoints.values().map(|e| e.info.clone()).collect(),
        }),
        "STATS" => serde_json::to_vec(&Stats {
            kind: "io.nats.micro.v1.stats_response".into(),
            name: s.config.name.clone(),
            id: s.id.clone(),
            version: s.config.version.clone(),
            started: s.started,
            endpoints: s.endpoints.values().map(stats).collect(),
        }),
        _ => return None,
    };
    json.ok().map(Bytes::from)
}

fn stats(e: &EndpointState) -> endpoint::Stats {
    let c = e.counters.lock().expect("not poisoned");
    endpoint::Stats {
        name: e.info.name.clone(),
        subject: e.info.subject.clone(),
        queue_group: e.info.queue_group.clone(),
        requests: c.requests,
        errors: c.errors,
        processing_time: c.processing,
        average_processing_time: c
            .processing
            .checked_div(u32::try_from(c.requests).unwrap_or(u32::MAX))
            .unwrap_or_default(),
        last_error: c
            .last_error
            .clone()
            .map(|(code, status)| async_nats::service::error::Error { code, status }),
        data: None,
    }
}
