//! `attune runtime verify`: re-verification on demand, answered by every runner.
//!
//! Installing an interpreter on a host should not need a runner restart, and an operator who
//! just did it wants to see the result now rather than at the next scheduled re-verification.
//! Every runner subscribes `<prefix>.runners.verify` (no queue group: all of them hear it). A
//! request names what to verify again (a runtime, a version, one runner); each runner concerned
//! hands it to its reconciler, which verifies those versions in its next convergence (serving
//! what now passes, unsubscribing what now fails), and answers once with what it found. A
//! runner the request does not concern stays silent, so the asker counts answers against the
//! live runners it expects.

use attune_nats::shutdown::Shutdown;
use attune_nats::wire::{VerifyReply, VerifyRequest};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::RunnerConfig;
use crate::reconcile::Ask;

/// Subscribes the verify subject and forwards each request that concerns this runner to the
/// reconciler through `asks`, replying when it answers. Runs until shutdown.
pub async fn listen(
    client: async_nats::Client,
    config: RunnerConfig,
    asks: mpsc::Sender<Ask>,
    mut shutdown: Shutdown,
) {
    let subject = config.namespace.runners_verify();
    let mut requests = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, %subject, "cannot subscribe: on-demand verification is off");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = shutdown.recv() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        if attune_nats::reply::is_stream_replay(Some(reply_to.as_str())) {
            warn!("dropped a stream replay sent to the verify subject");
            continue;
        }
        let answer = |versions, error| VerifyReply {
            runner: config.name.clone(),
            host: config.host.clone(),
            versions,
            error,
        };
        let reply = match serde_json::from_slice::<VerifyRequest>(&msg.payload) {
            Err(e) => answer(Vec::new(), Some(format!("invalid verify request: {e}"))),
            Ok(request) if request.runner.as_deref().is_some_and(|r| r != config.name) => {
                continue;
            }
            Ok(request) => {
                debug!(?request, "verification asked for");
                let (tx, rx) = oneshot::channel();
                if asks.send(Ask { request, reply: tx }).await.is_err() {
                    break;
                }
                // Answered after the convergence, which may take a while (verification commands
                // have their time limit): not in this loop, so other asks are taken meanwhile.
                let client = client.clone();
                let runner = config.name.clone();
                let host = config.host.clone();
                tokio::spawn(async move {
                    let (versions, error) = match rx.await {
                        Ok(Ok(found)) => (found, None),
                        Ok(Err(why)) => (Vec::new(), Some(why)),
                        Err(_) => (Vec::new(), Some("the runner is stopping".to_string())),
                    };
                    let body = VerifyReply {
                        runner,
                        host,
                        versions,
                        error,
                    };
                    publish(&client, reply_to, &body).await;
                });
                continue;
            }
        };
        publish(&client, reply_to, &reply).await;
    }
    debug!("verify listener stopped");
}

/// Sends one answer.
async fn publish(client: &async_nats::Client, to: async_nats::Subject, body: &VerifyReply) {
    let bytes = serde_json::to_vec(body).expect("a verify reply serialises");
    if let Err(e) = client.publish(to, bytes.into()).await {
        warn!(error = %e, "verify answer not sent");
    }
}
