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
use attune_nats::auth::{self, AuthDir};
use attune_nats::client::Client;
use attune_nats::jetstream::Bucket;
use attune_nats::local;
use attune_nats::wire::{InvocationReply, InvocationRequest, Status};
use attune_nats::{Namespace, RegistryOp};
use attune_testkit::{
    attune, eventually, free_port, poll_until, python_host, start_registry, workspace_root,
    NatsServer, ServiceProcess,
};
use futures::StreamExt;
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
    invoke_by_name_with(&server.url(), &[], message)
}

/// [`invoke_by_name`] on the server at `url`, with connection options `connect` first
/// (`--context FILE`).
fn invoke_by_name_with(url: &str, connect: &[&str], message: &str) -> Option<Value> {
    let param = format!("message={message}");
    let mut args = connect.to_vec();
    args.extend(["-o", "json", "invoke", "core.echo", &param]);
    let out = attune(url, &args);
    let reply: Value = serde_json::from_slice(&out.stdout).ok()?;
    (out.status.success() && reply["status"] == "succeeded").then_some(reply)
}

/// The edge runner, `edge`, serving shell on the server at `url`, connected with `connect`
/// (`--js-domain hub`, or a site's context), on a host with nothing but a shell.
fn start_edge_runner(
    url: &str,
    connect: &[&str],
    host: &attune_testkit::StubInterpreters,
    work: &std::path::Path,
) -> ServiceProcess {
    let base = work.join("edge");
    let (envs, cache) = (base.join("envs"), base.join("cache"));
    let mut args = connect.to_vec();
    args.extend([
        "runner",
        "start",
        "--name",
        "edge",
        "--runtimes",
        "shell",
        "--envs-dir",
        envs.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    ServiceProcess::start("edge", url, &args, Some(&host.isolated_path()), work)
}

/// Invokes `core.echo` on the edge runner from `client`'s server by subject, then as a durable
/// job, and checks both replies.
async fn by_subject_and_as_a_job(client: &Client) {
    let subject = client.namespace().invoke(SHELL.0, SHELL.1);
    let reply = client
        .invoke_subject(&subject, &echo("by subject"), None)
        .await
        .expect("a reply through the leaf link");
    assert_echoed(&reply, "by subject");
    let queued = client.enqueue(&echo("as a job")).await.expect("enqueued");
    let record = client
        .wait_result(&queued.id, Duration::from_secs(20))
        .await
        .expect("the job's result");
    assert_echoed(&record.reply, "as a job");
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
    let mut runner = start_edge_runner(&leaf.url(), &["--js-domain", "hub"], &host, work.path());

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
    by_subject_and_as_a_job(&at_hub).await;

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

/// The leaf site of a secured hub, as `attune auth init --leaf-port` and `attune auth leaf`
/// write them: the site's runner and client work through the link with their own keys, the
/// hub logs no permission violation doing so, and a site server in other hands (the same link
/// key, no local authorization at all) can do over the link nothing the site's users could not.
#[tokio::test(flavor = "multi_thread")]
async fn a_secured_leaf_site_serves_the_hub_and_its_link_carries_only_what_its_users_may() {
    secured_leaf_site(false).await;
}

/// The same with `--tls`: the hub requires TLS with client certificates of its clients, and
/// the site's link reaches the hub's leaf port over TLS, trusting the hub's CA.
#[tokio::test(flavor = "multi_thread")]
async fn a_secured_leaf_site_links_to_a_tls_hub() {
    secured_leaf_site(true).await;
}

async fn secured_leaf_site(tls: bool) {
    let ns = Namespace::default();
    let work = tempfile::tempdir().unwrap();
    let hub_dir = work.path().join("hub-auth");
    let site_dir = work.path().join("edge-auth");

    // The operator's two commands, as the CLI runs them.
    let hub_port = free_port().to_string();
    let leaf_port = free_port().to_string();
    let mut init = vec![
        "auth",
        "init",
        hub_dir.to_str().unwrap(),
        "--port",
        &hub_port,
        "--leaf-port",
        &leaf_port,
    ];
    if tls {
        init.push("--tls");
    }
    let out = attune("nats://unused", &init);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site_port = free_port().to_string();
    let out = attune(
        "nats://unused",
        &[
            "auth",
            "leaf",
            hub_dir.to_str().unwrap(),
            "--site",
            "edge",
            "--out",
            site_dir.to_str().unwrap(),
            "--port",
            &site_port,
            "--runtime",
            "shell",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nats-server --signal reload"), "{text}");
    let hub_auth = auth::load(&hub_dir).unwrap();
    let site_auth = auth::load(&site_dir).unwrap();
    let site_config = std::fs::read_to_string(&site_auth.server_config).unwrap();
    let link_seed = std::fs::read_to_string(&site_auth.hub.as_ref().unwrap().seed).unwrap();
    assert!(
        !text.contains(link_seed.trim()),
        "the CLI never prints a seed"
    );

    let hub_log = work.path().join("hub.log");
    let site_log = work.path().join("site.log");
    let _hub = Server(
        local::start_with_config(&hub_auth.server_config, hub_auth.port, &hub_log)
            .expect("the hub starts with its generated configuration"),
    );
    let _site = Server(
        local::start_with_config(&site_auth.server_config, site_auth.port, &site_log)
            .expect("the site starts with its generated configuration"),
    );
    let link_up = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("Leafnode connection created")
    };
    eventually(
        Duration::from_secs(10),
        "the site's link to the hub",
        || async { (link_up(&hub_log) && link_up(&site_log)).then_some(()) },
    )
    .await;

    let context = |dir: &AuthDir, user: &str| dir.user(user).unwrap().context.display().to_string();
    let _registry = ServiceProcess::start(
        "registry",
        hub_auth.url.as_str(),
        &[
            "--context",
            &context(&hub_auth, "registry"),
            "registry",
            "serve",
            "--data-dir",
            work.path().join("registry").to_str().unwrap(),
            "--packs",
            workspace_root().join("packs/core").to_str().unwrap(),
        ],
        None,
        work.path(),
    );
    // The site's runner names no domain: its context carries the hub's.
    let host = python_host(&[]);
    let runner_context = context(&site_auth, "runner");
    let runner = start_edge_runner(
        &site_auth.url,
        &["--context", &runner_context],
        &host,
        work.path(),
    );

    // The hub's client: by name with the CLI, by subject, and as a job.
    let hub_client = context(&hub_auth, "client");
    let reply = eventually(
        Duration::from_secs(30),
        "core.echo by name at the hub",
        || async { invoke_by_name_with(&hub_auth.url, &["--context", &hub_client], "secured hub") },
    )
    .await;
    assert_eq!(reply["runner"], "edge", "{reply}");
    let client_files = hub_auth.user("client").unwrap();
    let at_hub = Client::new(
        hub_auth
            .connect_options(client_files)
            .await
            .unwrap()
            .connect(&hub_auth.url)
            .await
            .unwrap(),
        ns.clone(),
    );
    let subject = ns.invoke(SHELL.0, SHELL.1);
    by_subject_and_as_a_job(&at_hub).await;
    // The site's own client resolves by name from the hub's KV and is served on the site.
    let site_client = context(&site_auth, "client");
    let reply = invoke_by_name_with(&site_auth.url, &["--context", &site_client], "site client")
        .expect("the site's client invokes by name");
    assert_eq!(reply["runner"], "edge", "{reply}");

    let violations = |log: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        violations(&hub_log),
        Vec::<String>::new(),
        "the hub refused normal work"
    );
    assert_eq!(
        violations(&site_log),
        Vec::<String>::new(),
        "the site refused normal work"
    );

    // A site server in other hands: the same link key, and anyone may connect and do anything
    // on it. Its link still carries only what the site's users may do.
    let rogue_port = free_port();
    let authz = site_config
        .find("authorization {")
        .expect("the site's users");
    let rogue_config = work.path().join("rogue.conf");
    std::fs::write(
        &rogue_config,
        site_config[..authz]
            .replace(
                &format!(":{}\"", site_auth.port),
                &format!(":{rogue_port}\""),
            )
            .replace(
                site_auth.store_dir.to_str().unwrap(),
                work.path().join("rogue-js").to_str().unwrap(),
            )
            .replace("domain: \"edge\"", "domain: \"rogue\""),
    )
    .unwrap();
    let rogue_log = work.path().join("rogue.log");
    let _rogue = Server(
        local::start_with_config(&rogue_config, rogue_port, &rogue_log)
            .expect("the rogue site starts"),
    );
    eventually(Duration::from_secs(10), "the rogue site's link", || async {
        link_up(&rogue_log).then_some(())
    })
    .await;
    // (Replies cross the link only to the site's inboxes, so it uses its runner's.)
    let rogue = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(&site_auth.user("runner").unwrap().inbox_prefix)
        .connect(format!("nats://127.0.0.1:{rogue_port}"))
        .await
        .unwrap();
    let admin = hub_auth.user("admin").unwrap();
    let at_hub_admin = hub_auth
        .connect_options(admin)
        .await
        .unwrap()
        .connect(&hub_auth.url)
        .await
        .unwrap();
    let hub_js = async_nats::jetstream::new(at_hub_admin.clone());
    let actions = hub_js
        .get_key_value(Bucket::Actions.name(&ns))
        .await
        .unwrap();
    let before = actions
        .get("core.echo")
        .await
        .unwrap()
        .expect("core.echo registered");

    let hub_api = attune_nats::connect::JetStreamDomain::named("hub")
        .unwrap()
        .api_prefix();
    // What a site's runner may do, it may: read a bucket's stream through the hub's domain.
    let info = rogue
        .request(
            format!("{hub_api}.STREAM.INFO.KV_{}", Bucket::Runtimes.name(&ns)),
            "".into(),
        )
        .await
        .expect("the link carries what a site's runner may do");
    assert!(
        String::from_utf8_lossy(&info.payload).contains("\"config\""),
        "{info:?}"
    );
    // It listens where replies to the hub's client and the registry's requests go...
    let mut eavesdrop = rogue.subscribe("_INBOX_client.>").await.unwrap();
    let mut registry_ops = rogue
        .subscribe(ns.registry(RegistryOp::RuntimeList))
        .await
        .unwrap();
    // ...and for invocations of a runtime the site was not given (`--runtime shell` only).
    let mut python_calls = rogue.subscribe(ns.invoke_runtime("python")).await.unwrap();
    rogue.flush().await.unwrap();
    // ...rewrites an action in KV, directly and the way a client in the hub's domain writes
    // KV, and deletes the actions bucket through the hub's domain.
    for put in [
        format!("$KV.{}.core.echo", Bucket::Actions.name(&ns)),
        format!("{hub_api}.$KV.{}.core.echo", Bucket::Actions.name(&ns)),
    ] {
        rogue.publish(put, "{}".into()).await.unwrap();
    }
    let deleted = rogue
        .request(
            format!("{hub_api}.STREAM.DELETE.KV_{}", Bucket::Actions.name(&ns)),
            "".into(),
        )
        .await;
    rogue.flush().await.unwrap();
    // The hub's client calls a registry operation and an action meanwhile.
    let _: attune_nats::api::RuntimeListReply = at_hub
        .api(RegistryOp::RuntimeList, &Empty {})
        .await
        .expect("the registry answers the hub's client");
    let reply = at_hub
        .invoke_subject(&subject, &echo("after the rogue"), None)
        .await
        .expect("the real site still serves");
    assert_echoed(&reply, "after the rogue");

    assert!(
        deleted.is_err(),
        "the hub's JetStream answered the rogue: {deleted:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = actions
        .get("core.echo")
        .await
        .unwrap()
        .expect("core.echo still there");
    assert_eq!(before, after, "the rogue changed an action");
    let leaked = tokio::time::timeout(Duration::from_millis(300), eavesdrop.next()).await;
    assert!(
        leaked.is_err(),
        "a client's reply reached the rogue: {leaked:?}"
    );
    let leaked = tokio::time::timeout(Duration::from_millis(300), registry_ops.next()).await;
    assert!(
        leaked.is_err(),
        "a registry request reached the rogue: {leaked:?}"
    );
    // (Nothing serves python: the call fails either way; what matters is who heard it.)
    let _ = at_hub
        .invoke_subject(
            &ns.invoke("python", "3.12"),
            &echo("not for the site"),
            None,
        )
        .await;
    let leaked = tokio::time::timeout(Duration::from_millis(300), python_calls.next()).await;
    assert!(
        leaked.is_err(),
        "a python invocation reached the rogue: {leaked:?}"
    );
    drop(runner);
}

/// A nats-server started from a generated configuration, killed when the test ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
