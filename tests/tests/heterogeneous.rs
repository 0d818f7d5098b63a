//! End to end, with the real binaries: one registry and two runners acting as two hosts.
//!
//! Host A can run python 3.12 only, host B python 3.13 only. Each host is a runner process with
//! its own PATH (a directory of stub interpreters that report the chosen version and run a real
//! python) and its own cache and environment directories, so nothing depends on which pythons
//! this machine has.
//!
//! The scenario runs as one test, in order, because each step builds on the state the previous
//! one left (which runners are up, what is disabled), exactly as an operator would see it.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::wire::RouteTarget;
use attune_nats::Namespace;
use attune_testkit::{
    attune, eventually, python_host, real_python, start_registry, start_runner, workspace_root,
    NatsServer, StubInterpreters,
};
use serde_json::Value;

/// A host with one python version.
fn host(python_version: &str) -> StubInterpreters {
    python_host(&[python_version])
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Invokes with `-o json` and returns the reply, asserting exit code 0.
fn invoke_ok(server: &NatsServer, action: &str, params: &[&str]) -> Value {
    let mut args = vec!["-o", "json", "invoke", action];
    args.extend_from_slice(params);
    let out = attune(server, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "invoke {action}: stdout {stdout} stderr {stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("reply of {action} is not JSON ({e}): {stdout}"))
}

/// Waits until `runtime` `version` is (or is not) available in the published runtimes.
async fn wait_available(client: &Client, runtime: &str, version: &str, want: bool) {
    eventually(
        Duration::from_secs(60),
        &format!("{runtime} {version} available={want}"),
        || async {
            let rt = client.runtime(runtime).await.ok().flatten()?;
            (rt.version(version)?.available == want).then_some(())
        },
    )
    .await
}

/// Waits until the route of `action` that `attune invoke` reads first (KV `attune-routes`) is a
/// refusal whose message contains `reason`. The registry's routes task writes it after the
/// change that decided it, apart from the runtimes bucket and the API's reply, and a stale
/// route naming a version sends the CLI straight to that version.
async fn wait_route_refused(client: &Client, action: &str, reason: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("the route of {action} to be a refusal saying {reason:?}"),
        || async {
            let route = client.route(action).await?;
            match route.sync {
                RouteTarget::Refused { message } if message.contains(reason) => Some(()),
                _ => None,
            }
        },
    )
    .await
}

/// Writes a small pack with one action pinned to 3.12 and one to 3.13.
fn write_new_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: latecomer\nversion: 1.0.0\n").unwrap();
    std::fs::write(
        dir.join("actions/where.py"),
        "import json, os\nprint(json.dumps({'ran_on': os.environ['ATTUNE_RUNTIME_VERSION']}))\n",
    )
    .unwrap();
    for (name, constraint) in [("on312", "~3.12"), ("on313", "~3.13")] {
        std::fs::write(
            dir.join(format!("actions/{name}.yaml")),
            format!("name: {name}\nrunner_type: python\nruntime_version: \"{constraint}\"\nentry_point: where.py\noutput_format: json\n"),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_serve_the_versions_they_really_have() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&server, &workspace_root().join("packs"), work.path());
    let host_a = host("3.12.4");
    let host_b = host("3.13.1");
    let _runner_a = start_runner(&server, "host-a", "python,shell", &host_a, work.path());
    let mut runner_b = start_runner(&server, "host-b", "python,shell", &host_b, work.path());

    let client = Client::new(server.connect().await, Namespace::default());
    wait_available(&client, "python", "3.12", true).await;
    wait_available(&client, "python", "3.13", true).await;
    // A runner serves a version before every pack's environment for it is built; until then it
    // rejects that pack's actions at once ("not available on runner … yet"). Wait for both hosts
    // to be ready for the examples pack.
    for (action, params) in [
        ("examples.modern_stats", "numbers=[1]"),
        ("examples.slugify", "title=x"),
    ] {
        eventually(
            Duration::from_secs(90),
            &format!("{action} ready"),
            || async {
                let out = attune(&server, &["-o", "json", "invoke", action, params]);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["status"] == "succeeded").then_some(())
            },
        )
        .await;
    }

    // Only what the hosts verified is available: nobody has 3.11.
    let python = client.runtime("python").await.unwrap().unwrap();
    assert!(
        !python.version("3.11").unwrap().available,
        "no host has python 3.11"
    );

    // >=3.13 runs on B.
    let reply = invoke_ok(&server, "examples.modern_stats", &["numbers=[1,2,3]"]);
    assert_eq!(reply["status"], "succeeded", "{reply}");
    assert_eq!(reply["version"], "3.13");
    assert_eq!(reply["runner"], "host-b");
    assert_eq!(reply["detected_version"], "3.13.1");
    assert_eq!(reply["result"]["median"], 2);

    // Called again, an action runs in a warm interpreter (its pack's zygote for that version,
    // with the vendored wheel's module preloaded), as a fresh process with the same result.
    let warm = eventually(Duration::from_secs(60), "a warm slugify", || async {
        let out = attune(
            &server,
            &[
                "-o",
                "json",
                "invoke",
                "examples.slugify",
                "title=Warm Start",
            ],
        );
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded" && v["warm"] == true).then_some(v)
    })
    .await;
    assert_eq!(warm["result"]["slug"], "warm-start", "{warm}");
    // The next heartbeat (every 2 s) lists the pool.
    eventually(
        Duration::from_secs(30),
        "runner list to show the warm pool",
        || async {
            let (stdout, _) = text(&attune(&server, &["runner", "list"]));
            (stdout.contains("warm pools:")
                && stdout.contains("python_fork")
                && stdout.contains("ready"))
            .then_some(())
        },
    )
    .await;

    // ~3.11 is registered but available nowhere: fails at once, exit 69.
    let out = attune(&server, &["invoke", "examples.legacy_report"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("no available python version satisfies \"~3.11\" (registered: 3.11, 3.12, 3.13; available: 3.12, 3.13)"),
        "{stderr}"
    );

    // No constraint: the default, 3.12, on A.
    let reply = invoke_ok(&server, "core.py_echo", &["message=hi"]);
    assert_eq!(
        (reply["version"].as_str(), reply["runner"].as_str()),
        (Some("3.12"), Some("host-a")),
        "{reply}"
    );
    assert_eq!(reply["result"]["message"], "hi");

    // `attune resolve` agrees and explains: >=3.12 picks the highest, 3.13.
    let out = attune(&server, &["-o", "json", "resolve", "core.py_info"]);
    let resolved: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resolved["version"], "3.13");
    assert_eq!(resolved["subject"], "attune.invoke.python.3.13");

    // A pack registered while the runners run is invocable on both hosts without a restart.
    let late = work.path().join("latecomer");
    write_new_pack(&late);
    let out = attune(&server, &["pack", "register", late.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let reply = eventually(Duration::from_secs(60), "latecomer.on312 runs", || async {
        let out = attune(&server, &["-o", "json", "invoke", "latecomer.on312"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(
        (reply["runner"].as_str(), reply["result"]["ran_on"].as_str()),
        (Some("host-a"), Some("3.12"))
    );
    let reply = eventually(Duration::from_secs(60), "latecomer.on313 runs", || async {
        let out = attune(&server, &["-o", "json", "invoke", "latecomer.on313"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(
        (reply["runner"].as_str(), reply["result"]["ran_on"].as_str()),
        (Some("host-b"), Some("3.13"))
    );

    // Disabling 3.13 makes >=3.13 fail at once, naming the disabled version.
    let out = attune(&server, &["runtime", "disable", "python", "3.13"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    wait_route_refused(&client, "examples.modern_stats", "disabled: 3.13").await;
    let out = attune(&server, &["invoke", "examples.modern_stats", "numbers=[1]"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("disabled: 3.13"), "{stderr}");
    let out = attune(&server, &["runtime", "enable", "python", "3.13"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    invoke_ok(&server, "examples.modern_stats", &["numbers=[1]"]);

    // Stopping host B makes >=3.13 fail at once with the no-match message of docs/versions.md.
    runner_b.terminate();
    wait_available(&client, "python", "3.13", false).await;
    wait_route_refused(&client, "examples.modern_stats", "available: 3.12)").await;
    let out = attune(&server, &["invoke", "examples.modern_stats", "numbers=[1]"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("no available python version satisfies \">=3.13\" (registered: 3.11, 3.12, 3.13; available: 3.12)"),
        "{stderr}"
    );
    // And the by-name route says the same thing at once, to any NATS client.
    let raw = server.connect().await;
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        raw.request(
            "attune.action.examples.modern_stats",
            r#"{"action":"examples.modern_stats","parameters":{"numbers":[1]}}"#.into(),
        ),
    )
    .await
    .expect("the router answers at once")
    .expect("a reply");
    let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(reply["status"], "rejected");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("available: 3.12)"),
        "{reply}"
    );
}

/// A client that knows nothing of Attune's code: plain NATS, the subject and JSON from the docs.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_nats_client_invokes_by_name() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&server, &workspace_root().join("packs/core"), work.path());
    let stubs = host("3.12.4");
    let _runner = start_runner(&server, "solo", "shell", &stubs, work.path());

    // Only async-nats from here on: the subject and body are spelled as a foreign client would.
    let nats = async_nats::connect(server.url()).await.unwrap();
    let reply: Value = eventually(Duration::from_secs(60), "core.echo answers", || async {
        let msg = nats
            .request(
                "attune.action.core.echo",
                r#"{"action":"core.echo","parameters":{"message":"hi"}}"#.into(),
            )
            .await
            .ok()?;
        let v: Value = serde_json::from_slice(&msg.payload).ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(reply["result"], serde_json::json!({"message": "hi"}));
    assert_eq!(reply["runner"], "solo");
    assert_eq!(reply["runtime"], "shell");
    assert_eq!(reply["version"], "default");
}

/// `--runtimes` (`ATTUNE_WORKER_RUNTIMES`) is an operator's hand-typed list: a name in another
/// letter case still selects its runtime, and a name that matches nothing registered is shown
/// in `attune runner list` instead of leaving a runner that silently serves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_runtimes_list_ignores_case_and_shows_unknown_names() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&server, &workspace_root().join("packs/core"), work.path());
    let stubs = host("3.12.4");
    let _runner = start_runner(&server, "typo", "SH,pyton", &stubs, work.path());
    let client = Client::new(server.connect().await, Namespace::default());
    // `SH` is an alias of shell in another case: served.
    wait_available(&client, "shell", "default", true).await;

    let listed = eventually(Duration::from_secs(30), "runner list", || async {
        let out = attune(&server, &["-o", "json", "runner", "list"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let runner = v["runners"].as_array()?.first()?.clone();
        (runner["unknown_runtimes"] == serde_json::json!(["pyton"])).then_some(runner)
    })
    .await;
    let served: Vec<&str> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["shell"], "{listed}");

    let (stdout, _) = text(&attune(&server, &["runner", "list"]));
    assert!(stdout.contains("unknown runtimes: pyton"), "{stdout}");
}

/// A pre-release interpreter (`Python 3.13.0rc1`) serves its registered minor, and `attune
/// runtime list` says it is a pre-release instead of cutting it to 3.13.0.
#[tokio::test(flavor = "multi_thread")]
async fn a_pre_release_interpreter_serves_its_minor_and_is_listed_as_one() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&server, &workspace_root().join("packs/core"), work.path());
    let stubs = host("3.13.0rc1");
    let _runner = start_runner(&server, "edge", "python", &stubs, work.path());
    let client = Client::new(server.connect().await, Namespace::default());
    wait_available(&client, "python", "3.13", true).await;
    let python = eventually(Duration::from_secs(30), "detected versions", || async {
        let rt = client.runtime("python").await.ok().flatten()?;
        (!rt.version("3.13")?.detected_versions.is_empty()).then_some(rt)
    })
    .await;
    assert_eq!(
        python.version("3.13").unwrap().detected_versions,
        ["3.13.0-rc1"]
    );
    let (stdout, stderr) = text(&attune(&server, &["runtime", "list"]));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("python") && l.contains(" 3.13 "))
        .unwrap_or_else(|| panic!("no python 3.13 row: {stdout} {stderr}"));
    assert!(row.contains("3.13.0-rc1 (pre-release)"), "{row}");
}

/// Installing an interpreter on a host needs no runner restart: `attune runtime verify` makes
/// the runners look again, each answers with what it found, and the version is served at once.
#[tokio::test(flavor = "multi_thread")]
async fn runtime_verify_picks_up_a_newly_installed_interpreter() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let packs = work.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    for pack in ["core", "latecomer"] {
        if pack == "core" {
            attune_testkit::copy_dir(&workspace_root().join("packs/core"), &packs.join("core"));
        } else {
            write_new_pack(&packs.join(pack));
        }
    }
    let _registry = start_registry(&server, &packs, work.path());
    let stubs = host("3.12.4");
    let _runner = start_runner(&server, "host", "python,shell", &stubs, work.path());
    let client = Client::new(server.connect().await, Namespace::default());
    wait_available(&client, "python", "3.12", true).await;
    let python = client.runtime("python").await.unwrap().unwrap();
    assert!(!python.version("3.13").unwrap().available);

    // "Install" python 3.13 on the host, then ask.
    stubs
        .add("python3.13", "Python 3.13.1", &real_python())
        .unwrap();
    let out = attune(
        &server,
        &["-o", "json", "runtime", "verify", "python", "3.13"],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout} {stderr}");
    let answers: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answers[0]["runner"], "host", "{answers}");
    assert_eq!(answers[0]["versions"][0]["verified"], true, "{answers}");
    assert_eq!(answers[0]["versions"][0]["detected_version"], "3.13.1");
    wait_available(&client, "python", "3.13", true).await;
    let reply = eventually(Duration::from_secs(60), "latecomer.on313 runs", || async {
        let out = attune(&server, &["-o", "json", "invoke", "latecomer.on313"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(reply["result"]["ran_on"], "3.13");

    // Asking a runner that is not there says so (exit 69), a version nobody registered is
    // refused (exit 2).
    let out = attune(&server, &["runtime", "verify", "--runner", "nobody"]);
    assert_eq!(out.status.code(), Some(69), "{:?}", text(&out));
    let out = attune(&server, &["runtime", "verify", "python", "3.99"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout} {stderr}");
    assert!(stderr.contains("no version \"3.99\""), "{stderr}");
}
