//! Rules at work: each event in stream `ATTUNE_EVENTS` is checked, evaluated against the rules
//! of its trigger, and every rule that matches enqueues a durable job for its action, through
//! the same jobs stream as `attune invoke --async` (so retries and dead letters apply).
//!
//! Every registry pulls from one shared durable consumer, so an event is evaluated by one of
//! them. An event is acknowledged only after each job it caused is stored; a registry that
//! dies midway leaves it to be redelivered, and the jobs it had already stored are not queued
//! twice, because a job's id is derived from the event and the rule and the jobs stream drops a
//! repeated id (see [`attune_nats::jobs::DUPLICATE_WINDOW`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use attune_nats::events::{parse_event, Event};
use attune_nats::executions::{ExecutionMode, ExecutionRecord};
use attune_nats::jobs::{publish_job, Job};
use attune_nats::reply::error_chain;
use attune_nats::shutdown::Shutdown;
use attune_nats::wire::InvocationRequest;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::registry::Registry;

/// How long to wait before opening the consumer again after it failed (a wiped JetStream is
/// provisioned again by the supervisor meanwhile).
const RETRY: Duration = Duration::from_secs(2);

/// What rule evaluation has done since start, for logs and tests.
#[derive(Debug, Default)]
pub struct FireCounts {
    /// Events evaluated (counted once every rule of its trigger was).
    pub events: AtomicU64,
    /// Events refused (malformed, too large, on the wrong subject): never evaluated.
    pub invalid: AtomicU64,
    /// Jobs enqueued by rules.
    pub jobs: AtomicU64,
    /// Matches that enqueued nothing: a value a template needs was missing, or the action
    /// cannot run anywhere.
    pub skipped: AtomicU64,
}

/// Evaluates events until `shutdown`.
pub async fn run(registry: Arc<Registry>, counts: Arc<FireCounts>, mut shutdown: Shutdown) {
    let js = registry.publisher.jetstream().clone();
    loop {
        let messages = async {
            let stream = js.get_stream(registry.ns.stream_events()).await?;
            let consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(&registry.ns.rules_consumer()).await?;
            Ok::<_, async_nats::Error>(consumer.messages().await?)
        };
        let mut messages = tokio::select! {
            _ = shutdown.recv() => return,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %e, "events consumer not open yet; retrying");
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        _ = tokio::time::sleep(RETRY) => continue,
                    }
                }
            },
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.recv() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => fire(&registry, &js, &counts, msg).await,
                Some(Err(e)) => {
                    warn!(error = %e, "reading events failed; reopening the consumer");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Evaluates one event and settles it with the stream.
async fn fire(
    registry: &Registry,
    js: &jetstream::Context,
    counts: &FireCounts,
    msg: jetstream::Message,
) {
    let event = match parse_event(&registry.ns, &msg.subject, &msg.payload) {
        Ok(e) => e,
        Err(e) => {
            counts.invalid.fetch_add(1, Ordering::Relaxed);
            warn!(subject = %msg.subject, error = %e, "event refused");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    // Whoever published it, the payload must be what its trigger type declares.
    if let Err(e) = registry.rules.check_payload(&event.trigger, &event.payload) {
        counts.invalid.fetch_add(1, Ordering::Relaxed);
        warn!(event = %event.id, error = %e, "event refused");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    }
    for rule in registry.rules.for_trigger(&event.trigger) {
        if !rule.matches(&event.payload) {
            continue;
        }
        let reference = &rule.rule.reference;
        let action = &rule.rule.action.reference;
        // A match that cannot become a job is recorded as a refused execution, under the id
        // its job would have had: nothing a rule decided is lost silently.
        let refused = |why: String| {
            ExecutionRecord::refused(
                &job_id(&event, reference),
                action,
                ExecutionMode::Job,
                why,
                Some(event.id.clone()),
                Some(reference.clone()),
            )
        };
        let parameters = match rule.parameters(&event.payload) {
            Ok(p) => p,
            Err(e) => {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
                warn!(event = %event.id, rule = %reference, error = %e, "rule matched but enqueued nothing");
                refused(format!("rule {reference}: {e}"))
                    .publish_unacked(&js.client(), &registry.ns)
                    .await;
                continue;
            }
        };
        let subject = match registry.view.job_route(action) {
            Ok(s) => s,
            Err(refusal) => {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
                warn!(event = %event.id, rule = %reference, action = %action, error = %refusal, "rule matched but its action cannot run");
                refused(refusal.to_string())
                    .publish_unacked(&js.client(), &registry.ns)
                    .await;
                continue;
            }
        };
        let job = Job {
            request: InvocationRequest {
                id: Some(job_id(&event, reference)),
                action: action.clone(),
                parameters,
                timeout_seconds: None,
            },
            enqueued_at: Some(OffsetDateTime::now_utc()),
            event: Some(event.id.clone()),
            rule: Some(reference.clone()),
        };
        match publish_job(js, &registry.ns, &subject, &job).await {
            Ok(ack) => {
                if !ack.duplicate {
                    counts.jobs.fetch_add(1, Ordering::Relaxed);
                }
                info!(event = %event.id, rule = %reference, job = %job.request.id.as_deref().unwrap_or_default(), %subject, "rule fired");
            }
            Err(e) => {
                // Stored jobs are not queued again on redelivery (their ids repeat).
                warn!(event = %event.id, rule = %reference, error = %error_chain(&e), "enqueueing failed; the event will be evaluated again");
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY))).await;
                return;
            }
        }
    }
    counts.events.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = msg.double_ack().await {
        warn!(event = %event.id, error = %e, "acknowledging an event failed; it may be evaluated again");
    }
}

/// The id of the job `rule` enqueues for `event`: the same on every evaluation of that event,
/// so a redelivered event does not queue its jobs twice.
pub fn job_id(event: &Event, rule: &str) -> String {
    let digest = Sha256::new()
        .chain_update(event.id.as_bytes())
        .chain_update([0])
        .chain_update(rule.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("rule-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_stable_per_event_and_rule_and_valid_ids() {
        let e = Event::new("p.t", serde_json::json!({}), None);
        let a = job_id(&e, "p.r1");
        assert_eq!(a, job_id(&e, "p.r1"));
        assert_ne!(a, job_id(&e, "p.r2"));
        let other = Event::new("p.t", serde_json::json!({}), None);
        assert_ne!(a, job_id(&other, "p.r1"));
        attune_nats::name::check_id(&a).unwrap();
    }
}
