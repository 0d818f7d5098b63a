//! Throughput of asynchronous invocations next to sync ones, same stack, same run: a real
//! nats-server, the registry with `packs/core`, one runner (shell only), action `core.noop`.
//!
//! ```sh
//! cargo run --release -p attune-testkit --example async_throughput -- [N] [CONCURRENCY]
//! ```
//!
//! Sync: N calls with 32 in flight. Async: N jobs enqueued (32 publishes in flight, each awaiting
//! its stream acknowledgement), then timed until the last final result is announced on
//! `attune.results.>`. Not a test: speed is measured here, never asserted.

use std::time::{Duration, Instant};

use attune_nats::client::Client;
use attune_nats::jobs::ResultRecord;
use attune_nats::{InvocationRequest, Namespace, Status};
use attune_registry::ServeConfig;
use attune_runner::RunnerConfig;
use attune_testkit::{workspace_root, NatsServer};
use futures::StreamExt;

const IN_FLIGHT: usize = 32;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let nats = server.connect().await;
    let ns = Namespace::default();
    let registry = attune_registry::start(
        ServeConfig::new(
            dir.path().join("registry"),
            vec![workspace_root().join("packs").join("core")],
            ns.clone(),
        ),
        nats.clone(),
    )
    .await
    .unwrap();
    let mut config = RunnerConfig::new(dir.path().join("envs"), dir.path().join("cache"));
    config.runtimes = vec!["shell".into()];
    config.concurrency = concurrency;
    config.max_pending = 4096;
    config.path = "/usr/local/bin:/usr/bin:/bin".into();
    let runner = attune_runner::start(config, nats.clone()).await.unwrap();
    let client = Client::new(nats.clone(), ns.clone());
    // Wait until the registry sees the runner (sync calls resolve against availability).
    while client
        .resolve("core.noop", None, attune_nats::resolve::Mode::Sync)
        .await
        .map(|r| r.key().is_err())
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = |i: usize, tag: &str| InvocationRequest {
        id: Some(format!("{tag}-{i}")),
        action: "core.noop".into(),
        ..Default::default()
    };
    let invoke = ns.invoke("shell", "default");
    let jobs = ns.jobs("shell", "default");

    // Warm-up, then sync.
    for i in 0..20 {
        client
            .invoke_subject(&invoke, &request(i, "warm"), Some(10.0))
            .await
            .unwrap();
    }
    let began = Instant::now();
    let ok = futures::stream::iter(0..n)
        .map(|i| {
            let (client, invoke) = (client.clone(), invoke.clone());
            let req = request(i, "sync");
            async move { client.invoke_subject(&invoke, &req, Some(10.0)).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(matches!(r, Ok(r) if r.status == Status::Succeeded)))
        .count()
        .await;
    let sync_secs = began.elapsed().as_secs_f64();
    assert_eq!(ok, n, "every sync call succeeds");

    // Async: count final results as they are announced.
    let mut results = nats
        .subscribe(format!("{}.results.>", ns.prefix()))
        .await
        .unwrap();
    let done = tokio::spawn(async move {
        let mut finals = 0;
        let mut succeeded = 0;
        while finals < n {
            let Some(msg) = results.next().await else {
                break;
            };
            if let Ok(r) = serde_json::from_slice::<ResultRecord>(&msg.payload) {
                if r.is_final {
                    finals += 1;
                    succeeded += usize::from(r.reply.status == Status::Succeeded);
                }
            }
        }
        (Instant::now(), succeeded)
    });
    let began = Instant::now();
    let queued = futures::stream::iter(0..n)
        .map(|i| {
            let (client, jobs) = (client.clone(), jobs.clone());
            let req = request(i, "async");
            async move { client.enqueue_subject(&jobs, &req).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let enqueue_secs = began.elapsed().as_secs_f64();
    let (finished, succeeded) = done.await.unwrap();
    let async_secs = (finished - began).as_secs_f64();
    assert_eq!(queued, n);
    assert_eq!(succeeded, n, "every job succeeds");

    println!("core.noop, one runner (concurrency {concurrency}), {n} invocations each, {IN_FLIGHT} in flight");
    println!(
        "sync  : {:>8.0} req/s  ({sync_secs:.2} s)",
        n as f64 / sync_secs
    );
    println!(
        "async : {:>8.0} jobs/s ({async_secs:.2} s enqueue to last result; enqueue alone {:.0} jobs/s)",
        n as f64 / async_secs,
        n as f64 / enqueue_secs
    );
    runner.drain().await;
    registry.stop().await;
}
