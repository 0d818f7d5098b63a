//! Per-pack environments: built at start-up (not on the first invocation), dependencies installed
//! only when the manifest changes, broken ones rebuilt, never built twice at once on one host.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attune_nats::model::ExecutionConfig;
use attune_nats::Status;
use attune_runner::env::{self, EnvRequest, READY_MARKER};
use attune_testkit::eventually;
use common::*;
use serde_json::json;

/// A "virtualenv" made with sh: creation logs to `<envs>/created.log`, install appends the
/// manifest to `<env>/installed.log`; the interpreter is a symlink to /bin/sh inside it.
fn fake_venv_runtime(log_dir: &Path) -> serde_json::Value {
    let created = log_dir.join("created.log").display().to_string();
    let create =
        format!("mkdir -p \"$0/bin\" && ln -s /bin/sh \"$0/bin/sh\" && echo \"$0\" >> '{created}'");
    json!({
        "ref": "core.fakevenv", "name": "fakevenv",
        "versions": [{"version": "1.0", "is_default": true,
            "distributions": {"verification": {"commands": [
                {"binary": "sh", "args": ["-c", "echo fake 1.0.3"], "pattern": "fake 1\\.0"}]}},
            "execution_config": {
                "interpreter": {"binary": "sh"},
                "environment": {"env_type": "virtualenv", "create_command": ["/bin/sh", "-c", create, "{env_dir}"],
                                "interpreter_path": "{env_dir}/bin/sh"},
                "dependencies": {"manifest_file": "requirements.txt",
                                 "install_command": ["/bin/sh", "-c", "cat \"$0\" >> \"$1/installed.log\"", "{manifest_path}", "{env_dir}"]},
                "env_vars": {"VENV_MARK": "{env_dir}"}}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_are_built_at_start_reinstalled_on_manifest_change_and_rebuilt_when_broken() {
    let f = Fixture::new().await;
    let logs = f.dir.path().to_path_buf();
    f.put_runtime(fake_venv_runtime(&logs)).await;
    f.put_pack(
        "demo",
        &[
            ("requirements.txt", "dep==1\n"),
            ("actions/where.sh", "echo \"$VENV_MARK\"; echo \"$0\" >&2\n"),
        ],
    )
    .await;
    f.put_action(json!({"ref": "demo.where", "runtime": "fakevenv", "entry_point": "where.sh"}))
        .await;
    let envs = f.dir.path().join("envs");
    let env_dir = envs.join("demo").join("fakevenv-1.0");

    // Built during start-up, before any invocation.
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    assert!(
        env_dir.join(READY_MARKER).is_file(),
        "ready marker written at start-up"
    );
    assert_eq!(
        std::fs::read_to_string(env_dir.join("installed.log")).unwrap(),
        "dep==1\n"
    );
    let (r, _) = f
        .invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(
        r.result,
        json!(env_dir.display().to_string()),
        "env_vars templates use the environment"
    );
    assert_eq!(r.detected_version.as_deref(), Some("1.0.3"));

    // Same manifest, new code: no reinstall. Changed manifest: one install.
    f.put_pack(
        "demo",
        &[
            ("requirements.txt", "dep==1\n"),
            ("actions/where.sh", "echo moved\n"),
        ],
    )
    .await;
    eventually(Duration::from_secs(20), "new code", || async {
        (f.invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
            .await
            .0
            .result
            == json!("moved"))
        .then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(env_dir.join("installed.log")).unwrap(),
        "dep==1\n"
    );
    f.put_pack(
        "demo",
        &[
            ("requirements.txt", "dep==2\n"),
            ("actions/where.sh", "echo v2\n"),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "new manifest installed",
        || async {
            let log = std::fs::read_to_string(env_dir.join("installed.log")).unwrap_or_default();
            (log == "dep==1\ndep==2\n").then_some(())
        },
    )
    .await;
    runner.drain().await;
    assert_eq!(
        std::fs::read_to_string(logs.join("created.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );

    // A restart with the environment intact builds nothing; a broken one is rebuilt.
    let runner = attune_runner::start(f.config("r2"), f.client.clone())
        .await
        .unwrap();
    runner.drain().await;
    assert_eq!(
        std::fs::read_to_string(logs.join("created.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    std::fs::remove_file(env_dir.join("bin/sh")).unwrap();
    let runner = attune_runner::start(f.config("r3"), f.client.clone())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(logs.join("created.log"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(env_dir.join("bin/sh").exists(), "rebuilt");
    let (r, _) = f
        .invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builders_on_one_host_never_build_the_same_environment_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt: attune_nats::Runtime = serde_json::from_value(fake_venv_runtime(dir.path())).unwrap();
    let mut config: ExecutionConfig = rt.versions[0].execution_config.clone().unwrap();
    // Creation takes a while, so without the lock both would run it.
    let env = config.environment.as_mut().unwrap();
    env.create_command[2] = format!("sleep 0.3; {}", env.create_command[2]);
    let config = Arc::new(config);
    let pack = dir.path().join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    let envs = dir.path().join("envs");
    let builds = (0..2).map(|_| {
        let (config, pack, envs) = (config.clone(), pack.clone(), envs.clone());
        tokio::spawn(async move {
            let key = attune_nats::VersionKey::new("fakevenv", "1.0");
            let req = EnvRequest {
                timeout: Duration::from_secs(60),
                envs_dir: &envs,
                pack: "demo",
                key: &key,
                config: &config,
                interpreter: Path::new("/bin/sh"),
                pack_dir: &pack,
                env: &[("PATH".into(), "/usr/bin:/bin".into())],
            };
            env::ensure(&req).await.unwrap()
        })
    });
    let results = futures::future::join_all(builds).await;
    let expected = envs.join("demo/fakevenv-1.0/bin/sh");
    for r in results {
        assert_eq!(r.unwrap(), Some(expected.clone()));
    }
    let created = std::fs::read_to_string(dir.path().join("created.log")).unwrap();
    assert_eq!(created.lines().count(), 1, "built once: {created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_python_virtualenv_is_created_without_network() {
    let python = Path::new("/usr/bin/python3");
    if !python.is_file() {
        eprintln!("skipped: /usr/bin/python3 is not installed");
        return;
    }
    let f = Fixture::new().await;
    f.stubs.add("python3.11", "Python 3.11.2", python).unwrap();
    f.put_runtime(json!({"ref": "core.python", "name": "python", "versions": [{
        "version": "3.11", "is_default": true,
        "execution_config": {
            "interpreter": {"binary": "python3.11", "args": ["-u"]},
            "environment": {"env_type": "virtualenv", "create_command": [python.display().to_string(), "-m", "venv", "--without-pip", "{env_dir}"],
                            "interpreter_path": "{env_dir}/bin/python3"}}}]}))
        .await;
    f.put_pack(
        "demo",
        &[("actions/prefix.py", "import sys; print(sys.prefix)\n")],
    )
    .await;
    f.put_action(json!({"ref": "demo.prefix", "runtime": "python", "entry_point": "prefix.py"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let (r, _) = f
        .invoke("python", "3.11", json!({"action": "demo.prefix"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    let env_dir = f.dir.path().join("envs/demo/python-3.11");
    assert_eq!(
        r.result,
        json!(env_dir.display().to_string()),
        "runs inside the virtualenv"
    );
    runner.drain().await;
}

/// A broken environment (its interpreter deleted while the runner serves) is refused at once
/// with 503, never run into a "failed" that is not the action's fault, and rebuilt in the
/// background: calls succeed again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_environment_is_refused_with_503_and_rebuilt_in_the_background() {
    let f = Fixture::new().await;
    f.put_runtime(fake_venv_runtime(f.dir.path())).await;
    f.put_pack("demo", &[("actions/where.sh", "echo here\n")])
        .await;
    f.put_action(json!({"ref": "demo.where", "runtime": "fakevenv", "entry_point": "where.sh"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let env_dir = f.dir.path().join("envs/demo/fakevenv-1.0");
    std::fs::remove_file(env_dir.join("bin/sh")).unwrap();
    let (r, headers) = f
        .invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
        .await;
    assert_eq!(r.status, Status::Rejected, "{r:?}");
    assert!(r.error.as_deref().unwrap_or("").contains("broken"), "{r:?}");
    assert_eq!(
        header(&headers, attune_nats::subject::HEADER_SERVICE_ERROR_CODE).as_deref(),
        Some("503")
    );
    eventually(Duration::from_secs(30), "rebuilt and served", || async {
        let (r, _) = f
            .invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
            .await;
        (r.status == Status::Succeeded).then_some(())
    })
    .await;
    assert!(env_dir.join("bin/sh").exists());
    runner.drain().await;
}

/// Environments follow their definition: a changed install command reinstalls the
/// dependencies (without building the environment again), a changed create command rebuilds it,
/// and neither needs a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_create_or_install_commands_rebuild_or_reinstall_the_environment() {
    let f = Fixture::new().await;
    let logs = f.dir.path().to_path_buf();
    let mut runtime = fake_venv_runtime(&logs);
    f.put_runtime(runtime.clone()).await;
    f.put_pack(
        "demo",
        &[
            ("requirements.txt", "dep==1\n"),
            ("actions/where.sh", "echo here\n"),
        ],
    )
    .await;
    f.put_action(json!({"ref": "demo.where", "runtime": "fakevenv", "entry_point": "where.sh"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let env_dir = f.dir.path().join("envs/demo/fakevenv-1.0");
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(lines(&logs.join("created.log")), 1);
    assert_eq!(lines(&env_dir.join("installed.log")), 1);

    // Another install command: installed again, not created again.
    let config = &mut runtime["versions"][0]["execution_config"];
    config["dependencies"]["install_command"][2] =
        json!("cat \"$0\" >> \"$1/installed.log\"; echo again >> \"$1/installed.log\"");
    f.put_runtime(runtime.clone()).await;
    eventually(Duration::from_secs(30), "reinstalled", || async {
        (lines(&env_dir.join("installed.log")) == 3).then_some(())
    })
    .await;
    assert_eq!(lines(&logs.join("created.log")), 1);

    // Another create command: built again from scratch.
    let config = &mut runtime["versions"][0]["execution_config"];
    let create = config["environment"]["create_command"][2]
        .as_str()
        .unwrap()
        .to_string();
    config["environment"]["create_command"][2] = json!(format!("{create}; true"));
    f.put_runtime(runtime).await;
    eventually(Duration::from_secs(30), "rebuilt", || async {
        (lines(&logs.join("created.log")) == 2).then_some(())
    })
    .await;
    let (r, _) = f
        .invoke("fakevenv", "1.0", json!({"action": "demo.where"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    runner.drain().await;
}

/// A virtualenv is built where it lives: the path it writes into `bin/pip` (and every console
/// script) is its final one, so pip runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtualenv_is_built_in_place_so_its_scripts_run() {
    let f = Fixture::new().await;
    let python = attune_testkit::real_python();
    f.stubs.add("python3.11", "Python 3.11.7", &python).unwrap();
    f.put_runtime(json!({"ref": "core.python", "name": "python", "versions": [{
        "version": "3.11", "is_default": true,
        "execution_config": {
            "interpreter": {"binary": "python3.11", "args": ["-u"]},
            "environment": {"env_type": "virtualenv",
                            "create_command": [python.display().to_string(), "-m", "venv", "{env_dir}"],
                            "interpreter_path": "{env_dir}/bin/python3"}}}]}))
    .await;
    f.put_pack("demo", &[("actions/noop.py", "pass\n")]).await;
    f.put_action(json!({"ref": "demo.noop", "runtime": "python", "entry_point": "noop.py"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let env_dir = f.dir.path().join("envs/demo/python-3.11");
    let pip = std::fs::read_to_string(env_dir.join("bin/pip")).unwrap();
    let shebang = pip.lines().next().unwrap();
    assert_eq!(
        shebang,
        format!("#!{}", env_dir.join("bin/python3").display()),
        "the shebang names the final directory"
    );
    let out = std::process::Command::new(env_dir.join("bin/pip"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A versioned runtime gets per-version environments only, no base `<pack>/<runtime>` one
    // (docs/runner.md: nothing would ever run in it).
    let in_pack: Vec<String> = std::fs::read_dir(f.dir.path().join("envs/demo"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(in_pack, ["python-3.11"]);
    runner.drain().await;
}
