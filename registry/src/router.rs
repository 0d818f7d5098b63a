//! The by-name router: `attune.action.<pack>.<action>` → `attune.invoke.<runtime>.<version>`.
//!
//! The router looks the action up in the [`View`] (one hash lookup: routes are precomputed),
//! and republishes the request, payload and headers untouched, on the invoke subject with the
//! *requester's* reply subject, so the runner answers the requester directly and the router never
//! waits for it. Requests that cannot be served — unknown or disabled action, no available version
//! — are answered at once with a `rejected` [`InvocationReply`] and the micro-service error
//! headers.
//!
//! What the router cannot see: a version the view believes available whose last runner died
//! within the heartbeat TTL. The request then reaches no one and the requester waits for its own
//! timeout; availability catches up within [`HEARTBEAT_TTL`](attune_nats::jetstream::HEARTBEAT_TTL).

use std::sync::Arc;

use async_nats::{Client, HeaderMap, Message, Subject};
use attune_nats::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, ROUTER_QUEUE_GROUP};
use attune_nats::wire::RejectCode;
use attune_nats::{InvocationReply, Namespace};
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::serve::Shutdown;
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

/// Routes every by-name request until shutdown.
pub async fn run(
    client: Client,
    ns: Namespace,
    view: Arc<View>,
    mut requests: async_nats::Subscriber,
    mut shutdown: Shutdown,
) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.wait() => break,
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        if let Err(e) = route(&client, &ns, &view, msg).await {
            warn!(error = %e, "router could not publish");
        }
    }
    let _ = requests.unsubscribe().await;
}

/// Routes one request. The hot path allocates nothing of its own when the body names its action.
async fn route(
    client: &Client,
    ns: &Namespace,
    view: &View,
    msg: Message,
) -> Result<(), async_nats::PublishError> {
    let action_ref = ns.parse_action(&msg.subject);
    if crate::enqueue::wants_async(msg.headers.as_ref()) {
        let action = action_ref.unwrap_or(msg.subject.as_str()).to_string();
        let route = view.job_route(&action);
        tokio::spawn(crate::enqueue::enqueue(
            client.clone(),
            ns.clone(),
            route,
            action,
            msg,
        ));
        return Ok(());
    }
    let route = action_ref.and_then(|r| view.route(r));
    match route {
        Some(Route::Forward(subject)) => {
            let payload = with_action(msg.payload, action_ref.unwrap_or_default());
            forward(client, subject, msg.reply, msg.headers, payload).await
        }
        Some(Route::Reject { code, message }) => {
            reject(client, &msg, action_ref.unwrap_or_default(), code, &message).await
        }
        None => {
            let action = action_ref.unwrap_or(msg.subject.as_str());
            let message = format!("no action \"{action}\" is registered");
            reject(client, &msg, action, RejectCode::UnknownAction, &message).await
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
/// subject says it. Only then is the body parsed and rewritten.
fn with_action(payload: Bytes, action_ref: &str) -> Bytes {
    if memfind(&payload, b"\"action\"") {
        return payload;
    }
    let mut body: serde_json::Map<String, serde_json::Value> = if payload.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice(&payload) {
            Ok(map) => map,
            // Not an object: let the runner reject it with its own message.
            Err(_) => return payload,
        }
    };
    body.insert("action".into(), action_ref.into());
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or(payload)
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn reject(
    client: &Client,
    msg: &Message,
    action: &str,
    code: RejectCode,
    message: &str,
) -> Result<(), async_nats::PublishError> {
    let Some(reply) = msg.reply.clone() else {
        debug!(
            action,
            message, "rejected a by-name publish without reply subject"
        );
        return Ok(());
    };
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    let id = serde_json::from_slice::<Id>(&msg.payload)
        .ok()
        .and_then(|i| i.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let body = InvocationReply::rejected(id, action, message);
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_SERVICE_ERROR, header_value(message).as_str());
    headers.insert(HEADER_SERVICE_ERROR_CODE, code.code().to_string().as_str());
    let body = serde_json::to_vec(&body).expect("replies always serialise");
    client
        .publish_with_headers(reply, headers, body.into())
        .await
}

/// Header values are one line.
pub(crate) fn header_value(message: &str) -> String {
    message.replace(['\r', '\n'], " ")
}
