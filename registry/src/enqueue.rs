//! By-name asynchronous invocations: a request to `attune.action.<pack>.<action>` carrying the
//! header `Attune-Async: true` is resolved like any by-name call, then enqueued as a durable job
//! on `attune.jobs.<runtime>.<version>` instead of being forwarded. The requester gets
//! `{"id", "status": "queued", "subject"}` once the stream has stored it.
//!
//! Rejections (unknown or disabled action, no available version) are answered by the router as
//! for sync calls, at once: nothing is queued that could not run.

use async_nats::{Client, HeaderMap, Message};
use attune_nats::jobs::{publish_job, Enqueued, Job, HEADER_ASYNC};
use attune_nats::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE};
use attune_nats::wire::RejectCode;
use attune_nats::{InvocationReply, InvocationRequest, Namespace};
use tracing::warn;

use crate::router::header_value;

/// Whether a by-name request asks to be enqueued.
pub fn wants_async(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get(HEADER_ASYNC))
        .is_some_and(|v| v.as_str().trim().eq_ignore_ascii_case("true"))
}

/// Enqueues a by-name request on the jobs subject `route` chose (or answers why not), and
/// answers the requester. Runs in its own task: waiting for the stream's acknowledgement must not
/// hold up the router.
pub async fn enqueue(
    client: Client,
    ns: Namespace,
    route: Result<String, (RejectCode, String)>,
    action_ref: String,
    msg: Message,
) {
    let route = route.map_err(|(code, message)| (request_id(&msg), code, message));
    let answer = match route.and_then(|subject| job_of(subject, &action_ref, &msg)) {
        Ok((subject, job)) => {
            let js = async_nats::jetstream::new(client.clone());
            let id = job.request.id.clone().unwrap_or_default();
            match publish_job(&js, &ns, &subject, &job).await {
                Ok(ack) => Ok(Enqueued {
                    id,
                    status: "queued".to_string(),
                    subject,
                    duplicate: ack.duplicate,
                }),
                Err(e) => Err((id, RejectCode::Unavailable, e)),
            }
        }
        Err(e) => Err(e),
    };
    let Some(reply) = msg.reply.clone() else {
        if let Err((id, _, e)) = answer {
            warn!(%id, error = %e, "async by-name publish without reply subject not enqueued");
        }
        return;
    };
    let sent = match answer {
        Ok(queued) => {
            let body = serde_json::to_vec(&queued).expect("answers serialise");
            client.publish(reply, body.into()).await
        }
        Err((id, code, message)) => {
            let body = InvocationReply::rejected(id, action_ref.as_str(), message.as_str());
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_SERVICE_ERROR, header_value(&message).as_str());
            headers.insert(HEADER_SERVICE_ERROR_CODE, code.code().to_string().as_str());
            let body = serde_json::to_vec(&body).expect("replies serialise");
            client
                .publish_with_headers(reply, headers, body.into())
                .await
        }
    };
    if let Err(e) = sent {
        warn!(error = %e, "could not answer an async by-name request");
    }
}

/// The id in a request body, else a new one.
fn request_id(msg: &Message) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(&msg.payload)
        .ok()
        .and_then(|i| i.id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The job for a request to be queued on `subject`.
fn job_of(
    subject: String,
    action_ref: &str,
    msg: &Message,
) -> Result<(String, Job), (String, RejectCode, String)> {
    let mut request: InvocationRequest = if msg.payload.is_empty() {
        InvocationRequest::default()
    } else {
        let mut body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&msg.payload).map_err(|e| {
                (
                    uuid::Uuid::new_v4().to_string(),
                    RejectCode::BadRequest,
                    format!("invalid request body: {e}"),
                )
            })?;
        body.entry("action").or_insert(action_ref.into());
        serde_json::from_value(body.into()).map_err(|e| {
            (
                uuid::Uuid::new_v4().to_string(),
                RejectCode::BadRequest,
                format!("invalid request body: {e}"),
            )
        })?
    };
    if request.action.is_empty() {
        request.action = action_ref.to_string();
    }
    request
        .id
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
    Ok((
        subject,
        Job {
            request,
            enqueued_at: Some(attune_nats::time::now_rfc3339()),
        },
    ))
}
