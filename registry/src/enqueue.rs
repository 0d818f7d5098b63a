//! By-name asynchronous invocations: a request to `attune.action.<pack>.<action>` carrying the
//! header `Attune-Async: true` is resolved like any by-name call, then enqueued as a durable job
//! on `attune.jobs.<runtime>.<version>` instead of being forwarded. The requester gets
//! `{"id", "status": "queued", "subject"}` once the stream has stored it.
//!
//! Rejections (unknown or disabled action, no available version) are answered by the router as
//! for sync calls, at once: nothing is queued that could not run.

use async_nats::{Client, HeaderMap, Message};
use attune_nats::jobs::{publish_job, Enqueued, HEADER_ASYNC};
use attune_nats::reply::{error_chain, new_job, read_request, reject, Rejection};
use attune_nats::resolve::Refusal;
use attune_nats::wire::RejectCode;
use attune_nats::Namespace;
use tracing::warn;

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
    js: async_nats::jetstream::Context,
    ns: Namespace,
    route: Result<String, Refusal>,
    action_ref: String,
    msg: Message,
) {
    let answer = async {
        let subject = route.map_err(Rejection::from)?;
        let job = new_job(read_request(&msg.payload, Some(&action_ref))?);
        let ack = publish_job(&js, &ns, &subject, &job)
            .await
            .map_err(|e| Rejection::new(RejectCode::Unavailable, error_chain(&e)))?;
        Ok::<_, Rejection>(Enqueued {
            id: job.request.id.unwrap_or_default(),
            status: "queued".to_string(),
            subject,
            duplicate: ack.duplicate,
        })
    }
    .await;
    let Some(reply) = msg.reply.clone() else {
        if let Err(rejection) = answer {
            warn!(error = %rejection.message, "async by-name publish without reply subject not enqueued");
        }
        return;
    };
    let sent = match answer {
        Ok(queued) => {
            let body = serde_json::to_vec(&queued).expect("answers serialise");
            client.publish(reply, body.into()).await
        }
        Err(rejection) => reject(&client, &msg, &action_ref, &rejection).await,
    };
    if let Err(e) = sent {
        warn!(error = %e, "could not answer an async by-name request");
    }
}
