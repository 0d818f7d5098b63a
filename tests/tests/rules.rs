//! Rules end to end, against a real nats-server: events published on `attune.events.<pack>.<trigger>`
//! are evaluated by two registries sharing one consumer, and each match enqueues one durable job
//! that a runner runs, with the event and the rule in its result record.

use std::path::Path;
use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::events::Event;
use attune_nats::{Namespace, Status};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::RunnerConfig;
use attune_testkit::{eventually, workspace_root, NatsServer};
use serde_json::json;

/// The `alerts` pack: a sensor declaring trigger `alert`, an action that appends its
/// parameters to a file, and a rule from one to the other.
fn write_pack(dir: &Path, out: &Path) {
    for sub in ["actions", "sensors", "rules"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let files = [
        ("pack.yaml", "ref: alerts\nversion: 1.0.0\n".to_string()),
        (
            "actions/record.yaml",
            "name: record\nrunner_type: shell\nentry_point: record.sh\noutput_format: text\n\
             parameters:\n  file: {type: string}\n  n: {type: integer}\n  host: {type: string}\n  tags: {type: array}\n"
                .to_string(),
        ),
        (
            "actions/record.sh",
            "#!/bin/sh\nread -r p\nf=$(printf '%s' \"$p\" | sed 's/.*\"file\": *\"\\([^\"]*\\)\".*/\\1/')\nprintf '%s\\n' \"$p\" >> \"$f\"\necho recorded\n"
                .to_string(),
        ),
        ("sensors/watch.py", "print(1)\n".to_string()),
        (
            "sensors/watch.yaml",
            "name: watch\nrunner_type: python\nentry_point: watch.py\ntrigger_types:\n  - name: alert\n    \
             payload_schema:\n      type: object\n      required: [host, severity]\n      properties:\n        \
             host: {type: string}\n        severity: {type: integer}\n"
                .to_string(),
        ),
        (
            "rules/db_alerts.yaml",
            format!(
                "name: db_alerts\npack: alerts\nenabled: true\ntrigger:\n  type: alerts.alert\n\
                 criteria:\n  trigger.host:\n    type: startswith\n    pattern: db\n  trigger.severity:\n    type: gt\n    pattern: 2\n\
                 action:\n  ref: alerts.record\n  parameters:\n    file: {}\n    n: \"{{{{ trigger.n }}}}\"\n    host: \"{{{{ trigger.host | upper }}}}\"\n    tags: [\"{{{{ trigger.host }}}}\", fixed]\n",
                out.display()
            ),
        ),
    ];
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
}

/// Where the `record` action appends, under the test's directory.
const RECORDED: &str = "recorded.jsonl";

/// A temp dir with the `alerts` pack, and a nats-server with a connection to it.
async fn setup() -> (tempfile::TempDir, NatsServer, async_nats::Client) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_pack(&root.join("packs").join("alerts"), &root.join(RECORDED));
    let server = NatsServer::start();
    let nats = server.connect().await;
    (dir, server, nats)
}

async fn registry(nats: &async_nats::Client, root: &Path, name: &str) -> RunningRegistry {
    let packs = vec![
        workspace_root().join("packs").join("core"),
        root.join("packs").join("alerts"),
    ];
    attune_registry::start(
        ServeConfig::new(root.join(name), packs, Namespace::default()),
        nats.clone(),
    )
    .await
    .expect("registry starts")
}

#[tokio::test]
async fn matching_events_enqueue_exactly_one_job_each_across_two_registries() {
    let (dir, _server, nats) = setup().await;
    let root = dir.path();
    let out = root.join(RECORDED);
    let first = registry(&nats, root, "registry-1").await;
    let second = registry(&nats, root, "registry-2").await;
    let mut config = RunnerConfig::new(root.join("envs"), root.join("cache"));
    config.runtimes = vec!["shell".into()];
    config.path = "/usr/local/bin:/usr/bin:/bin".into();
    config.concurrency = 4;
    let runner = attune_runner::start(config, nats.clone())
        .await
        .expect("runner starts");
    let client = Client::new(nats.clone(), Namespace::default());

    // 20 events that match, and 10 that each fail one criterion or the trigger.
    let mut matching = Vec::new();
    for n in 0..20 {
        let e = Event::new(
            "alerts.alert",
            json!({"n": n, "host": format!("db{n}"), "severity": 3}),
            None,
        );
        client.publish_event(&e).await.expect("event stored");
        matching.push(e);
    }
    for n in 100..105 {
        let e = Event::new(
            "alerts.alert",
            json!({"n": n, "host": "web1", "severity": 5}),
            None,
        );
        client.publish_event(&e).await.unwrap();
        let e = Event::new(
            "alerts.alert",
            json!({"n": n, "host": "db1", "severity": 2}),
            None,
        );
        client.publish_event(&e).await.unwrap();
    }
    // An event whose body names another trigger than its subject: refused, never evaluated.
    let mut forged = Event::new(
        "alerts.other",
        json!({"n": 999, "host": "db9", "severity": 9}),
        None,
    );
    forged.trigger = "alerts.other".into();
    let js = async_nats::jetstream::new(nats.clone());
    js.publish(
        Namespace::default().events("alerts", "alert"),
        serde_json::to_vec(&forged).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // A payload against the trigger type's schema, and a trigger type nobody declares (on its
    // own subject): both refused before any rule sees them.
    client
        .publish_event(&Event::new(
            "alerts.alert",
            json!({"n": 998, "host": "db8", "severity": "high"}),
            None,
        ))
        .await
        .unwrap();
    client
        .publish_event(&Event::new(
            "alerts.other",
            json!({"n": 997, "host": "db7", "severity": 9}),
            None,
        ))
        .await
        .unwrap();

    // Every matching event's job ends, with the event and the rule in its record.
    for e in &matching {
        let id = attune_registry::fire::job_id(e, "alerts.db_alerts");
        let record = client
            .wait_result(&id, Duration::from_secs(60))
            .await
            .unwrap_or_else(|err| panic!("no result for the job of event {}: {err}", e.id));
        assert_eq!(record.reply.status, Status::Succeeded, "{record:?}");
        assert_eq!(record.event.as_deref(), Some(e.id.as_str()));
        assert_eq!(record.rule.as_deref(), Some("alerts.db_alerts"));
    }
    let invalid = eventually(
        Duration::from_secs(30),
        "the three bad events refused",
        || async {
            let n = first
                .fired()
                .invalid
                .load(std::sync::atomic::Ordering::Relaxed)
                + second
                    .fired()
                    .invalid
                    .load(std::sync::atomic::Ordering::Relaxed);
            (n >= 3).then_some(n)
        },
    )
    .await;
    assert_eq!(invalid, 3);
    // The two registries take events from the shared consumer concurrently: one may have
    // refused the last three while the other still evaluates the ten that match no rule.
    let evaluated = eventually(
        Duration::from_secs(60),
        "the thirty valid events evaluated",
        || async {
            let n = first
                .fired()
                .events
                .load(std::sync::atomic::Ordering::Relaxed)
                + second
                    .fired()
                    .events
                    .load(std::sync::atomic::Ordering::Relaxed);
            (n >= 30).then_some(n)
        },
    )
    .await;
    assert_eq!(
        evaluated, 30,
        "each event is evaluated once across both registries"
    );

    // Exactly 20 runs, one per matching event, parameters rendered from each payload.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen: Vec<i64> = Vec::new();
    for line in text.lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = p["n"].as_i64().expect("n keeps its type");
        assert_eq!(p["host"], format!("DB{n}"));
        assert_eq!(p["tags"], json!([format!("db{n}"), "fixed"]));
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());

    runner.drain().await;
    first.stop().await;
    second.stop().await;
}

/// Runs the `attune` CLI against `server`, returning stdout; panics with stderr on failure.
fn cli(server: &NatsServer, args: &[&str]) -> String {
    let out = std::process::Command::new(attune_testkit::attune_bin())
        .args(["--server", &server.url()])
        .args(args)
        .output()
        .expect("attune runs");
    assert!(
        out.status.success(),
        "attune {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// Multi-threaded: the CLI runs as a blocking child process while the registry answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_rule_fires_nothing_and_stays_disabled_across_a_restart() {
    let (dir, server, nats) = setup().await;
    let root = dir.path();
    let reg = registry(&nats, root, "registry").await;
    let client = Client::new(nats.clone(), Namespace::default());

    let listed = cli(&server, &["rule", "list", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["rules"][0]["ref"], "alerts.db_alerts");
    assert_eq!(listed["rules"][0]["enabled"], true);
    let shown = cli(&server, &["rule", "disable", "alerts.db_alerts"]);
    assert!(shown.contains("enabled:     no"), "{shown}");

    let hit = json!({"n": 1, "host": "db1", "severity": 3});
    client
        .publish_event(&Event::new("alerts.alert", hit.clone(), None))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the event is evaluated",
        || async {
            (reg.fired()
                .events
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        reg.fired().jobs.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // The registry re-reads its packs at start: the operator's choice still holds.
    reg.stop().await;
    let reg = registry(&nats, root, "registry").await;
    let shown = cli(&server, &["rule", "show", "alerts.db_alerts"]);
    assert!(shown.contains("enabled:     no"), "{shown}");
    assert!(
        shown.contains("trigger.severity  greaterthan  2"),
        "{shown}"
    );

    cli(&server, &["rule", "enable", "alerts.db_alerts"]);
    let e = Event::new("alerts.alert", hit, None);
    client.publish_event(&e).await.unwrap();
    eventually(Duration::from_secs(30), "the rule fires", || async {
        (reg.fired().jobs.load(std::sync::atomic::Ordering::Relaxed) == 1).then_some(())
    })
    .await;

    // Both events are kept, and readable by id.
    let listed = cli(
        &server,
        &["event", "list", "-o", "json", "--trigger", "alerts.alert"],
    );
    let ids: Vec<String> = listed
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    assert_eq!(ids[1], e.id);
    let last = cli(&server, &["event", "list", "--limit", "1"]);
    assert!(last.contains(&e.id) && !last.contains(&ids[0]), "{last}");
    let shown = cli(&server, &["event", "show", &e.id, "-o", "json"]);
    let shown: Event = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown, e);
    reg.stop().await;
}
