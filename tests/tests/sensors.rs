//! Sensors end to end, with the real binaries: a registry and runner processes on "hosts" with
//! different stub interpreters on their PATH.
//!
//! - A sensor runs on the version its constraint resolves to, on the one runner serving it; its
//!   valid lines become events that fire a rule, whose action runs on the version *its*
//!   constraint resolves to (another host); its bad lines are refused and counted.
//! - A crashed sensor is restarted, a polling sensor runs once per interval.
//! - A counter sensor moves to the other runner when its runner is killed with SIGKILL: unique
//!   event ids, no gap in what the killed instance printed, nothing from it after the takeover.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use attune_nats::events::{read_events, Event, Window};
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::wire::SensorLease;
use attune_nats::Namespace;
use attune_testkit::{
    attune, copy_dir, eventually, python_host as host, start_registry, start_runner,
    workspace_root, NatsServer,
};
use futures::StreamExt;
use serde_json::Value;

fn write(dir: &Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// The packs directory: core, plus `extra` packs written by the caller.
fn packs_dir(work: &Path) -> std::path::PathBuf {
    let packs = work.join("packs");
    copy_dir(&workspace_root().join("packs/core"), &packs.join("core"));
    packs
}

/// JetStream on `server`, and the sensor leases bucket once the registry has created it.
async fn leases_bucket(
    server: &NatsServer,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::kv::Store,
) {
    let js = async_nats::jetstream::new(server.connect().await);
    let ns = Namespace::default();
    let kv = eventually(Duration::from_secs(60), "the sensors bucket", || async {
        open_kv(&js, &ns, Bucket::Sensors).await.ok()
    })
    .await;
    (js, kv)
}

/// The lease of `sensor`, if a runner holds it.
async fn lease(kv: &async_nats::jetstream::kv::Store, sensor: &str) -> Option<SensorLease> {
    let bytes = kv.get(sensor).await.ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every event of `trigger` kept in the stream, in stream order.
async fn events(js: &async_nats::jetstream::Context, trigger: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut stream = read_events(
        js,
        &Namespace::default(),
        Some(trigger),
        Window::Last(100_000),
    )
    .await
    .expect("events readable");
    while let Some(e) = stream.next().await {
        let (_seq, event) = e.expect("the stream reads");
        out.push(event.expect("a valid event"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sensor_events_fire_rules_on_the_resolved_versions_and_bad_lines_are_counted() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let packs = packs_dir(root);
    let recorded = root.join("recorded.jsonl");
    write(
        &packs.join("watch"),
        &[
            ("pack.yaml", "ref: watch\nversion: 1.0.0\n".into()),
            (
                "sensors/ticker.yaml",
                "name: ticker\nrunner_type: python\nruntime_version: \">=3.12\"\nentry_point: ticker.py\n\
                 trigger_types:\n  - name: tick\n    payload_schema:\n      type: object\n      required: [n]\n      \
                 properties:\n        n: {type: integer}\n"
                    .into(),
            ),
            (
                "sensors/ticker.py",
                "import json, sys, time\n\
                 for n in range(3):\n    print(json.dumps({'trigger': 'tick', 'payload': {'n': n}}), flush=True)\n\
                 print('not json', flush=True)\n\
                 print(json.dumps({'trigger': 'tick', 'payload': {'n': 'x'}}), flush=True)\n\
                 print(json.dumps({'trigger': 'other', 'payload': {}}), flush=True)\n\
                 print('x' * 300000, flush=True)\n\
                 print('a log line', file=sys.stderr, flush=True)\n\
                 time.sleep(3600)\n"
                    .into(),
            ),
            (
                "sensors/flaky.yaml",
                "name: flaky\nrunner_type: python\nruntime_version: \">=3.12\"\nentry_point: flaky.py\ntriggers: [blip]\n".into(),
            ),
            ("sensors/flaky.py", "print('{}', flush=True)\nraise SystemExit(3)\n".into()),
            (
                "sensors/poller.yaml",
                "name: poller\nrunner_type: python\nruntime_version: \">=3.12\"\nentry_point: poller.py\n\
                 triggers: [poll]\npoll_interval: 1\n"
                    .into(),
            ),
            ("sensors/poller.py", "print('{\"ok\": true}')\n".into()),
            (
                "actions/report.yaml",
                "name: report\nrunner_type: python\nruntime_version: \"<3.12\"\nentry_point: report.py\n\
                 parameters:\n  n: {type: integer}\n  file: {type: string}\n"
                    .into(),
            ),
            (
                "actions/report.py",
                "import json, os, sys\np = json.load(sys.stdin)\n\
                 open(p['file'], 'a').write(json.dumps({'n': p['n'], 'version': os.environ['ATTUNE_RUNTIME_VERSION']}) + '\\n')\n"
                    .into(),
            ),
            (
                "rules/on_tick.yaml",
                format!(
                    "name: on_tick\npack: watch\nenabled: true\ntrigger:\n  type: watch.tick\n\
                     criteria:\n  trigger.n:\n    type: greaterthan\n    pattern: 0\n\
                     action:\n  ref: watch.report\n  parameters:\n    n: \"{{{{ trigger.n }}}}\"\n    file: {}\n",
                    recorded.display()
                ),
            ),
        ],
    );
    let _registry = start_registry(&server, &packs, root);
    // Host A has 3.11 only (the action's), host B 3.12 only (the sensors').
    let (a, b) = (host(&["3.11.9"]), host(&["3.12.4"]));
    let mut runner_a = start_runner(&server, "host-a", "python", &a, root);
    let mut runner_b = start_runner(&server, "host-b", "python", &b, root);

    let (js, leases) = leases_bucket(&server).await;

    // The ticker runs on host B, on 3.12, and its three valid lines became events; the bad
    // lines (not JSON, against the schema, an undeclared trigger, too long) were counted.
    let ticker = eventually(Duration::from_secs(90), "the ticker's counts", || async {
        lease(&leases, "watch.ticker")
            .await
            .filter(|l| l.events == 3 && l.invalid == 4)
    })
    .await;
    assert_eq!(ticker.runner, "host-b", "{ticker:?}");
    assert_eq!(
        (ticker.runtime.as_str(), ticker.version.as_str()),
        ("python", "3.12")
    );
    assert!(ticker.pid.is_some(), "{ticker:?}");
    let problem = ticker.last_problem.clone().unwrap_or_default();
    assert!(problem.contains("bytes"), "{problem}");
    let ticks = events(&js, "watch.tick").await;
    assert_eq!(ticks.len(), 3, "{ticks:?}");
    for (n, e) in ticks.iter().enumerate() {
        assert_eq!(e.payload["n"], n);
        assert_eq!(e.sensor.as_deref(), Some("watch.ticker"));
    }

    // The rule matched n = 1 and 2; the action ran on host A's 3.11.
    let lines: Vec<Value> = eventually(Duration::from_secs(60), "two recorded runs", || async {
        let text = std::fs::read_to_string(&recorded).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    let mut ns_seen: Vec<i64> = lines.iter().map(|l| l["n"].as_i64().unwrap()).collect();
    ns_seen.sort();
    assert_eq!(ns_seen, [1, 2]);
    assert!(lines.iter().all(|l| l["version"] == "3.11"), "{lines:?}");

    // The flaky sensor exits after each line: restarted with backoff, still publishing.
    let flaky = eventually(
        Duration::from_secs(60),
        "the flaky sensor restarted twice",
        || async {
            lease(&leases, "watch.flaky")
                .await
                .filter(|l| l.restarts >= 2 && l.events >= 2)
        },
    )
    .await;
    assert!(
        flaky
            .last_problem
            .as_deref()
            .unwrap_or("")
            .contains("exit status: 3"),
        "{flaky:?}"
    );
    // The poller runs once a second and exits: no restart counted, events keep coming.
    let poller = eventually(Duration::from_secs(60), "three polls", || async {
        lease(&leases, "watch.poller")
            .await
            .filter(|l| l.events >= 3)
    })
    .await;
    assert_eq!(poller.restarts, 0, "{poller:?}");
    assert_eq!(poller.invalid, 0, "{poller:?}");

    // A pack update restarts its sensors with the new code.
    std::fs::write(
        packs.join("watch/sensors/poller.py"),
        "print('{\"ok\": true, \"v\": 2}')\n",
    )
    .unwrap();
    let out = attune(
        &server,
        &["pack", "register", packs.join("watch").to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let updated = eventually(Duration::from_secs(60), "the poller's new code", || async {
        let polls = events(&js, "watch.poll").await;
        polls.last().filter(|e| e.payload["v"] == 2).cloned()
    })
    .await;
    assert_eq!(updated.sensor.as_deref(), Some("watch.poller"));
    let moved = lease(&leases, "watch.poller").await.expect("still held");
    assert_ne!(moved.digest, poller.digest, "runs the new pack digest");

    // The CLI: where sensors run, trigger types and their schemas, and a hand-made event
    // checked against the schema before it is published.
    let text = |args: &[&str]| {
        let out = attune(&server, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // (The pack update restarted every sensor: wait for the ticker's renewed lease.)
    let list = eventually(
        Duration::from_secs(20),
        "the ticker listed with its pid",
        || async {
            let (code, list, _) = text(&["sensor", "list", "--pack", "watch"]);
            let ticker = list
                .lines()
                .find(|l| l.starts_with("watch.ticker"))?
                .to_string();
            (code == Some(0) && ticker.contains("host-b (python 3.12, pid")).then_some(list)
        },
    )
    .await;
    assert!(list.contains("watch.poller"), "{list}");
    // The update restarted the flaky sensor too, with fresh counters: wait for its next exit.
    eventually(
        Duration::from_secs(30),
        "the flaky sensor's exit shown as its last problem",
        || async {
            let (code, shown, _) = text(&["sensor", "show", "watch.flaky"]);
            (code == Some(0) && shown.contains("last problem:") && shown.contains("exit status: 3"))
                .then_some(())
        },
    )
    .await;
    let (code, triggers, _) = text(&["trigger", "list", "--pack", "watch"]);
    assert_eq!(code, Some(0));
    assert!(
        triggers.contains("watch.tick") && triggers.contains("watch.poll"),
        "{triggers}"
    );
    let (code, schema, _) = text(&["trigger", "show", "watch.tick"]);
    assert_eq!(code, Some(0));
    assert!(schema.contains("\"required\""), "{schema}");
    let (code, _, err) = text(&[
        "event",
        "publish",
        "watch.tick",
        "--payload",
        "{\"n\": \"x\"}",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not match its payload_schema"), "{err}");
    let (code, _, err) = text(&["event", "publish", "watch.nope", "n=1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no trigger type \"watch.nope\""), "{err}");
    let (code, _, err) = text(&["event", "publish", "watch.tick", "n=7"]);
    assert_eq!(code, Some(0), "{err}");
    eventually(
        Duration::from_secs(60),
        "the published event's run",
        || async {
            let text = std::fs::read_to_string(&recorded).unwrap_or_default();
            text.contains("\"n\": 7").then_some(())
        },
    )
    .await;

    // Disabled, the ticker stops and its lease goes; enabled, it runs again.
    let (code, _, err) = text(&["sensor", "disable", "watch.ticker"]);
    assert_eq!(code, Some(0), "{err}");
    eventually(
        Duration::from_secs(20),
        "the disabled ticker stopped",
        || async { lease(&leases, "watch.ticker").await.is_none().then_some(()) },
    )
    .await;
    let (code, _, err) = text(&["sensor", "enable", "watch.ticker"]);
    assert_eq!(code, Some(0), "{err}");
    let again = eventually(
        Duration::from_secs(20),
        "the ticker running again",
        || async {
            lease(&leases, "watch.ticker")
                .await
                .filter(|l| l.events == 3)
        },
    )
    .await;
    assert_ne!(again.pid, ticker.pid, "a new process");
    let ticker = again;

    // Stopping host B stops its sensors and releases the leases: nobody else serves 3.12.
    runner_b.terminate();
    eventually(
        Duration::from_secs(20),
        "the ticker's lease released",
        || async { lease(&leases, "watch.ticker").await.is_none().then_some(()) },
    )
    .await;
    let pid = ticker.pid.unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the sensor process {pid} outlived its runner's drain"
    );
    assert!(
        runner_b.stderr().contains("a log line"),
        "the sensor's stderr is logged"
    );
    runner_a.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_sensor_moves_to_another_runner_when_its_runner_is_killed() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let packs = packs_dir(root);
    write(
        &packs.join("count"),
        &[
            ("pack.yaml", "ref: count\nversion: 1.0.0\n".into()),
            (
                "sensors/counter.yaml",
                "name: counter\nrunner_type: python\nentry_point: counter.py\ntriggers: [count]\n".into(),
            ),
            (
                "sensors/counter.py",
                "import json, os, time\nn = 0\nwhile True:\n    n += 1\n    \
                 print(json.dumps({'n': n, 'pid': os.getpid()}), flush=True)\n    time.sleep(0.05)\n"
                    .into(),
            ),
        ],
    );
    let _registry = start_registry(&server, &packs, root);
    let (one, two) = (host(&["3.12.4"]), host(&["3.12.4"]));
    let mut runners = [
        start_runner(&server, "one", "python", &one, root),
        start_runner(&server, "two", "python", &two, root),
    ];
    let (js, leases) = leases_bucket(&server).await;

    let first = eventually(Duration::from_secs(90), "the counter running", || async {
        lease(&leases, "count.counter")
            .await
            .filter(|l| l.events >= 20)
    })
    .await;
    let (doomed, survivor) = if first.runner == "one" {
        (0, "two")
    } else {
        (1, "one")
    };
    runners[doomed].kill(); // SIGKILL: no drain, the lease stays until it expires
    let killed = std::time::Instant::now();
    let old_pid = first.pid.expect("running");
    let taken = eventually(
        Duration::from_secs(30),
        "another runner's lease",
        || async {
            lease(&leases, "count.counter")
                .await
                .filter(|l| l.runner == survivor)
        },
    )
    .await;
    // For the record, not a check: how long the sensor ran nowhere.
    eprintln!(
        "takeover: {survivor} holds count.counter {:.1} s after the SIGKILL (since {})",
        killed.elapsed().as_secs_f64(),
        taken.since
    );

    let second = eventually(
        Duration::from_secs(30),
        "the counter taken over",
        || async {
            lease(&leases, "count.counter")
                .await
                .filter(|l| l.runner == survivor && l.events >= 20)
        },
    )
    .await;
    let new_pid = second.pid.expect("running");
    assert_ne!(old_pid, new_pid);
    // The killed runner's sensor died with it.
    eventually(
        Duration::from_secs(10),
        "the old sensor process gone",
        || async {
            let stat = std::fs::read_to_string(format!("/proc/{old_pid}/stat")).ok();
            stat.is_none_or(|s| s.contains(") Z ")).then_some(())
        },
    )
    .await;

    let all = events(&js, "count.count").await;
    let ids: HashSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "event ids are unique");
    let pid_of = |e: &Event| e.payload["pid"].as_u64().unwrap() as u32;
    let old: Vec<u64> = all
        .iter()
        .filter(|e| pid_of(e) == old_pid)
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    let new: Vec<u64> = all
        .iter()
        .filter(|e| pid_of(e) == new_pid)
        .map(|e| e.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        old.len() + new.len(),
        all.len(),
        "only two instances ever ran"
    );
    // No gap: each instance's events are 1, 2, 3, … as it printed them.
    assert_eq!(old, (1..=old.len() as u64).collect::<Vec<_>>());
    assert_eq!(new, (1..=new.len() as u64).collect::<Vec<_>>());
    // Nothing from the old instance after the first event of the new one.
    let first_new = all.iter().position(|e| pid_of(e) == new_pid).unwrap();
    assert!(
        all[first_new..].iter().all(|e| pid_of(e) == new_pid),
        "an event of the killed instance came after the takeover"
    );
    for r in runners.iter_mut() {
        if r.is_running() {
            r.terminate();
        }
    }
}
