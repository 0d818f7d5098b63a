//! The registry API: `attune.registry.<operation>`, a NATS micro service named `attune-registry`.
//!
//! Every operation has the same shape, in one file per group: a typed request from
//! [`attune_nats::api`] in, a typed reply out, and failures as [`ApiError`] (plus the
//! `Nats-Service-Error` headers). This module owns what they share: the service and its
//! endpoints, decoding, encoding, and the mapping of errors to status codes.
//!
//! # Layout
//! - [`pack`]: `pack.register`, `pack.list`, `pack.get`, `pack.remove`.
//! - [`runtime`]: `runtime.list`, `runtime.get`, `version.set_default`, `version.set_enabled`.
//! - [`action`]: `action.list`, `action.get`.
//! - [`resolve`]: the `resolve` operation.
//! - [`runner`]: the `runner.list` operation.
//! - [`rule`]: `rule.list`, `rule.get`, `rule.set_enabled`.
//! - [`sensor`]: `sensor.list`, `sensor.get`, `sensor.set_enabled`, with each sensor's lease.
//! - [`trigger`]: `trigger.list`, `trigger.get`.

pub mod action;
pub mod pack;
pub mod resolve;
pub mod rule;
pub mod runner;
pub mod runtime;
pub mod sensor;
pub mod trigger;

use std::future::Future;
use std::sync::Arc;

use async_nats::Client;
use attune_nats::api::code;
use attune_nats::micro::{Endpoint, MicroService, Request, ServiceConfig, DRAIN_WAIT};
use attune_nats::reply::error_headers;
use attune_nats::shutdown::Shutdown;
use attune_nats::subject::{REGISTRY_QUEUE_GROUP, REGISTRY_SERVICE};
use attune_nats::wire::ApiError;
use attune_nats::RegistryOp;
use bytes::Bytes;
use futures::stream::{SelectAll, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, instrument, warn};

use crate::registry::{Registry, RegistryError};

/// What every operation returns: the reply, or the error body to send instead.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = e.code();
        if code == code::INTERNAL {
            warn!(error = %e, "registry operation failed");
        }
        match e {
            RegistryError::Rejected(errors) => ApiError::new(
                code,
                format!(
                    "pack {} rejected: {} problem{}",
                    errors.dir.display(),
                    errors.problems.len(),
                    if errors.problems.len() == 1 { "" } else { "s" }
                ),
            )
            .with_details(errors.problems.iter().map(ToString::to_string).collect()),
            other => ApiError::new(code, other.to_string()),
        }
    }
}

/// Starts the micro service with one endpoint per operation; requests are handled until
/// shutdown, concurrently (a slow `pack.register` does not hold up `resolve`). On shutdown the
/// endpoints are drained, so every request already received is still answered (another
/// registry, or a restarted one, takes the next), for at most [`DRAIN_WAIT`].
pub async fn start(
    client: &Client,
    registry: Arc<Registry>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, RegistryError> {
    let micro = |source: attune_nats::micro::MicroError| RegistryError::Nats {
        what: "starting the registry service",
        source: source.into(),
    };
    let service = MicroService::start(
        client,
        ServiceConfig {
            name: REGISTRY_SERVICE.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Attune registry: packs, runtimes, versions, actions, resolution".into(),
            metadata: Default::default(),
        },
    )
    .await
    .map_err(micro)?;
    let mut requests = SelectAll::new();
    for op in RegistryOp::ALL {
        let endpoint = service
            .add_endpoint(
                &op.as_str().replace('.', "-"),
                &registry.ns.registry(op),
                REGISTRY_QUEUE_GROUP,
                Default::default(),
            )
            .await
            .map_err(micro)?;
        requests.push(OpEndpoint { op, endpoint });
    }
    Ok(tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut in_flight = JoinSet::new();
        // Set on shutdown: the endpoints are drained, and read until then at most.
        let mut drained_by: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.recv(), if drained_by.is_none() => {
                    drained_by = Some(tokio::time::Instant::now() + DRAIN_WAIT);
                    for e in requests.iter_mut() {
                        if let Err(err) = e.endpoint.drain().await {
                            debug!(error = %err, "draining a registry endpoint");
                        }
                    }
                    service.stop();
                },
                _ = tokio::time::sleep_until(drained_by.unwrap_or_else(tokio::time::Instant::now)), if drained_by.is_some() => {
                    debug!("stopped reading the drained endpoints");
                    break;
                },
                next = requests.next() => match next {
                    Some((op, req)) => {
                        if attune_nats::reply::is_stream_replay(req.message.reply.as_deref()) {
                            warn!(op = op.as_str(), "dropped a stream replay sent to a registry operation");
                            continue;
                        }
                        let registry = registry.clone();
                        in_flight.spawn(async move { answer(&registry, op, req).await });
                    }
                    // Every endpoint drained (or the connection closed).
                    None => break,
                },
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        // Requests already taken get their answer; the store closes only after them.
        while in_flight.join_next().await.is_some() {}
    }))
}

/// One operation's endpoint, yielding its requests tagged with the operation.
struct OpEndpoint {
    op: RegistryOp,
    endpoint: Endpoint,
}

impl futures::Stream for OpEndpoint {
    type Item = (RegistryOp, Request);

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let op = this.op;
        this.endpoint
            .poll_next_unpin(cx)
            .map(|r| r.map(|r| (op, r)))
    }
}

#[instrument(skip_all, fields(op = %op))]
async fn answer(registry: &Registry, op: RegistryOp, req: Request) {
    let result = dispatch(registry, op, &req.message.payload).await;
    let sent = match result {
        Ok(body) => req.respond(body, Default::default()).await,
        Err(err) => {
            debug!(code = err.error.code, message = %err.error.message, "operation failed");
            let headers = error_headers(err.error.code, &err.error.message);
            let body = serde_json::to_vec(&err).expect("errors always serialise");
            req.respond(body.into(), headers).await
        }
    };
    if let Err(e) = sent {
        debug!(error = %e, "could not answer (requester gone?)");
    }
}

/// Decodes, runs and encodes one operation.
pub async fn dispatch(registry: &Registry, op: RegistryOp, payload: &[u8]) -> ApiResult<Bytes> {
    match op {
        RegistryOp::PackRegister => call(payload, |r| pack::register(registry, r)).await,
        RegistryOp::PackList => call(payload, |r| pack::list(registry, r)).await,
        RegistryOp::PackGet => call(payload, |r| pack::get(registry, r)).await,
        RegistryOp::PackRemove => call(payload, |r| pack::remove(registry, r)).await,
        RegistryOp::RuntimeList => call(payload, |r| runtime::list(registry, r)).await,
        RegistryOp::RuntimeGet => call(payload, |r| runtime::get(registry, r)).await,
        RegistryOp::VersionSetDefault => call(payload, |r| runtime::set_default(registry, r)).await,
        RegistryOp::VersionSetEnabled => call(payload, |r| runtime::set_enabled(registry, r)).await,
        RegistryOp::ActionList => call(payload, |r| action::list(registry, r)).await,
        RegistryOp::ActionGet => call(payload, |r| action::get(registry, r)).await,
        RegistryOp::Resolve => call(payload, |r| resolve::resolve(registry, r)).await,
        RegistryOp::RunnerList => call(payload, |r| runner::list(registry, r)).await,
        RegistryOp::RuleList => call(payload, |r| rule::list(registry, r)).await,
        RegistryOp::RuleGet => call(payload, |r| rule::get(registry, r)).await,
        RegistryOp::RuleSetEnabled => call(payload, |r| rule::set_enabled(registry, r)).await,
        RegistryOp::SensorList => call(payload, |r| sensor::list(registry, r)).await,
        RegistryOp::SensorGet => call(payload, |r| sensor::get(registry, r)).await,
        RegistryOp::SensorSetEnabled => call(payload, |r| sensor::set_enabled(registry, r)).await,
        RegistryOp::TriggerList => call(payload, |r| trigger::list(registry, r)).await,
        RegistryOp::TriggerGet => call(payload, |r| trigger::get(registry, r)).await,
    }
}

async fn call<Req, Rep, Fut>(payload: &[u8], op: impl FnOnce(Req) -> Fut) -> ApiResult<Bytes>
where
    Req: DeserializeOwned,
    Rep: Serialize,
    Fut: Future<Output = ApiResult<Rep>>,
{
    // An empty body is `{}`: list operations are often sent without one.
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    let req: Req = serde_json::from_slice(payload)
        .map_err(|e| ApiError::new(code::BAD_REQUEST, format!("invalid request: {e}")))?;
    let reply = op(req).await?;
    Ok(Bytes::from(
        serde_json::to_vec(&reply).expect("replies always serialise"),
    ))
}

/// A 404 with `message`.
pub(crate) fn not_found(message: String) -> ApiError {
    ApiError::new(code::NOT_FOUND, message)
}
