//! Execution history end to end, against a real nats-server: every invocation — sync by
//! subject, sync by name, async job, refused — leaves one record in `ATTUNE_EXECUTIONS`, with
//! the fields an operator reads and secret parameters masked, and none is dropped.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::executions::{
    list_executions, ExecutionFilter, ExecutionMode, ExecutionRecord, ExecutionState,
};
use attune_nats::{InvocationRequest, Namespace, Status};
use attune_runner::RunnerConfig;
use attune_testkit::{attune, eventually, workspace_root, NatsServer};
use futures::StreamExt;
use serde_json::json;

/// Pack `hist`: `say` prints its word (never its secret token) and fails for the word `fail`.
fn write_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: hist\nversion: 1.0.0\n").unwrap();
    std::fs::write(
        dir.join("actions/say.yaml"),
        "name: say\nrunner_type: shell\nentry_point: say.sh\noutput_format: text\n\
         parameters:\n  word: {type: string, required: true}\n  token: {type: string, secret: true}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/say.sh"),
        "#!/bin/sh\nread -r p\nw=$(printf '%s' \"$p\" | sed 's/.*\"word\": *\"\\([^\"]*\\)\".*/\\1/')\n\
         echo \"said $w\"\n[ \"$w\" = fail ] && exit 3\nexit 0\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/slow.yaml"),
        "name: slow\nrunner_type: shell\nentry_point: slow.sh\noutput_format: text\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/slow.sh"),
        "#!/bin/sh\necho first\nsleep 3\necho second\n",
    )
    .unwrap();
}

/// A nats-server, a registry with core and `hist`, and a shell runner named `recorder`.
async fn start(
    root: &Path,
) -> (
    NatsServer,
    async_nats::Client,
    attune_registry::RunningRegistry,
    attune_runner::RunnerHandle,
) {
    start_with_metrics(root, None, None).await
}

/// [`start`], with metrics served on the given addresses.
async fn start_with_metrics(
    root: &Path,
    registry_metrics: Option<std::net::SocketAddr>,
    runner_metrics: Option<std::net::SocketAddr>,
) -> (
    NatsServer,
    async_nats::Client,
    attune_registry::RunningRegistry,
    attune_runner::RunnerHandle,
) {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let pack = root.join("packs/hist");
    write_pack(&pack);
    let mut serve = attune_registry::ServeConfig::new(
        root.join("registry"),
        vec![workspace_root().join("packs/core"), pack],
        Namespace::default(),
    );
    serve.metrics_addr = registry_metrics;
    let registry = attune_registry::start(serve, nats.clone())
        .await
        .expect("registry starts");
    let mut config = RunnerConfig::new(root.join("envs"), root.join("cache"));
    config.metrics_addr = runner_metrics;
    config.name = "recorder".into();
    config.runtimes = vec!["shell".into()];
    config.path = "/usr/local/bin:/usr/bin:/bin".into();
    config.concurrency = 8;
    let runner = attune_runner::start(config, nats.clone())
        .await
        .expect("runner starts");
    (server, nats, registry, runner)
}

/// How each invocation is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    ByName,
    BySubject,
    Job,
    Fails,
    Refused,
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_mixed_invocations_are_all_recorded_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (server, nats, registry, runner) = start(dir.path()).await;
    let client = Client::new(nats.clone(), Namespace::default());
    let subject = Namespace::default().invoke("shell", "default");
    wait_ready(&client).await;

    let ways = [Way::ByName, Way::BySubject, Way::Job, Way::Fails];
    let cases: Vec<(usize, Way)> = (0..500)
        .map(|i| {
            (
                i,
                if i % 25 == 24 {
                    Way::Refused
                } else {
                    ways[i % 4]
                },
            )
        })
        .collect();
    let sent: Vec<(String, Way)> = futures::stream::iter(cases)
        .map(|(i, way)| {
            let (client, subject) = (&client, &subject);
            async move {
                let mut r = request(if way == Way::Fails { "fail" } else { "hello" }, i);
                if way == Way::Refused {
                    r.parameters.insert("word".into(), json!(42));
                }
                let id = match way {
                    Way::Job => client.enqueue(&r).await.expect("enqueued").id,
                    Way::BySubject => {
                        client
                            .invoke_subject(subject, &r, None)
                            .await
                            .expect("reply")
                            .id
                    }
                    _ => client.invoke(&r).await.expect("reply").id,
                };
                (id, way)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(sent.len(), 500);

    let js = async_nats::jetstream::new(nats.clone());
    let ns = Namespace::default();
    let filter = ExecutionFilter {
        action: Some("hist.say".into()),
        ..Default::default()
    };
    let records: HashMap<String, ExecutionRecord> =
        eventually(Duration::from_secs(60), "500 finished records", || async {
            let all = list_executions(&js, &ns, &filter, 0, 1000).await.ok()?;
            let done: HashMap<String, ExecutionRecord> = all
                .into_iter()
                .filter(|r| r.state == ExecutionState::Finished)
                .map(|r| (r.id.clone(), r))
                .collect();
            sent.iter()
                .all(|(id, _)| done.contains_key(id))
                .then_some(done)
        })
        .await;
    for (id, way) in &sent {
        let r = &records[id];
        let expected = match way {
            Way::Fails => Status::Failed,
            Way::Refused => Status::Rejected,
            _ => Status::Succeeded,
        };
        assert_eq!(r.status, Some(expected), "{r:?}");
        assert_eq!(r.runner.as_deref(), Some("recorder"));
        assert_eq!(r.version.as_deref(), Some("default"));
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.mode,
            if *way == Way::Job {
                ExecutionMode::Job
            } else {
                ExecutionMode::Sync
            }
        );
        assert!(r.requested_at.is_some(), "{r:?}");
        if *way == Way::Refused {
            assert!(r.error.is_some() && r.parameters.is_empty(), "{r:?}");
            continue;
        }
        assert_eq!(r.parameters["token"], "***", "the secret is masked: {r:?}");
        assert!(
            !serde_json::to_string(r).unwrap().contains("s3cret"),
            "{r:?}"
        );
        let (started, finished) = (r.started_at.unwrap(), r.finished_at.unwrap());
        assert!(finished >= started, "{r:?}");
        assert!(r.stdout.starts_with("said "), "{r:?}");
        assert_eq!(r.exit_code, Some(if *way == Way::Fails { 3 } else { 0 }));
    }
    assert_eq!(runner.records_dropped(), 0, "no record was dropped");

    // A by-name call the router refuses (no such action) never reaches a runner: the registry
    // records it.
    let refused_id = format!("refused-{}", std::process::id());
    let answer = nats
        .request(
            ns.action("hist.gone"),
            json!({ "id": refused_id }).to_string().into(),
        )
        .await
        .expect("the router answers");
    assert!(String::from_utf8_lossy(&answer.payload).contains("rejected"));
    let refused = eventually(Duration::from_secs(20), "the refusal's record", || async {
        attune_nats::executions::get_execution(&js, &ns, &refused_id)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(refused.status, Some(Status::Rejected));
    assert_eq!(refused.runner, None);
    assert!(
        refused.error.as_deref().unwrap_or("").contains("hist.gone"),
        "{refused:?}"
    );

    // The CLI: newest first with filters and paging, and one record in full.
    let out = attune(
        &server,
        &[
            "-o",
            "json",
            "execution",
            "list",
            "--action",
            "hist.say",
            "--status",
            "failed",
            "--limit",
            "10",
            "--page",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let page = page["executions"].as_array().unwrap();
    assert_eq!(page.len(), 10);
    assert!(page.iter().all(|r| r["status"] == "failed"));
    let (id, _) = sent.iter().find(|(_, w)| *w == Way::Job).unwrap();
    let out = attune(&server, &["execution", "show", id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("status:      succeeded") && text.contains("\"token\":\"***\""),
        "{text}"
    );
    let out = attune(&server, &["execution", "show", "no-such-id"]);
    assert_eq!(out.status.code(), Some(2));

    runner.drain().await;
    registry.stop().await;
}

/// Waits until `hist.say` runs.
async fn wait_ready(client: &Client) {
    eventually(Duration::from_secs(30), "hist.say to run", || async {
        let mut r = request("ready", 0);
        r.id = None;
        client
            .invoke(&r)
            .await
            .ok()
            .filter(|r| r.status == Status::Succeeded)
    })
    .await;
}

fn request(word: &str, i: usize) -> InvocationRequest {
    InvocationRequest {
        id: Some(format!("hist-{i}-{}", uuid_like(i))),
        action: "hist.say".into(),
        parameters: json!({"word": word, "token": "s3cret"})
            .as_object()
            .unwrap()
            .clone(),
        timeout_seconds: None,
    }
}

/// A distinct suffix per run, so ids never collide with a previous run's job ids.
fn uuid_like(i: usize) -> String {
    format!("{:x}{i}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn live_output_is_seen_while_the_action_runs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (server, nats, registry, runner) = start(dir.path()).await;
    let client = Client::new(nats.clone(), Namespace::default());
    eventually(
        Duration::from_secs(30),
        "hist.slow to be routable",
        || async { client.route("hist.slow").await },
    )
    .await;

    // A secret the action prints is masked in the reply, not only in records and live lines.
    let mut echoed = request("s3cret", 30_000);
    echoed.id = None;
    let reply = eventually(Duration::from_secs(30), "hist.say to run", || async {
        client.invoke(&echoed).await.ok()
    })
    .await;
    assert_eq!(reply.stdout, "said ***\n", "{reply:?}");

    // `invoke --follow`: "first" arrives while the action still sleeps.
    let mut child = std::process::Command::new(attune_testkit::attune_bin())
        .args(["--server", &server.url(), "invoke", "hist.slow", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let first = lines.next().expect("a live line").unwrap();
    assert_eq!(first, "first");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line came before the action ended"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.contains(&"second".to_string()), "{rest:?}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond\n");

    // `execution tail` attaches to a running job, then prints a finished one's excerpt.
    let id = format!("tail-{}", std::process::id());
    let queued = attune(&server, &["invoke", "--async", "--id", &id, "hist.slow"]);
    assert!(queued.status.success());
    let js = async_nats::jetstream::new(nats.clone());
    let ns = Namespace::default();
    eventually(Duration::from_secs(20), "the job running", || async {
        attune_nats::executions::get_execution(&js, &ns, &id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.state == ExecutionState::Running)
    })
    .await;
    let tailed = attune(&server, &["execution", "tail", &id]);
    assert!(tailed.status.success());
    assert!(
        String::from_utf8_lossy(&tailed.stdout).contains("second"),
        "tail follows to the end: {}",
        String::from_utf8_lossy(&tailed.stdout)
    );
    // That tail ended on the live end message, which the runner sends before its queue
    // publishes the finished record: wait for the record, so this tail reads a finished one.
    eventually(
        Duration::from_secs(60),
        "the job's finished record",
        || async {
            attune_nats::executions::get_execution(&js, &ns, &id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.state == ExecutionState::Finished)
        },
    )
    .await;
    let again = attune(&server, &["execution", "tail", &id]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), "first\nsecond\n");

    runner.drain().await;
    registry.stop().await;
}

/// `GET /metrics` on `addr`, parsed by a Prometheus text-format parser.
fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("the metrics endpoint accepts");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the page parses")
}

/// The value of the sample of `metric` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_count_the_invocations_made() {
    let dir = tempfile::tempdir().unwrap();
    let runner_addr: std::net::SocketAddr = format!("127.0.0.1:{}", attune_testkit::free_port())
        .parse()
        .unwrap();
    let registry_addr: std::net::SocketAddr = format!("127.0.0.1:{}", attune_testkit::free_port())
        .parse()
        .unwrap();
    let (_server, nats, registry, runner) =
        start_with_metrics(dir.path(), Some(registry_addr), Some(runner_addr)).await;
    let client = Client::new(nats.clone(), Namespace::default());
    wait_ready(&client).await;
    let before = scrape(runner_addr);
    let count = |s: &prometheus_parse::Scrape, status: &str| {
        value(
            s,
            "attune_runner_invocations_total",
            &[
                ("action", "hist.say"),
                ("version", "default"),
                ("status", status),
            ],
        )
    };
    for i in 0..30 {
        let r = request(if i % 3 == 0 { "fail" } else { "ok" }, 10_000 + i);
        client.invoke(&r).await.expect("a reply");
    }
    let after = scrape(runner_addr);
    assert_eq!(
        count(&after, "succeeded") - count(&before, "succeeded"),
        20.0
    );
    assert_eq!(count(&after, "failed") - count(&before, "failed"), 10.0);
    let durations = value(
        &after,
        "attune_runner_invocation_duration_seconds",
        &[("action", "hist.say")],
    );
    assert!(
        durations >= 31.0,
        "every run is in the histogram: {durations}"
    );
    assert_eq!(value(&after, "attune_runner_slots", &[]), 8.0);
    assert_eq!(
        value(
            &after,
            "attune_runner_version_verified",
            &[("runtime", "shell")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "attune_runner_execution_records_dropped_total", &[]),
        0.0
    );
    let reg = scrape(registry_addr);
    assert_eq!(
        value(
            &reg,
            "attune_registry_version_available",
            &[("runtime", "shell"), ("version", "default")]
        ),
        1.0
    );
    assert!(value(&reg, "attune_registry_actions", &[]) >= 2.0);

    // Jobs: 4 that succeed and 2 that fail for good, counted by the runner; the registry's
    // sampled queue of the version is empty once they ran.
    for i in 0..6 {
        let r = request(if i < 2 { "fail" } else { "ok" }, 20_000 + i);
        let id = r.id.clone().unwrap();
        client.enqueue(&r).await.expect("queued");
        client
            .wait_result(&id, Duration::from_secs(30))
            .await
            .expect("a result");
    }
    let jobs = scrape(runner_addr);
    let outcome = |o: &str| value(&jobs, "attune_runner_jobs_total", &[("outcome", o)]);
    assert_eq!((outcome("succeeded"), outcome("dead_letter")), (4.0, 2.0));
    eventually(
        Duration::from_secs(20),
        "the registry's sample of the shell queue",
        || async {
            let reg = scrape(registry_addr);
            let labels = [("runtime", "shell"), ("version", "default")];
            let sampled = reg.samples.iter().any(|s| {
                s.metric == "attune_registry_jobs_pending"
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            });
            (sampled
                && value(&reg, "attune_registry_jobs_pending", &labels) == 0.0
                && value(&reg, "attune_registry_jobs_in_flight", &labels) == 0.0)
                .then_some(())
        },
    )
    .await;

    runner.drain().await;
    registry.stop().await;
}
