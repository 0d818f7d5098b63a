//! Edge runners, end to end: a runner on a leaf node serves the hub, and keeps serving its own
//! site while the link to the hub is down.
//!
//! The hub is a nats-server with JetStream in domain `hub` and a leaf node listener; the registry
//! runs there. The leaf is a second nats-server, as a remote host would run it, with its own
//! JetStream in domain `leaf` and a leaf link to the hub; the runner connects to the leaf only
//! and reaches the registry's buckets and streams with `--js-domain hub`. Stopping the hub cuts
//! the link (and takes the hub's JetStream away); starting it again on the same ports and store
//! restores both.
//!
//! One test, in order, because each step builds on the state the previous one left, as an
//! operator would see it.

use std::time::{Duration, Instant};

use attune_nats::api::{Empty, RunnerListReply};
use attune_nats::client::Client;
use attune_nats::wire::{InvocationReply, InvocationRequest, Status};
use attune_nats::{Namespace, RegistryOp};
use attune_testkit::{
    attune, eventually, poll_until, python_host, start_registry, workspace_root, NatsServer,
    ServiceProcess,
};
use serde_json::{json, Value};

/// The subject the runner serves shell on: the runtime declares no versions.
const SHELL: (&str, &str) = ("shell", "default");

/// How long the link stays down: longer than a heartbeat counts (6 s) and than a JetStream
/// request waits (5 s), so whatever the runner does with the hub's JetStream meanwhile fails.
const OUTAGE: Duration = Duration::from_secs(8);

/// A `core.echo` request saying `message`.
fn echo(message: &str) -> InvocationRequest {
    InvocationRequest {
        id: None,
        action: "core.echo".into(),
        parameters: json!({ "message": message }).as_object().cloned().unwrap(),
        timeout_seconds: None,
    }
}

/// Asserts that `reply` is a success of `core.echo` on the edge runner, echoing `message`.
fn assert_echoed(reply: &InvocationReply, message: &str) {
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.result["message"], message, "{reply:?}");
    assert_eq!(reply.runner.as_deref(), Some("edge"), "{reply:?}");
}

/// Invokes `core.echo` by name with the CLI on `server` and returns the JSON reply, or `None`
/// when it did not succeed (yet).
fn invoke_by_name(server: &NatsServer, message: &str) -> Option<Value> {
    let param = format!("message={message}");
    let out = attune(server, &["-o", "json", "invoke", "core.echo", &param]);
    let reply: Value = serde_json::from_slice(&out.stdout).ok()?;
    (out.status.success() && reply["status"] == "succeeded").then_some(reply)
}

/// Invokes `core.echo` by name through the registry's router (`attune.action.core.echo`), as a
/// program without the CLI does.
async fn through_router(
    client: &Client,
    message: &str,
) -> Result<InvocationReply, async_nats::RequestError> {
    let body = serde_json::to_vec(&echo(message)).unwrap();
    let subject = client.namespace().action("core.echo");
    let msg = client.nats().request(subject, body.into()).await?;
    Ok(serde_json::from_slice(&msg.payload).expect("an invocation reply"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaf_runner_serves_the_hub_and_its_own_site_through_a_link_outage() {
    let began = Instant::now();
    let ns = Namespace::default();
    let mut hub = NatsServer::hub("hub");
    let leaf = NatsServer::leaf_of(&hub, "leaf");
    eventually(Duration::from_secs(10), "the leaf link", || async {
        (hub.leaf_link_up() && leaf.leaf_link_up()).then_some(())
    })
    .await;

    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&hub, &workspace_root().join("packs/core"), work.path());
    let host = python_host(&[]);
    let base = work.path().join("edge");
    let mut runner = ServiceProcess::start(
        "edge",
        &leaf,
        &[
            "--js-domain",
            "hub",
            "runner",
            "start",
            "--name",
            "edge",
            "--runtimes",
            "shell",
            "--envs-dir",
            base.join("envs").to_str().unwrap(),
            "--cache-dir",
            base.join("cache").to_str().unwrap(),
        ],
        Some(&host.isolated_path()),
        work.path(),
    );

    // From the hub: by name (with the CLI, and through the registry's router), by subject, and
    // as a durable job.
    let at_hub = Client::new(hub.connect().await, ns.clone());
    let reply = eventually(
        Duration::from_secs(30),
        "core.echo by name at the hub",
        || async { invoke_by_name(&hub, "by name") },
    )
    .await;
    assert_eq!(reply["runner"], "edge", "{reply}");
    assert_eq!(reply["result"]["message"], "by name", "{reply}");
    let reply = through_router(&at_hub, "through the router")
        .await
        .expect("a reply through the router and the leaf link");
    assert_echoed(&reply, "through the router");
    let subject = ns.invoke(SHELL.0, SHELL.1);
    let reply = at_hub
        .invoke_subject(&subject, &echo("by subject"), None)
        .await
        .expect("a reply through the leaf link");
    assert_echoed(&reply, "by subject");
    let queued = at_hub.enqueue(&echo("as a job")).await.expect("enqueued");
    let record = at_hub
        .wait_result(&queued.id, Duration::from_secs(20))
        .await
        .expect("the job's result");
    assert_echoed(&record.reply, "as a job");

    // The link goes down, and the hub's JetStream with it.
    hub.stop();
    eventually(
        Duration::from_secs(10),
        "the leaf to see the link down",
        || async { (!leaf.leaf_link_up()).then_some(()) },
    )
    .await;

    // The leaf's own site still reaches the runner by subject, again and again over an outage
    // longer than a heartbeat's lifetime and JetStream's request timeout: nothing the runner
    // cannot store in the hub's JetStream holds an invocation up.
    let at_leaf = Client::new(leaf.connect().await, ns.clone());
    let outage = Instant::now();
    let mut served_in_outage = 0;
    for n in 0.. {
        if outage.elapsed() > OUTAGE {
            break;
        }
        let message = format!("during the outage {n}");
        let asked = Instant::now();
        let reply = at_leaf
            .invoke_subject(&subject, &echo(&message), None)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no reply on the leaf during the outage: {e}; runner stderr:\n{}",
                    runner.stderr()
                )
            });
        assert_echoed(&reply, &message);
        served_in_outage += 1;
        // Not a performance bound: JetStream calls to the missing hub time out after 5 s, so
        // a reply this late means the invocation waited for one.
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "invocation {n} took {:?} during the outage: something waited for the hub",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(runner.is_running(), "the runner stopped during the outage");

    // By name needs the hub. Nobody on the leaf answers the router's subject (the router runs in
    // the hub)...
    let refused = through_router(&at_leaf, "by name on the leaf")
        .await
        .expect_err("nobody routes by name on the leaf while the hub is away");
    assert_eq!(
        refused.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "{refused}"
    );
    // ...and `attune invoke` resolves from the hub's KV: the CLI on the leaf says so at once,
    // with what still works, rather than "no registry has published".
    let out = attune(
        &leaf,
        &["--js-domain", "hub", "invoke", "core.echo", "message=x"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("in domain \"hub\" did not answer") && stderr.contains("link to the hub"),
        "{stderr}"
    );

    // The hub comes back on the same ports and store; the leaf reconnects and hub traffic
    // reaches the runner again, by name and by subject.
    hub.restart();
    eventually(Duration::from_secs(15), "the link to come back", || async {
        (hub.leaf_link_up() && leaf.leaf_link_up()).then_some(())
    })
    .await;
    let at_hub = Client::new(hub.connect().await, ns.clone());
    eventually(
        Duration::from_secs(20),
        "a by-subject reply at the hub again",
        || async {
            let reply = at_hub
                .invoke_subject(&subject, &echo("after"), None)
                .await
                .ok()?;
            (reply.status == Status::Succeeded).then_some(())
        },
    )
    .await;
    let reply = eventually(
        Duration::from_secs(20),
        "core.echo by name again",
        || async { invoke_by_name(&hub, "by name again") },
    )
    .await;
    assert_eq!(reply["runner"], "edge", "{reply}");
    // The router runs in the registry, and nothing above went through it: after the hub's
    // restart the registry reconnects on its own schedule (its retries are seconds apart by
    // then), and then rebuilds which runners are live from heartbeats (the edge runner's last
    // stored one predates the outage, so it may count as gone until its next). Wait for both; if
    // the router never answers with a success, the last try is checked as before.
    let ok = poll_until(Duration::from_secs(60), || async {
        through_router(&at_hub, "through the router again")
            .await
            .ok()
            .filter(|r| r.status == Status::Succeeded)
    })
    .await;
    let reply = match ok {
        Some(reply) => reply,
        None => through_router(&at_hub, "through the router again")
            .await
            .expect("a reply through the router after the outage"),
    };
    assert_echoed(&reply, "through the router again");
    // The runner's jobs consumer on the hub's stream is back too.
    let queued = at_hub
        .enqueue(&echo("a job after"))
        .await
        .expect("enqueued");
    let record = at_hub
        .wait_result(&queued.id, Duration::from_secs(20))
        .await
        .expect("the job's result after the outage");
    assert_echoed(&record.reply, "a job after");
    // The execution records it could not store meanwhile are counted, and the count reaches
    // the registry with its next heartbeat.
    eventually(
        Duration::from_secs(10),
        "the dropped records in a heartbeat",
        || async {
            let list: RunnerListReply = at_hub.api(RegistryOp::RunnerList, &Empty {}).await.ok()?;
            let edge = list.runners.into_iter().find(|r| r.id == "edge")?;
            (edge.records_dropped >= served_in_outage).then_some(())
        },
    )
    .await;
    assert!(runner.is_running(), "the runner stopped after the outage");
    eprintln!("leaf scenario took {:?}", began.elapsed());
}
