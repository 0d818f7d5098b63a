//! Durable asynchronous invocations end to end, against a real nats-server: the registry runs in
//! process with `packs/core` and a `jobs` pack written here; runners run in process, except where
//! one must be killed with SIGKILL (then it is an `attune runner start` child process).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use attune_nats::client::Client;
use attune_nats::jobs::{consumer_config, open_jobs_stream, ResultRecord};
use attune_nats::resolve::Mode;
use attune_nats::VersionKey;
use attune_nats::{InvocationRequest, Namespace, Status};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::{RunnerConfig, RunnerHandle};
use attune_testkit::{attune_bin, eventually, workspace_root, NatsServer};
use futures::StreamExt;
use serde_json::{json, Map, Value};

/// Reads `"file": "…"` from the JSON parameters on stdin.
const READ_FILE: &str = r#"f=$(sed 's/.*"file": *"\([^"]*\)".*/\1/')"#;

/// The `jobs` pack: (name, extra YAML, script).
fn actions() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("count", "", format!("{READ_FILE}\necho run >> \"$f\"\necho counted\n")),
        (
            "slow",
            "",
            format!("{READ_FILE}\necho start >> \"$f\"\nsleep 3\necho finished\n"),
        ),
        (
            "flaky",
            "retry:\n  max_attempts: 4\n  delay_seconds: 0.2\n  backoff: exponential\n",
            format!(
                "{READ_FILE}\necho run >> \"$f\"\nn=$(wc -l < \"$f\")\nif [ \"$n\" -ge 3 ]; then echo ok; exit 0; fi\necho \"run $n fails\" >&2\nexit 1\n"
            ),
        ),
        (
            "doomed",
            "retry:\n  max_attempts: 2\n  delay_seconds: 0.1\n  on: [failed]\n",
            "echo never >&2\nexit 7\n".to_string(),
        ),
        (
            "big",
            "",
            "head -c 5000000 /dev/zero | tr '\\0' x\n".to_string(),
        ),
    ]
}

fn write_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: jobs\nlabel: Jobs\ndescription: Actions the async tests run.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    for (name, extra, script) in actions() {
        std::fs::write(
            dir.join("actions").join(format!("{name}.yaml")),
            format!(
                "ref: jobs.{name}\nrunner_type: shell\nentry_point: {name}.sh\noutput_format: text\ntimeout_seconds: 30\n{extra}"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("actions").join(format!("{name}.sh")),
            format!("#!/bin/sh\n{script}"),
        )
        .unwrap();
    }
}

/// A nats-server, the registry and a client; runners are started by each test.
struct Setup {
    server: NatsServer,
    nats: async_nats::Client,
    client: Client,
    registry: Option<RunningRegistry>,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer::start();
        let nats = server.connect().await;
        let pack = dir.path().join("packs").join("jobs");
        write_pack(&pack);
        let core = workspace_root().join("packs").join("core");
        let registry = attune_registry::start(
            ServeConfig::new(
                dir.path().join("registry"),
                vec![core, pack],
                Namespace::default(),
            ),
            nats.clone(),
        )
        .await
        .expect("registry starts");
        Setup {
            client: Client::new(nats.clone(), Namespace::default()),
            server,
            nats,
            registry: Some(registry),
            dir,
        }
    }

    fn config(&self, name: &str) -> RunnerConfig {
        let root = self.dir.path();
        let mut c = RunnerConfig::new(root.join("envs"), root.join(format!("cache-{name}")));
        c.name = name.to_string();
        c.runtimes = vec!["shell".into()];
        c.path = "/usr/local/bin:/usr/bin:/bin".into();
        c.concurrency = 2;
        c.verify_timeout = Duration::from_secs(5);
        c.drain_grace = Duration::from_secs(10);
        c
    }

    async fn runner(&self, name: &str) -> RunnerHandle {
        attune_runner::start(self.config(name), self.nats.clone())
            .await
            .expect("runner starts")
    }

    /// `attune runner start` as a child process, serving shell only.
    fn runner_process(&self, name: &str) -> Child {
        let root = self.dir.path();
        Command::new(attune_bin())
            .args(["--server", &self.server.url(), "runner", "start"])
            .args(["--runtimes", "shell", "--concurrency", "1", "--name", name])
            .arg("--cache-dir")
            .arg(root.join(format!("cache-{name}")))
            .arg("--envs-dir")
            .arg(root.join("envs"))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("start attune runner")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn enqueue(&self, action: &str, params: Value) -> String {
        let request = InvocationRequest {
            id: None,
            action: action.to_string(),
            parameters: params.as_object().cloned().unwrap_or_default(),
            timeout_seconds: None,
        };
        let queued = self.client.enqueue(&request).await.expect("enqueued");
        assert_eq!(queued.status, "queued");
        assert!(!queued.duplicate);
        queued.id
    }

    async fn final_result(&self, id: &str) -> ResultRecord {
        self.client
            .wait_result(id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("no final result for {id}: {e}"))
    }

    async fn stop(mut self, runners: Vec<RunnerHandle>) {
        for r in runners {
            r.drain().await;
        }
        if let Some(r) = self.registry.take() {
            r.stop().await;
        }
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn file_param(path: &Path) -> Value {
    json!({ "file": path.display().to_string() })
}

#[tokio::test]
async fn a_job_enqueued_with_no_runner_up_runs_when_one_starts() {
    let setup = Setup::start().await;
    let id = setup.enqueue("core.noop", json!({})).await;
    assert!(
        setup.client.result(&id).await.unwrap().is_none(),
        "nothing ran yet"
    );

    let runner = setup.runner("late").await;
    let record = setup.final_result(&id).await;
    assert_eq!(record.reply.status, Status::Succeeded);
    assert_eq!(record.reply.id, id);
    assert_eq!(record.reply.runner.as_deref(), Some("late"));
    assert_eq!(record.reply.version.as_deref(), Some("default"));
    assert!(record.is_final && !record.dead_letter);
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.subject, "attune.jobs.shell.default");
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn unknown_actions_and_unsatisfiable_constraints_are_refused_at_once() {
    let setup = Setup::start().await;
    let request = InvocationRequest {
        action: "jobs.nope".into(),
        ..Default::default()
    };
    let err = setup.client.enqueue(&request).await.unwrap_err();
    assert!(err.to_string().contains("jobs.nope"), "{err}");
    // No python on the runner is needed: core.py_info wants >=3.12, so ask for a version that
    // no registered python has.
    let resolved = setup
        .client
        .resolve("core.py_info", Some(">=99"), Mode::Job)
        .await
        .unwrap();
    assert!(resolved.key().is_err());
    setup.stop(vec![]).await;
}

#[tokio::test]
async fn the_same_id_published_twice_runs_once() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let runs = setup.file("dedup.log");
    let request = InvocationRequest {
        id: Some("same-id".into()),
        action: "jobs.count".into(),
        parameters: file_param(&runs).as_object().cloned().unwrap(),
        timeout_seconds: None,
    };
    let first = setup.client.enqueue(&request).await.unwrap();
    let second = setup.client.enqueue(&request).await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate, "the stream saw the id before");
    let record = setup.final_result("same-id").await;
    assert_eq!(record.reply.status, Status::Succeeded);
    // Published again after it ran: the record is final, so it is acknowledged, not run.
    let js = jetstream::new(setup.nats.clone());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "other-msg-id");
    js.publish_with_headers(
        "attune.jobs.shell.default",
        headers,
        serde_json::to_vec(&request).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_stream_drained(&js).await;
    assert_eq!(lines(&runs), 1, "ran exactly once");
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn by_name_with_the_async_header_enqueues_through_the_router() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(attune_nats::jobs::HEADER_ASYNC, "true");
    let reply = setup
        .nats
        .request_with_headers(
            "attune.action.core.echo",
            headers,
            r#"{"parameters":{"message":"later"}}"#.into(),
        )
        .await
        .unwrap();
    let queued: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["subject"], "attune.jobs.shell.default");
    let record = setup.final_result(queued["id"].as_str().unwrap()).await;
    assert_eq!(record.reply.result, json!({"message": "later"}));
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn a_job_published_directly_for_an_unknown_action_gets_a_rejected_result() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let js = jetstream::new(setup.nats.clone());
    js.publish(
        "attune.jobs.shell.default",
        r#"{"id":"direct-1","action":"jobs.missing"}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let record = setup.final_result("direct-1").await;
    assert_eq!(record.reply.status, Status::Rejected);
    assert!(record.dead_letter);
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn a_runner_killed_mid_job_loses_nothing_and_another_finishes_it_once() {
    let setup = Setup::start().await;
    // An operator may shorten the ack deadline; runners use the consumer as they find it (and
    // send progress more often). 1.5 s keeps this test short.
    let js = jetstream::new(setup.nats.clone());
    let ns = Namespace::default();
    let stream = open_jobs_stream(&js, &ns).await.unwrap();
    let key = VersionKey::new("shell", "default");
    let mut config = consumer_config(&ns, &key);
    config.ack_wait = Duration::from_millis(1500);
    stream
        .get_or_create_consumer(&key.consumer(), config)
        .await
        .unwrap();

    let mut doomed = setup.runner_process("doomed-runner");
    let starts = setup.file("slow.log");
    let id = setup.enqueue("jobs.slow", file_param(&starts)).await;
    let mut results = setup.nats.subscribe(ns.results(&id)).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the first runner to start the job",
        || async { (lines(&starts) == 1).then_some(()) },
    )
    .await;
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();

    let survivor = setup.runner("survivor").await;
    let record = setup.final_result(&id).await;
    assert_eq!(record.reply.status, Status::Succeeded);
    assert_eq!(record.reply.runner.as_deref(), Some("survivor"));
    assert_eq!(
        lines(&starts),
        2,
        "started by the killed runner, then by the survivor"
    );
    assert_eq!(record.attempts.len(), 1, "the killed run recorded nothing");
    let first = results.next().await.expect("the result was announced");
    let announced: ResultRecord = serde_json::from_slice(&first.payload).unwrap();
    assert!(announced.is_final);
    // Exactly one final result: once the job is acknowledged nothing else is announced.
    wait_stream_drained(&js).await;
    let more = tokio::time::timeout(Duration::from_millis(500), results.next()).await;
    assert!(more.is_err(), "a second result was announced");
    setup.stop(vec![survivor]).await;
}

#[tokio::test]
async fn jobs_queued_across_a_nats_server_restart_are_not_lost() {
    let mut setup = Setup::start().await;
    let runs = setup.file("restart.log");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(setup.enqueue("jobs.count", file_param(&runs)).await);
    }
    setup.server.restart();
    let runner = setup.runner("after-restart").await;
    for id in &ids {
        let record = setup.final_result(id).await;
        assert_eq!(record.reply.status, Status::Succeeded, "{id}");
    }
    assert_eq!(lines(&runs), 5);
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn retries_with_backoff_until_success_record_every_attempt() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let runs = setup.file("flaky.log");
    let id = setup.enqueue("jobs.flaky", file_param(&runs)).await;
    let record = setup.final_result(&id).await;
    assert_eq!(record.reply.status, Status::Succeeded);
    assert!(record.is_final && !record.dead_letter);
    let statuses: Vec<Status> = record.attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [Status::Failed, Status::Failed, Status::Succeeded]
    );
    assert_eq!(record.attempts[0].exit_code, Some(1));
    assert_eq!(
        record
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(lines(&runs), 3);
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn exhausted_retries_leave_a_dead_letter() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let id = setup.enqueue("jobs.doomed", json!({})).await;
    let record = setup.final_result(&id).await;
    assert_eq!(record.reply.status, Status::Failed);
    assert_eq!(record.reply.exit_code, Some(7));
    assert!(record.is_final && record.dead_letter);
    assert_eq!(record.attempts.len(), 2);
    let dead: Vec<String> = setup
        .client
        .results()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.dead_letter)
        .map(|r| r.reply.id)
        .collect();
    assert_eq!(dead, vec![id.clone()]);

    // The CLI shows it: exit code 1 (failed), and says it is a dead letter.
    let out = Command::new(attune_bin())
        .args(["--server", &setup.server.url(), "result", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dead letter"), "{stderr}");
    setup.stop(vec![runner]).await;
}

#[tokio::test]
async fn a_5_mb_result_round_trips_through_the_object_store() {
    let setup = Setup::start().await;
    let mut config = setup.config("big");
    config.output_cap = 8 * 1024 * 1024;
    let runner = attune_runner::start(config, setup.nats.clone())
        .await
        .unwrap();
    let id = setup.enqueue("jobs.big", json!({})).await;
    let record = setup.final_result(&id).await;
    assert_eq!(record.reply.status, Status::Succeeded);
    assert_eq!(record.object.as_deref(), Some(id.as_str()));
    let text = record.reply.result.as_str().expect("text result");
    assert_eq!(text.trim_end().len(), 5_000_000);
    assert!(text.bytes().all(|b| b == b'x' || b == b'\n'));
    setup.stop(vec![runner]).await;
}

// Multi-threaded: the in-process runner must keep running while this thread waits for the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_enqueues_and_waits_for_the_result() {
    let setup = Setup::start().await;
    let runner = setup.runner("r1").await;
    let url = setup.server.url();
    let out = Command::new(attune_bin())
        .args([
            "--server",
            &url,
            "-o",
            "json",
            "invoke",
            "--async",
            "core.echo",
            "message=hi",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let queued: Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let id = queued["id"].as_str().unwrap();
    let out = Command::new(attune_bin())
        .args(["--server", &url, "result", id, "--wait", "--timeout", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"message": "hi"}));
    setup.stop(vec![runner]).await;
}

/// Waits until the jobs stream holds no message: every job was acknowledged.
async fn wait_stream_drained(js: &async_nats::jetstream::Context) {
    eventually(
        Duration::from_secs(10),
        "the job stream to drain",
        || async {
            let mut s = js
                .get_stream(Namespace::default().stream_jobs())
                .await
                .ok()?;
            (s.info().await.ok()?.state.messages == 0).then_some(())
        },
    )
    .await;
}
