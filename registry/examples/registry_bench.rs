//! Registry benchmark: start-up time and the by-name router's added latency.
//!
//! ```sh
//! cargo run --release -p attune-registry --example registry_bench [-- ROUNDS REQUESTS]
//! ```
//!
//! Starts its own nats-server (attune-testkit) and stops everything when done.
//!
//! - **Start-up**: from calling [`attune_registry::start`] with `packs/core` + `packs/examples` to
//!   serving (API and router subscribed, everything published), median of ROUNDS (default 7),
//!   twice: *cold* (new redb file, JetStream buckets deleted first) and *restart* (existing redb
//!   and buckets, as after a registry restart).
//! - **Router**: a stub runner answers on `attune.invoke.shell.default` at once. After a warm-up,
//!   REQUESTS (default 2000) sequential requests go directly to that subject and, interleaved,
//!   through `attune.action.core.echo`; the table shows p50 / p99 of both and the difference.
//!   Requester, stub and registry each have their own connection, as separate processes would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::wire::VerifiedVersion;
use attune_nats::{Namespace, RunnerHeartbeat};
use attune_registry::ServeConfig;
use attune_testkit::{workspace_root, NatsServer};
use futures::StreamExt;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7).max(1);
    let requests: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000)
        .max(100);

    let server = NatsServer::start();
    let ns = Namespace::default();
    let packs: Vec<PathBuf> = ["core", "examples"]
        .iter()
        .map(|p| workspace_root().join("packs").join(p))
        .collect();
    let data = tempfile::tempdir().expect("temp dir");
    let admin = server.connect().await;
    let js = async_nats::jetstream::new(admin.clone());

    // ---- start-up ----
    let mut cold = Vec::new();
    let mut restart = Vec::new();
    for round in 0..rounds {
        // Cold: no database, no buckets.
        let dir = data.path().join(format!("cold-{round}"));
        for b in [
            Bucket::Runtimes,
            Bucket::Actions,
            Bucket::Packs,
            Bucket::Runners,
        ] {
            let _ = js.delete_key_value(b.name(&ns)).await;
        }
        let _ = js.delete_object_store(ns.object_pack_files()).await;
        let client = server.connect().await;
        let config = ServeConfig::new(dir.clone(), packs.clone(), ns.clone());
        let t = Instant::now();
        let reg = attune_registry::start(config, client)
            .await
            .expect("registry starts");
        cold.push(t.elapsed());
        reg.stop().await;

        // Restart: same database, buckets already there.
        let client = server.connect().await;
        let config = ServeConfig::new(dir, packs.clone(), ns.clone());
        let t = Instant::now();
        let reg = attune_registry::start(config, client)
            .await
            .expect("registry restarts");
        restart.push(t.elapsed());
        reg.stop().await;
    }

    // ---- router latency ----
    let reg = attune_registry::start(
        ServeConfig::new(data.path().join("router"), packs.clone(), ns.clone()),
        server.connect().await,
    )
    .await
    .expect("registry starts");

    let stub = server.connect().await;
    let mut sub = stub
        .queue_subscribe(ns.invoke("shell", "default"), "attune".into())
        .await
        .expect("stub subscribes");
    let stub_task = tokio::spawn({
        let stub = stub.clone();
        async move {
            let body = bytes::Bytes::from_static(br#"{"status":"succeeded"}"#);
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = stub.publish(reply, body.clone()).await;
                }
            }
        }
    });
    stub.flush().await.expect("flush");

    // Make shell/default available, as a runner's heartbeat would.
    let now = time::OffsetDateTime::now_utc();
    let beat = RunnerHeartbeat {
        id: "bench".into(),
        host: "bench".into(),
        pid: std::process::id(),
        versions: vec![VerifiedVersion {
            runtime: "shell".into(),
            version: "default".into(),
            detected_version: None,
            binary: "/bin/sh".into(),
        }],
        capacity: 1,
        in_flight: 0,
        started_at: now,
        updated_at: now,
        draining: false,
        unknown_runtimes: Vec::new(),
        records_dropped: 0,
        warm_pools: Vec::new(),
    };
    let runners = open_kv(&js, &ns, Bucket::Runners)
        .await
        .expect("runners bucket");
    runners
        .put("bench", serde_json::to_vec(&beat).unwrap().into())
        .await
        .expect("heartbeat");

    let requester = server.connect().await;
    let direct = ns.invoke("shell", "default");
    let by_name = ns.action("core.echo");
    let payload =
        bytes::Bytes::from_static(br#"{"action":"core.echo","parameters":{"message":"hi"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = requester
            .request(by_name.clone(), payload.clone())
            .await
            .expect("router answers");
        if msg.headers.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "shell never became available");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..300 {
        requester
            .request(direct.clone(), payload.clone())
            .await
            .unwrap();
        requester
            .request(by_name.clone(), payload.clone())
            .await
            .unwrap();
    }
    let mut d = Vec::with_capacity(requests);
    let mut r = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        requester
            .request(direct.clone(), payload.clone())
            .await
            .unwrap();
        d.push(t.elapsed());
        let t = Instant::now();
        let msg = requester
            .request(by_name.clone(), payload.clone())
            .await
            .unwrap();
        r.push(t.elapsed());
        assert!(msg.headers.is_none(), "routed request was rejected");
    }
    d.sort();
    r.sort();

    let actions = reg.registry().view.action_count();
    stub_task.abort();
    let _ = runners.delete("bench").await;
    reg.stop().await;
    drop(server);

    println!();
    println!(
        "registry start-up (packs/core + packs/examples, {actions} actions), median of {rounds}"
    );
    println!("  {:<34} {:>9}", "case", "ms");
    println!(
        "  {:<34} {:>9.1}",
        "cold (new redb, empty JetStream)",
        ms(median(cold))
    );
    println!(
        "  {:<34} {:>9.1}",
        "restart (existing redb and KV)",
        ms(median(restart))
    );
    println!();
    println!("router added latency, {requests} sequential requests each, interleaved");
    println!("  {:<34} {:>9} {:>9}", "path", "p50 ms", "p99 ms");
    let (d50, d99) = (percentile(&d, 0.50), percentile(&d, 0.99));
    let (r50, r99) = (percentile(&r, 0.50), percentile(&r, 0.99));
    println!(
        "  {:<34} {:>9.3} {:>9.3}",
        "direct attune.invoke.shell.default",
        ms(d50),
        ms(d99)
    );
    println!(
        "  {:<34} {:>9.3} {:>9.3}",
        "by name attune.action.core.echo",
        ms(r50),
        ms(r99)
    );
    println!(
        "  {:<34} {:>9.3} {:>9.3}",
        "added by the router",
        ms(r50) - ms(d50),
        ms(r99) - ms(d99)
    );
}
