//! Concurrency limits end to end: an action's `concurrency: {limit, policy}` holds across two
//! runner processes on a real nats-server. Overlap is read from the execution records' timings
//! (`started_at` is when the process started, `finished_at` when it ended).
//!
//! - `wait`: 10 sync calls and 6 jobs of a half-second action with limit 2 all succeed, and no
//!   more than 2 ever run at once;
//! - `reject`: of 10 simultaneous calls with limit 2, 2 run and 8 are refused (429) before either
//!   of the two has ended;
//! - a runner killed (SIGKILL) while holding the only slot of an action does not keep it: the slot
//!   expires and the next call runs.

use std::path::Path;
use std::time::{Duration, Instant};

use attune_nats::api::{Empty, RunnerListReply};
use attune_nats::client::Client;
use attune_nats::executions::{get_execution, ExecutionRecord, ExecutionState};
use attune_nats::subject::RegistryOp;
use attune_nats::{InvocationRequest, Namespace, Status};
use attune_testkit::{
    attune, copy_dir, eventually, python_host, start_registry, start_runner, workspace_root,
    NatsServer,
};
use serde_json::json;

/// Pack `lim`: `pair` (limit 2, wait), `gate` (limit 2, reject) and `solo` (limit 1, wait), each
/// sleeping for its `seconds` parameter.
fn write_packs(root: &Path) -> std::path::PathBuf {
    let packs = root.join("packs");
    copy_dir(&workspace_root().join("packs/core"), &packs.join("core"));
    let lim = packs.join("lim");
    std::fs::create_dir_all(lim.join("actions")).unwrap();
    std::fs::write(lim.join("pack.yaml"), "ref: lim\nversion: 1.0.0\n").unwrap();
    std::fs::write(
        lim.join("actions/nap.py"),
        "import json, sys, time\ntime.sleep(json.load(sys.stdin).get('seconds', 0))\nprint('{}')\n",
    )
    .unwrap();
    for (name, limit, policy) in [
        ("pair", 2, "wait"),
        ("gate", 2, "reject"),
        ("solo", 1, "wait"),
    ] {
        std::fs::write(
            lim.join(format!("actions/{name}.yaml")),
            format!(
                "name: {name}\nrunner_type: python\nentry_point: nap.py\nwarm: false\n\
                 parameters:\n  seconds: {{type: number, default: 0}}\n\
                 concurrency:\n  limit: {limit}\n  policy: {policy}\n"
            ),
        )
        .unwrap();
    }
    packs
}

fn call(action: &str, id: String, seconds: f64) -> InvocationRequest {
    InvocationRequest {
        id: Some(id),
        action: action.into(),
        parameters: json!({ "seconds": seconds }).as_object().unwrap().clone(),
        timeout_seconds: Some(60.0),
    }
}

/// The most records whose process ran at the same moment.
fn max_overlap(records: &[ExecutionRecord]) -> usize {
    let mut edges = Vec::new();
    for r in records {
        let start = r.started_at.expect("the process started");
        let end = r.finished_at.expect("the process ended");
        // An end sorts before a start at the same instant: touching is not overlapping.
        edges.push((start, 1));
        edges.push((end, -1));
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// The finished record of execution `id`.
async fn finished(js: &async_nats::jetstream::Context, id: &str) -> ExecutionRecord {
    let ns = Namespace::default();
    eventually(
        Duration::from_secs(60),
        "the execution's record",
        || async {
            get_execution(js, &ns, id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.state == ExecutionState::Finished)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limits_hold_across_runners_and_a_dead_runner_frees_its_slot() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let packs = write_packs(root);
    let _registry = start_registry(&server, &packs, root);
    let (left_host, right_host) = (python_host(&["3.12.4"]), python_host(&["3.12.4"]));
    let mut runners = [
        start_runner(&server, "left", "python", &left_host, root),
        start_runner(&server, "right", "python", &right_host, root),
    ];
    let nats = server.connect().await;
    let client = Client::new(nats.clone(), Namespace::default());
    let js = async_nats::jetstream::new(nats.clone());
    let run = std::process::id();
    eventually(
        Duration::from_secs(60),
        "both runners serving lim",
        || async {
            let live: RunnerListReply = client.api(RegistryOp::RunnerList, &Empty {}).await.ok()?;
            (live.runners.len() == 2).then_some(())?;
            let r = client
                .invoke(&call("lim.pair", format!("warmup-{run}"), 0.0))
                .await
                .ok()?;
            (r.status == Status::Succeeded).then_some(())
        },
    )
    .await;

    // wait: 10 sync calls and 6 jobs, all at once; never more than 2 running.
    let ids: Vec<String> = (0..16).map(|i| format!("pair-{run}-{i}")).collect();
    let mut sync_calls = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let request = call("lim.pair", id.clone(), 0.5);
        if i < 10 {
            let client = client.clone();
            sync_calls.push(tokio::spawn(async move { client.invoke(&request).await }));
        } else {
            client.enqueue(&request).await.expect("the job is queued");
        }
    }
    for call in sync_calls {
        let reply = call.await.unwrap().expect("a reply");
        assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    }
    let mut records = Vec::new();
    for id in &ids {
        records.push(finished(&js, id).await);
    }
    for r in &records {
        assert_eq!(r.status, Some(Status::Succeeded), "{r:?}");
    }
    let runners_used: std::collections::BTreeSet<_> =
        records.iter().filter_map(|r| r.runner.clone()).collect();
    println!("wait: 16 executions of lim.pair ran on {runners_used:?}");
    assert_eq!(max_overlap(&records), 2, "limit 2 holds across runners");

    // reject: 10 at once, 2 run, 8 refused before either of the 2 has ended.
    let sent = Instant::now();
    let mut gate_calls = Vec::new();
    for i in 0..10 {
        let client = client.clone();
        let request = call("lim.gate", format!("gate-{run}-{i}"), 2.0);
        gate_calls.push(tokio::spawn(async move {
            let reply = client.invoke(&request).await;
            (reply, Instant::now())
        }));
    }
    let (mut ran, mut refused, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    for call in gate_calls {
        let (reply, at) = call.await.unwrap();
        let reply = reply.expect("a reply");
        match reply.status {
            Status::Succeeded => ran.push(at),
            Status::Rejected => {
                let error = reply.error.clone().unwrap_or_default();
                assert!(
                    error.contains("allows 2 at once across all runners"),
                    "{error}"
                );
                refused.push(at);
                refusals.push(reply);
            }
            other => panic!("unexpected {other:?}: {reply:?}"),
        }
    }
    assert_eq!((ran.len(), refused.len()), (2, 8));
    let first_done = ran.iter().min().unwrap();
    assert!(
        refused.iter().all(|at| at < first_done),
        "every refusal came while the two were still running"
    );
    println!(
        "reject: 8 refusals within {:?} of sending; the 2 ran until {:?}",
        refused.iter().max().unwrap().duration_since(sent),
        first_done.duration_since(sent)
    );
    // Recorded as refused, with the reason: the record of a call whose reply was the limit's
    // refusal (RejectCode::LimitReached, 429 in the headers; `Client::invoke` returns the body,
    // whose error names the limit, as checked above).
    let refused_reply = &refusals[0];
    let record = finished(&js, &refused_reply.id).await;
    assert_eq!(record.action, "lim.gate", "{record:?}");
    assert_eq!(record.status, Some(Status::Rejected), "{record:?}");
    let reason = record.error.as_deref().unwrap_or_default();
    assert!(
        reason.contains("action lim.gate allows 2 at once across all runners")
            && reason.contains("concurrency policy reject"),
        "the record says the concurrency limit refused it: {record:?}"
    );
    assert_eq!(record.error, refused_reply.error, "{record:?}");
    assert_eq!(
        (record.started_at, record.exit_code),
        (None, None),
        "a refused call never started a process: {record:?}"
    );

    // A killed runner's slot is freed: lim.solo (limit 1) held by a process that is killed.
    let holder = format!("solo-{run}-held");
    let long = tokio::spawn({
        let client = client.clone();
        let request = InvocationRequest {
            timeout_seconds: Some(150.0),
            ..call("lim.solo", holder.clone(), 120.0)
        };
        async move { client.invoke(&request).await }
    });
    let running = eventually(Duration::from_secs(30), "lim.solo running", || async {
        get_execution(&js, &Namespace::default(), &holder)
            .await
            .ok()
            .flatten()
            .filter(|r| r.state == ExecutionState::Running)
    })
    .await;
    let doomed = match running.runner.as_deref() {
        Some("left") => 0,
        Some("right") => 1,
        other => panic!("run by {other:?}"),
    };
    // While it holds the slot, a call with policy wait and a short timeout gets no slot.
    let blocked = client
        .invoke(&InvocationRequest {
            timeout_seconds: Some(1.0),
            ..call("lim.solo", format!("solo-{run}-blocked"), 0.0)
        })
        .await
        .expect("a reply");
    assert_eq!(blocked.status, Status::Rejected, "{blocked:?}");
    assert!(
        blocked
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no slot came free within the timeout"),
        "{blocked:?}"
    );
    runners[doomed].kill(); // SIGKILL: the slot is never released, only expires
    let killed = Instant::now();
    let next = client
        .invoke(&call("lim.solo", format!("solo-{run}-next"), 0.0))
        .await
        .expect("a reply");
    assert_eq!(next.status, Status::Succeeded, "{next:?}");
    println!(
        "the killed runner's slot was free again {:?} after the SIGKILL",
        killed.elapsed()
    );
    long.abort();

    // The CLI says why a refusal happened, with exit code 2.
    let out = attune(&server, &["action", "show", "lim.gate"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("at most 2 at once across all runners"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
