//! The micro service runners serve with (`attune_nats::micro`): draining an endpoint while
//! requests pour in loses none of them, and discovery describes the service as `nats micro`
//! expects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use attune_nats::micro::{MicroService, ServiceConfig};
use attune_testkit::NatsServer;
use futures::StreamExt;

const SUBJECT: &str = "work.echo";
const QUEUE: &str = "workers";

fn config(instance: &str) -> ServiceConfig {
    ServiceConfig {
        name: "drain-test".into(),
        version: "1.0.0".into(),
        description: format!("instance {instance}"),
        metadata: HashMap::from([("instance".into(), instance.into())]),
    }
}

/// Starts an instance on its own connection; its endpoint answers every request with the
/// instance's name. Returns the service, the trigger that drains the endpoint, and the task
/// that ends once the endpoint is drained and every request delivered has been answered.
async fn instance(
    server: &NatsServer,
    name: &'static str,
) -> (
    MicroService,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<usize>,
) {
    let client = server.connect().await;
    let service = MicroService::start(&client, config(name)).await.unwrap();
    let mut endpoint = service
        .add_endpoint("echo", SUBJECT, QUEUE, HashMap::new())
        .await
        .unwrap();
    let (drain, mut drained) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut answered = 0;
        loop {
            tokio::select! {
                request = endpoint.next() => match request {
                    Some(r) => {
                        r.respond(name.into(), Default::default()).await.unwrap();
                        answered += 1;
                    }
                    None => break,
                },
                _ = &mut drained => {
                    endpoint.drain().await.unwrap();
                    while let Some(r) = endpoint.next().await {
                        r.respond(name.into(), Default::default()).await.unwrap();
                        answered += 1;
                    }
                    break;
                }
            }
        }
        answered
    });
    (service, drain, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_endpoint_under_load_loses_no_request() {
    let server = NatsServer::start();
    let (a_service, drain_a, a) = instance(&server, "a").await;
    let (_b_service, drain_b, b) = instance(&server, "b").await;
    let caller = server.connect().await;

    // Discovery: both instances answer PING and INFO for the service's name.
    let mut pongs = caller.subscribe("_INBOX.discovery").await.unwrap();
    caller
        .publish_with_reply("$SRV.INFO.drain-test", "_INBOX.discovery", "".into())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), pongs.next())
            .await
            .expect("an INFO answer")
            .unwrap();
        let info: async_nats::service::Info = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(info.kind, "io.nats.micro.v1.info_response");
        assert_eq!(info.endpoints.len(), 1, "{info:?}");
        assert_eq!(info.endpoints[0].subject, SUBJECT);
        assert_eq!(info.endpoints[0].queue_group, QUEUE);
        seen.push(info.metadata["instance"].clone());
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);

    // Requests pour in from 64 callers at once; `a` drains in the middle of them.
    let total = 4000;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..64 {
        let caller = caller.clone();
        let sent = sent.clone();
        callers.push(tokio::spawn(async move {
            let mut lost = Vec::new();
            loop {
                let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let asked = caller.request(SUBJECT, "x".into());
                match tokio::time::timeout(Duration::from_secs(10), asked).await {
                    Ok(Ok(_)) => {}
                    other => lost.push(format!("request {n}: {other:?}")),
                }
            }
            lost
        }));
    }
    while sent.load(std::sync::atomic::Ordering::Relaxed) < total / 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drain_a.send(()).unwrap();
    let mut lost = Vec::new();
    for c in callers {
        lost.extend(c.await.unwrap());
    }
    let answered_a = a.await.unwrap();
    assert!(
        lost.is_empty(),
        "{} requests lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(answered_a > 0, "a answered before its drain");

    // A drained endpoint is no longer listed, while the service still answers for its
    // instance; `b`'s stats count what it answered: every request `a` did not.
    let mut answers = caller.subscribe("_INBOX.stats").await.unwrap();
    caller
        .publish_with_reply("$SRV.STATS.drain-test", "_INBOX.stats", "".into())
        .await
        .unwrap();
    let (mut a_stats, mut b_stats) = (None, None);
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(5), answers.next())
            .await
            .expect("a STATS answer")
            .unwrap();
        let s: async_nats::service::Stats = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(s.kind, "io.nats.micro.v1.stats_response");
        if s.endpoints.is_empty() {
            a_stats = Some(s);
        } else {
            b_stats = Some(s);
        }
    }
    assert!(a_stats.is_some(), "a's stats, without its drained endpoint");
    let b_stats = b_stats.expect("b's stats, with its endpoint");
    assert_eq!(b_stats.endpoints[0].requests, total - answered_a);
    assert_eq!(b_stats.endpoints[0].errors, 0);
    drop(a_service);

    drain_b.send(()).unwrap();
    let answered_b = b.await.unwrap();
    assert_eq!(
        answered_a + answered_b,
        total,
        "every request answered once"
    );
}
