//! The by-name router: `attune.action.<pack>.<action>` → `attune.invoke.<runtime>.<version>`.
//!
//! The router looks the action up in the [`View`] (one hash lookup: routes are precomputed),
//! and republishes the request, payload and headers untouched, on the invoke subject with the
//! *requester's* reply subject, so the runner answers the requester directly and the router never
//! waits for it. Requests that cannot be served — unknown or disabled action, no available version
//! — are answered at once with a `rejected` [`InvocationReply`](attune_nats::InvocationReply) and the micro-service error
//! headers.
//!
//! What the router cannot see: a version the view believes available whose last runner died
//! within the heartbeat TTL. The request then reaches no one and the requester waits for its own
//! timeout; availability catches up within [`HEARTBEAT_TTL`](attune_nats::jetstream::HEARTBEAT_TTL).

use std::sync::Arc;

use async_nats::{jetstream, Client, HeaderMap, Message, Subject};
use attune_nats::executions::{ExecutionMode, ExecutionRecord};
use attune_nats::micro::DRAIN_WAIT;
use attune_nats::reply::{
    body_action, check_subject_action, new_id, reject, reject_as, request_id, Rejection,
};
use attune_nats::shutdown::Shutdown;
use attune_nats::subject::ROUTER_QUEUE_GROUP;
use attune_nats::Namespace;
use bytes::Bytes;
use futures::StreamExt;
use tracing::warn;

use crate::view::{Route, View};

/// Subscribes the router (queue group `attune-router`), so several registries share the load.
pub async fn subscribe(
    client: &Client,
    ns: &Namespace,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    client
        .queue_subscribe(ns.action_all(), ROUTER_QUEUE_GROUP.to_string())
        .await
}

/// Routes every by-name request until shutdown, then drains: what was already received is
/// still routed (for at most [`DRAIN_WAIT`]), the next requests go to another registry.
pub async fn run(
    client: Client,
    js: jetstream::Context,
    ns: Namespace,
    view: Arc<View>,
    mut requests: async_nats::Subscriber,
    mut shutdown: Shutdown,
) {
    // Set on shutdown: the subscription is drained, and read until then at most.
    let mut drained_by: Option<tokio::time::Instant> = None;
    loop {
        let msg = tokio::select! {
            _ = shutdown.recv(), if drained_by.is_none() => {
                drained_by = Some(tokio::time::Instant::now() + DRAIN_WAIT);
                if let Err(e) = requests.drain().await {
                    warn!(error = %e, "could not drain the router's subscription");
                    break;
                }
                continue;
            }
            _ = tokio::time::sleep_until(drained_by.unwrap_or_else(tokio::time::Instant::now)), if drained_by.is_some() => break,
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        if let Err(e) = route(&client, &js, &ns, &view, msg).await {
            warn!(error = %e, "router could not publish");
        }
    }
}

/// Routes one request. The hot path allocates nothing of its own when the body names its action.
async fn route(
    client: &Client,
    js: &jetstream::Context,
    ns: &Namespace,
    view: &View,
    msg: Message,
) -> Result<(), async_nats::PublishError> {
    if attune_nats::reply::is_stream_replay(msg.reply.as_deref()) {
        warn!(subject = %msg.subject, "dropped a stream replay sent to the router");
        return Ok(());
    }
    let Some(action_ref) = ns.parse_action(&msg.subject) else {
        let rejection = Rejection::bad_request(format!(
            "subject {} names no action: use {}",
            msg.subject,
            ns.action("<pack>.<action>")
        ));
        return reject(client, &msg, "", &rejection).await;
    };
    if crate::enqueue::wants_async(msg.headers.as_ref()) {
        let route = view.job_route(action_ref);
        let action = action_ref.to_string();
        tokio::spawn(crate::enqueue::enqueue(
            client.clone(),
            js.clone(),
            ns.clone(),
            route,
            action,
            msg,
        ));
        return Ok(());
    }
    // The body may name the action only if it names the subject's: permissions are per subject.
    let named = match body_action(&msg.payload)
        .and_then(|a| a.map(|a| check_subject_action(&a, action_ref)).transpose())
    {
        Ok(named) => named.is_some(),
        Err(rejection) => return reject(client, &msg, action_ref, &rejection).await,
    };
    match view.route(action_ref) {
        Route::Forward(subject) => {
            let payload = if named {
                msg.payload
            } else {
                with_action(msg.payload, action_ref)
            };
            forward(client, subject, msg.reply, msg.headers, payload).await
        }
        Route::Reject(rejection) => {
            // No runner will see it: the history gets its record from here.
            let id = request_id(&msg.payload).unwrap_or_else(new_id);
            ExecutionRecord::refused(
                &id,
                action_ref,
                ExecutionMode::Sync,
                rejection.message.clone(),
                None,
                None,
            )
            .publish_unacked(client, ns)
            .await;
            reject_as(client, &msg, &id, action_ref, &rejection).await
        }
    }
}

async fn forward(
    client: &Client,
    subject: Subject,
    reply: Option<Subject>,
    headers: Option<HeaderMap>,
    payload: Bytes,
) -> Result<(), async_nats::PublishError> {
    match (reply, headers) {
        (Some(reply), Some(headers)) => {
            client
                .publish_with_reply_and_headers(subject, reply, headers, payload)
                .await
        }
        (Some(reply), None) => client.publish_with_reply(subject, reply, payload).await,
        (None, Some(headers)) => client.publish_with_headers(subject, headers, payload).await,
        (None, None) => client.publish(subject, payload).await,
    }
}

/// The body a runner gets must name the action; a by-name caller may leave it out, since the
/// subject says it. Only then is the body rewritten (it was checked to be a JSON object).
fn with_action(payload: Bytes, action_ref: &str) -> Bytes {
    let mut body: serde_json::Map<String, serde_json::Value> = if payload.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice(&payload) {
            Ok(map) => map,
            // Not an object after all: let the runner reject it with its own message.
            Err(_) => return payload,
        }
    };
    body.insert("action".into(), action_ref.into());
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or(payload)
}
