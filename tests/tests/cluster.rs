//! Attune on a three-node NATS cluster, end to end, with the real binaries: the registry with
//! `--replicas 3`, runners on other nodes, each service given the comma-separated server list
//! an operator would write, and nodes killed with SIGKILL as hosts fail.
//!
//! Clients pick a server of their list at random, so which node a service is on is read from
//! the nodes' `/connz` (by the connection names the registry and runners give themselves).
//!
//! - [`survives_the_loss_of_any_node`] runs one scenario in order, each step on the state the
//!   previous one left: serving by name, by subject and asynchronously; losing a runner's node;
//!   losing the leaders of the jobs stream and the results bucket with jobs queued and running;
//!   restarting the registry on another node with its store.
//! - [`rolling_restart_under_load_loses_nothing`] drains and restarts each runner in turn while
//!   callers keep invoking and jobs keep running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::jobs::ResultRecord;
use attune_nats::subject::{runner_connection_name, REGISTRY_CONNECTION_NAME};
use attune_nats::watch::{KvChange, KvFollower};
use attune_nats::{InvocationReply, InvocationRequest, Namespace, Status};
use attune_testkit::{eventually, workspace_root, NatsCluster, ServiceProcess};
use serde_json::{json, Value};

/// The PATH runners get: the system's tools, for shell actions.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Writes pack `work` with action `work.job`: it appends a line to the file named by its
/// `file` parameter (so a test counts runs), sleeps `seconds`, and says `done`.
fn write_work_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: work\nlabel: Work\ndescription: Jobs the cluster tests run.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/job.yaml"),
        "ref: work.job\nrunner_type: shell\nentry_point: job.sh\noutput_format: text\ntimeout_seconds: 30\n\
         parameters:\n  file:\n    type: string\n    required: true\n  seconds:\n    type: number\n    required: true\n\
         parameter_delivery: stdin\nparameter_format: json\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/job.sh"),
        "#!/bin/sh\np=$(cat)\nf=$(echo \"$p\" | sed 's/.*\"file\": *\"\\([^\"]*\\)\".*/\\1/')\n\
         s=$(echo \"$p\" | sed 's/.*\"seconds\": *\\([0-9.]*\\).*/\\1/')\n\
         echo run >> \"$f\"\nsleep \"$s\"\necho done\n",
    )
    .unwrap();
}

/// The cluster, the services' working directory, and a client connected to the cluster.
struct Setup {
    cluster: NatsCluster,
    dir: tempfile::TempDir,
    client: Client,
}

impl Setup {
    async fn start() -> Setup {
        let cluster = NatsCluster::start(3);
        let dir = tempfile::tempdir().unwrap();
        write_work_pack(&dir.path().join("packs/work"));
        let core = workspace_root().join("packs/core");
        std::os::unix::fs::symlink(core, dir.path().join("packs/core")).unwrap();
        let client = Client::new(cluster.connect().await, Namespace::default());
        Setup {
            cluster,
            dir,
            client,
        }
    }

    /// `attune registry serve --replicas 3` with its store in `dir/registry`, given `servers`;
    /// `name` names its log files.
    fn registry(&self, name: &str, servers: &str) -> ServiceProcess {
        let data = self.dir.path().join("registry");
        let packs = self.dir.path().join("packs");
        ServiceProcess::start(
            name,
            servers,
            &[
                "registry",
                "serve",
                "--replicas",
                "3",
                "--data-dir",
                data.to_str().unwrap(),
                "--packs",
                packs.to_str().unwrap(),
            ],
            None,
            self.dir.path(),
        )
    }

    /// `attune runner start --name NAME` serving shell, given `servers`.
    fn runner(&self, name: &str, servers: &str) -> ServiceProcess {
        let base = self.dir.path().join(name);
        ServiceProcess::start(
            name,
            servers,
            &[
                "runner",
                "start",
                "--name",
                name,
                "--runtimes",
                "shell",
                "--concurrency",
                "2",
                "--envs-dir",
                base.join("envs").to_str().unwrap(),
                "--cache-dir",
                base.join("cache").to_str().unwrap(),
            ],
            Some(SYSTEM_PATH),
            self.dir.path(),
        )
    }

    /// Waits until the service with connection name `connection` is connected, and returns
    /// its node.
    async fn node_of(&self, connection: &str) -> usize {
        eventually(
            Duration::from_secs(60),
            &format!("{connection} connected to a node"),
            || async { self.cluster.node_of(connection) },
        )
        .await
    }

    /// Waits until runner `name` serves shell on the node it is connected to: a client on that
    /// node only gets `name`'s reply when its queue subscription is there (a server prefers its
    /// own clients in a queue group). Returns the node.
    async fn wait_serving(&self, name: &str) -> usize {
        let connection = runner_connection_name(name);
        eventually(
            Duration::from_secs(60),
            &format!("runner {name} serving on its node"),
            || async {
                let node = self.cluster.node_of(&connection)?;
                let local = async_nats::connect(self.cluster.node(node)).await.ok()?;
                let local = Client::new(local, Namespace::default());
                for _ in 0..10 {
                    let asked = std::time::Instant::now();
                    let reply = local.invoke(&echo_request("where")).await;
                    // Shown with --nocapture: a slow answer here is a call waiting on
                    // JetStream (the route read) while the cluster elects leaders.
                    if asked.elapsed() > Duration::from_secs(1) {
                        eprintln!("slow call on n{node}: {:?}", asked.elapsed());
                    }
                    let reply = reply.ok()?;
                    if reply.runner.as_deref() == Some(name) {
                        return Some(node);
                    }
                }
                None
            },
        )
        .await
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Enqueues `work.job` with id `id`, retrying while the cluster elects leaders: the same id
    /// is stored once (the stream de-duplicates it), however many tries it takes.
    async fn enqueue_job(&self, id: &str, seconds: f64) {
        let mut parameters = serde_json::Map::new();
        let file = self.file(&format!("{id}.runs"));
        parameters.insert("file".into(), json!(file.display().to_string()));
        parameters.insert("seconds".into(), json!(seconds));
        let request = InvocationRequest {
            id: Some(id.to_string()),
            action: "work.job".into(),
            parameters,
            timeout_seconds: None,
        };
        eventually(
            Duration::from_secs(60),
            &format!("job {id} stored"),
            || async { self.client.enqueue(&request).await.ok() },
        )
        .await;
    }

    /// Waits until every job of `ids` has a final result and returns them.
    async fn final_results(&self, ids: &[String]) -> HashMap<String, ResultRecord> {
        let mut results = HashMap::new();
        for id in ids {
            let record = eventually(
                Duration::from_secs(120),
                &format!("the final result of {id}"),
                || async {
                    let r = self.client.result(id).await.ok()??;
                    r.is_final.then_some(r)
                },
            )
            .await;
            results.insert(id.clone(), record);
        }
        results
    }

    /// How many times job `id` ran, by the lines its action wrote.
    fn runs(&self, id: &str) -> usize {
        std::fs::read_to_string(self.file(&format!("{id}.runs"))).map_or(0, |t| t.lines().count())
    }
}

/// A sync call of `core.echo`.
fn echo_request(message: &str) -> InvocationRequest {
    let mut parameters = serde_json::Map::new();
    parameters.insert("message".into(), json!(message));
    InvocationRequest {
        id: None,
        action: "core.echo".into(),
        parameters,
        timeout_seconds: None,
    }
}

/// Invokes `core.echo` by name: a request to `attune.action.core.echo`, which the registry's
/// router forwards to a runner.
async fn invoke_by_name(client: &Client, message: &str) -> Option<InvocationReply> {
    let body = serde_json::to_vec(&echo_request(message)).unwrap();
    let subject = client.namespace().action("core.echo");
    let msg = client.nats().request(subject, body.into()).await.ok()?;
    serde_json::from_slice(&msg.payload).ok()
}

/// Asserts that `reply` is `core.echo`'s successful answer to `message`.
fn assert_echoed(reply: &InvocationReply, message: &str) {
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.result["message"], message, "{reply:?}");
}

/// Counts, per key, the final result records written to KV `attune-results` while it runs: a
/// job run again after its final result would write a second one.
fn count_final_results(client: &Client) -> Arc<Mutex<HashMap<String, usize>>> {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut follower = KvFollower::new(js, client.namespace().kv_results());
    let out = counts.clone();
    tokio::spawn(async move {
        let mut last: HashMap<String, Vec<u8>> = HashMap::new();
        loop {
            if let KvChange::Put { key, value, .. } = follower.next().await {
                let Ok(record) = serde_json::from_slice::<ResultRecord>(&value) else {
                    continue;
                };
                // A follower that re-read the bucket after a node loss repeats nothing it
                // reported, but skip an identical value anyway: it is the same record.
                if record.is_final && last.get(&key).map(Vec::as_slice) != Some(&value[..]) {
                    *out.lock().unwrap().entry(key.clone()).or_insert(0) += 1;
                }
                last.insert(key, value.to_vec());
            }
        }
    });
    counts
}

/// Every key of the registry's buckets (actions, runtimes, packs, routes) with what a restart
/// must not change: its revision and value. Runtimes are the exception: while runners live, a
/// version's `verified_at` is refreshed every 30 s, restart or not, so for them it is the value
/// without `verified_at` (and no revision).
async fn revisions(client: &Client) -> BTreeMap<String, (Option<u64>, Value)> {
    use futures::StreamExt;
    let ns = client.namespace();
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut all = BTreeMap::new();
    for bucket in [
        ns.kv_actions(),
        ns.kv_runtimes(),
        ns.kv_packs(),
        ns.kv_routes(),
    ] {
        let runtimes = bucket == ns.kv_runtimes();
        let kv = js.get_key_value(&bucket).await.expect("open bucket");
        let mut keys = kv.keys().await.expect("list keys");
        while let Some(key) = keys.next().await {
            let key = key.expect("a key");
            let entry = kv.entry(&key).await.expect("read entry").expect("present");
            let mut value: Value = serde_json::from_slice(&entry.value).expect("JSON");
            let revision = if runtimes {
                for version in value["versions"].as_array_mut().into_iter().flatten() {
                    version.as_object_mut().map(|v| v.remove("verified_at"));
                }
                None
            } else {
                Some(entry.revision)
            };
            all.insert(format!("{bucket}/{key}"), (revision, value));
        }
    }
    all
}

#[tokio::test]
async fn survives_the_loss_of_any_node() {
    let started = std::time::Instant::now();
    let mut setup = Setup::start().await;
    let cluster = &setup.cluster;
    // As operators write them: every service gets every node, its nearest first.
    let mut registry = setup.registry("registry", &cluster.url_list_from(0));
    let _ra = setup.runner("ra", &cluster.url_list_from(1));
    let _rb = setup.runner("rb", &cluster.url_list_from(2));
    let registry_node = setup.node_of(REGISTRY_CONNECTION_NAME).await;
    let ra_node = setup.wait_serving("ra").await;
    let rb_node = setup.wait_serving("rb").await;
    eprintln!("registry on n{registry_node}, ra on n{ra_node}, rb on n{rb_node}");

    // 1. By name, by subject and asynchronously.
    eprintln!("{:?} step 1", started.elapsed());
    let reply = eventually(Duration::from_secs(30), "a by-name reply", || {
        invoke_by_name(&setup.client, "by name")
    })
    .await;
    assert_echoed(&reply, "by name");
    let reply = setup.client.invoke(&echo_request("by subject")).await;
    assert_echoed(&reply.expect("a by-subject reply"), "by subject");
    setup.enqueue_job("first", 0.1).await;
    let first = setup.final_results(&["first".to_string()]).await;
    assert_eq!(first["first"].reply.status, Status::Succeeded);

    // 2. Losing the node a runner is on: it reconnects to another and serves from there.
    eprintln!("{:?} step 2", started.elapsed());
    setup.cluster.kill(ra_node);
    let reconnected = setup.node_of(&runner_connection_name("ra")).await;
    eprintln!("{:?} ra reconnected to n{reconnected}", started.elapsed());
    let moved = setup.wait_serving("ra").await;
    eprintln!("{:?} ra serves on n{moved}", started.elapsed());
    assert_ne!(moved, ra_node, "ra is on a node that was killed");
    let reply = eventually(
        Duration::from_secs(30),
        "a by-name reply after the loss",
        || invoke_by_name(&setup.client, "still here"),
    )
    .await;
    assert_echoed(&reply, "still here");
    setup.cluster.restart(ra_node);

    // 3. Losing the leader of the jobs stream, then the leader of the results bucket, with jobs
    // queued and running: every job gets exactly one final result.
    eprintln!("{:?} step 3", started.elapsed());
    let finals = count_final_results(&setup.client);
    let ns = setup.client.namespace().clone();
    let jobs_stream = ns.stream_jobs();
    let results_stream = format!("KV_{}", ns.kv_results());
    let mut ids = Vec::new();
    for (round, stream) in [&jobs_stream, &results_stream].into_iter().enumerate() {
        for i in 0..8 {
            let id = format!("job-{round}-{i}");
            setup.enqueue_job(&id, 0.5).await;
            ids.push(id);
        }
        let leader = eventually(Duration::from_secs(30), "a stream leader", || {
            setup.cluster.stream_leader(setup.client.nats(), stream)
        })
        .await;
        eprintln!("killing n{leader}, leader of {stream}");
        setup.cluster.kill(leader);
        for i in 8..12 {
            let id = format!("job-{round}-{i}");
            setup.enqueue_job(&id, 0.5).await;
            ids.push(id);
        }
        setup.cluster.restart(leader);
    }
    let results = setup.final_results(&ids).await;
    for id in &ids {
        let record = &results[id];
        assert_eq!(record.reply.status, Status::Succeeded, "{id}: {record:?}");
        assert!(setup.runs(id) >= 1, "{id} never ran");
    }
    // A final record is announced before its job is acknowledged; give the follower a moment to
    // see the last ones.
    for _ in 0..300 {
        if ids.iter().all(|id| finals.lock().unwrap().contains_key(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = finals.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id}: final results seen {:?}, its record now {:?}",
            counts.get(id),
            results[id]
        );
    }

    // 4. The registry restarted with its store, on another node: it serves again and writes
    // nothing that did not change.
    eprintln!("{:?} step 4", started.elapsed());
    let registry_node = setup.node_of(REGISTRY_CONNECTION_NAME).await;
    let before = revisions(&setup.client).await;
    assert!(!before.is_empty());
    registry.terminate();
    let others: Vec<String> = (0..setup.cluster.size())
        .filter(|&i| i != registry_node)
        .map(|i| setup.cluster.node(i))
        .collect();
    let restarted = setup.registry("registry-again", &others.join(","));
    // The old registry's connection stays listed on its node until that server has seen the
    // socket close, and `node_of` takes the first node listing the name: wait until a node
    // other than the old one lists it (the new registry's server list leaves the old one out).
    eventually(
        Duration::from_secs(60),
        "the restarted registry connected to another node",
        || async {
            setup
                .cluster
                .node_of(REGISTRY_CONNECTION_NAME)
                .filter(|&node| node != registry_node)
        },
    )
    .await;
    let reply = eventually(
        Duration::from_secs(60),
        "the restarted registry routing",
        || invoke_by_name(&setup.client, "again"),
    )
    .await;
    assert_echoed(&reply, "again");
    let after = revisions(&setup.client).await;
    let rewritten: Vec<String> = before
        .iter()
        .filter(|(key, was)| after.get(*key) != Some(was))
        .map(|(key, was)| format!("{key}: {was:?} became {:?}", after.get(key)))
        .collect();
    assert!(
        rewritten.is_empty() && before.len() == after.len(),
        "the restarted registry rewrote keys:\n{}\nits log:\n{}",
        rewritten.join("\n"),
        restarted.stderr()
    );
}

#[tokio::test]
async fn rolling_restart_under_load_loses_nothing() {
    let setup = Setup::start().await;
    let cluster = &setup.cluster;
    let _registry = setup.registry("registry", &cluster.url_list_from(0));
    let names = ["r0", "r1", "r2"];
    let mut runners: Vec<ServiceProcess> = names
        .iter()
        .enumerate()
        .map(|(i, name)| setup.runner(name, &cluster.url_list_from(i)))
        .collect();
    for name in names {
        setup.wait_serving(name).await;
    }

    // Four callers on every node invoke by subject and by name, one call after another, until
    // told to stop; every answer is kept.
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for i in 0..4 * setup.cluster.size() {
        let node = i % setup.cluster.size();
        let nats = async_nats::connect(setup.cluster.node(node)).await.unwrap();
        let client = Client::new(nats, Namespace::default());
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let mut answers: Vec<Result<InvocationReply, String>> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let message = format!("caller {i} call {n}");
                let answer = if n % 2 == 0 {
                    client
                        .invoke(&echo_request(&message))
                        .await
                        .map_err(|e| format!("{message}: {e}"))
                } else {
                    invoke_by_name(&client, &message)
                        .await
                        .ok_or_else(|| format!("{message}: no reply by name"))
                };
                answers.push(answer);
                n += 1;
            }
            answers
        }));
    }

    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for k in 0..4 {
            let id = format!("rolling-{i}-{k}");
            setup.enqueue_job(&id, 0.3).await;
            ids.push(id);
        }
        runners[i].terminate();
        runners[i] = setup.runner(name, &setup.cluster.url_list_from(i));
        setup.wait_serving(name).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut calls = 0;
    let mut failures = Vec::new();
    for caller in callers {
        for answer in caller.await.unwrap() {
            calls += 1;
            match answer {
                Ok(reply) if reply.status == Status::Succeeded => {}
                Ok(reply) => failures.push(format!("{reply:?}")),
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!("{calls} calls during the rolling restart");
    assert!(calls > 0);
    assert!(failures.is_empty(), "calls lost or failed: {failures:#?}");
    let results = setup.final_results(&ids).await;
    for id in &ids {
        assert_eq!(results[id].reply.status, Status::Succeeded, "{id}");
    }
}
