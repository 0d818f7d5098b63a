//! Containment, against a real runner: no process an action or a build starts outlives its
//! invocation, its build or its runner; a hung environment build fails that environment only and
//! never holds start-up's SIGTERM or a drain; the parameters directory is private and cleaned.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use attune_nats::Status;
use attune_testkit::eventually;
use common::*;
use serde_json::json;

/// Generous: these waits are for something to happen, never a measure of speed.
const WAIT: Duration = Duration::from_secs(20);

/// Whether `pid` is gone (or only a zombie waiting to be reaped: nothing left running).
fn ended(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.is_empty() || status.contains("State:\tZ")
}

async fn wait_ended(pid: u32, what: &str) {
    eventually(WAIT, what, || async move { ended(pid).then_some(()) }).await;
}

/// Waits for a pid written to `file`, and checks the process runs now.
async fn pid_in(file: &Path) -> u32 {
    let pid = eventually(WAIT, "a pid in the file", || async {
        std::fs::read_to_string(file)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    })
    .await;
    pid
}

async fn shell_fixture(files: &[(&str, &str)]) -> Fixture {
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack("demo", files).await;
    f
}

/// A script that starts a `setsid` child (its own session, out of the action's group), writes
/// the child's pid to `pidfile`, then either ends or sleeps (`then`).
fn setsid_script(pidfile: &Path, then: &str) -> String {
    format!(
        "setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 &\necho $! > '{}'\n{then}\n",
        pidfile.display()
    )
}

/// A classic daemon: fork, `setsid`, fork again, the middle one exits at once (so the daemon is
/// an orphan), the daemon writes its pid; `clear_env` also drops its environment.
fn daemon_script(pidfile: &Path, clear_env: bool, then: &str) -> String {
    let env = if clear_env { "env -i /bin/sh" } else { "sh" };
    format!(
        "sh -c 'setsid {env} -c \"echo \\$\\$ > {p}.tmp && mv {p}.tmp {p} && exec sleep 300\" </dev/null >/dev/null 2>&1 & exit 0'\n\
         while [ ! -s '{p}' ]; do sleep 0.05; done\n{then}\n",
        p = pidfile.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_child_is_gone_after_the_invocation_ends_and_after_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (done, late) = (dir.path().join("done.pid"), dir.path().join("late.pid"));
    let f = shell_fixture(&[
        ("actions/done.sh", &setsid_script(&done, "exit 0")),
        ("actions/late.sh", &setsid_script(&late, "sleep 300")),
    ])
    .await;
    f.put_action(json!({"ref": "demo.done", "runtime": "shell", "entry_point": "done.sh"}))
        .await;
    f.put_action(json!({"ref": "demo.late", "runtime": "shell", "entry_point": "late.sh", "timeout_seconds": 1}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke("shell", "default", json!({"action": "demo.done"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    let child = pid_in(&done).await;
    wait_ended(
        child,
        "the setsid child of a finished invocation to be gone",
    )
    .await;

    let (r, _) = f
        .invoke("shell", "default", json!({"action": "demo.late"}))
        .await;
    assert_eq!(r.status, Status::TimedOut, "{r:?}");
    let child = pid_in(&late).await;
    wait_ended(
        child,
        "the setsid child of a timed-out invocation to be gone",
    )
    .await;
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_daemon_is_gone_after_the_invocation_ends_and_after_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let f = shell_fixture(&[
        (
            "actions/done.sh",
            &daemon_script(&p("done.pid"), false, "exit 0"),
        ),
        (
            "actions/late.sh",
            &daemon_script(&p("late.pid"), false, "sleep 300"),
        ),
        // No tag in its environment: found because it was seen below the leader.
        (
            "actions/bare.sh",
            &daemon_script(&p("bare.pid"), true, "sleep 1"),
        ),
    ])
    .await;
    for (name, timeout) in [("done", 30), ("late", 1), ("bare", 30)] {
        f.put_action(json!({"ref": format!("demo.{name}"), "runtime": "shell",
            "entry_point": format!("{name}.sh"), "timeout_seconds": timeout}))
            .await;
    }
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    for (name, status) in [
        ("done", Status::Succeeded),
        ("late", Status::TimedOut),
        ("bare", Status::Succeeded),
    ] {
        let (r, _) = f
            .invoke(
                "shell",
                "default",
                json!({"action": format!("demo.{name}")}),
            )
            .await;
        assert_eq!(r.status, status, "{name}: {r:?}");
        let daemon = pid_in(&p(&format!("{name}.pid"))).await;
        wait_ended(daemon, &format!("the {name} daemon to be gone")).await;
    }
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_runner_takes_its_action_along_and_a_restarted_one_kills_the_rest_of_its_group()
{
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    let (leader_file, member_file) = (f.dir.path().join("leader"), f.dir.path().join("member"));
    let script = format!(
        "sh -c 'sleep 300' &\necho $! > '{}'\necho $$ > '{}'\nsleep 300\n",
        member_file.display(),
        leader_file.display()
    );
    f.put_pack("demo", &[("actions/hold.sh", &script)]).await;
    f.put_action(json!({"ref": "demo.hold", "runtime": "shell", "entry_point": "hold.sh", "timeout_seconds": 300}))
        .await;
    let cache = f.dir.path().join("cache-doomed");
    let start_runner = || {
        std::process::Command::new(attune_testkit::attune_bin())
            .args(["--server", &f.server.url(), "runner", "start"])
            .args([
                "--runtimes",
                "shell",
                "--concurrency",
                "1",
                "--name",
                "doomed",
            ])
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--envs-dir")
            .arg(f.dir.path().join("envs"))
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start attune runner")
    };
    /// Kills the runner process when the test ends, passed or not.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut doomed = KillOnDrop(start_runner());
    // Fire and forget: the reply never comes, the runner dies first.
    let inbox = f.client.new_inbox();
    let body = serde_json::to_vec(&json!({"action": "demo.hold"})).unwrap();
    eventually(WAIT, "the action to start", || async {
        if !leader_file.exists() {
            let _ = f
                .client
                .publish_with_reply(
                    f.ns.invoke("shell", "default"),
                    inbox.clone(),
                    body.clone().into(),
                )
                .await;
        }
        std::fs::read_to_string(&member_file)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .and(std::fs::read_to_string(&leader_file).ok())
            .filter(|s| !s.trim().is_empty())
            .map(|_| ())
    })
    .await;
    let leader = pid_in(&leader_file).await;
    let member = pid_in(&member_file).await;
    doomed.0.kill().unwrap(); // SIGKILL
    doomed.0.wait().unwrap();

    wait_ended(
        leader,
        "the action's leader to die with its runner (PDEATHSIG)",
    )
    .await;
    // The group member has no parent-death signal: it outlives a SIGKILLed runner...
    assert!(
        !ended(member),
        "the member is still running before the restart"
    );
    // ...until the runner restarts on the same cache dir and kills the group it recorded.
    let again = KillOnDrop(start_runner());
    wait_ended(
        member,
        "the recorded group to be killed by a restarted runner",
    )
    .await;
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_start_the_params_dir_is_0700_recorded_groups_are_killed_and_stale_files_removed() {
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    let config = f.config("r1");
    let params = config.cache_dir.join("params");
    std::fs::create_dir_all(&params).unwrap();
    std::fs::set_permissions(&params, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(params.join("left-by-a-crash.json"), "{\"secret\": 1}").unwrap();
    // A group a crashed runner recorded, still running.
    let mut left = std::process::Command::new("sh")
        .args(["-c", "sleep 300"])
        .process_group(0)
        .spawn()
        .unwrap();
    let leader = attune_runner::contain::stat(left.id() as i32).unwrap();
    std::mem::forget(attune_runner::contain::Record::create(&params, &leader).unwrap());
    // A recycled pid with another start time is left alone.
    let mut innocent = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let mut fake = attune_runner::contain::stat(innocent.id() as i32).unwrap();
    fake.start += 1;
    std::mem::forget(attune_runner::contain::Record::create(&params, &fake).unwrap());

    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();
    let mode = std::fs::metadata(&params).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        std::fs::read_dir(&params).unwrap().count(),
        0,
        "stale files and records removed"
    );
    let left_pid = left.id();
    eventually(WAIT, "the recorded group to be killed", || async move {
        ended(left_pid).then_some(())
    })
    .await;
    assert!(!left.wait().unwrap().success());
    assert!(
        innocent.try_wait().unwrap().is_none(),
        "a recycled pid is spared"
    );
    innocent.kill().unwrap();
    innocent.wait().unwrap();
    runner.drain().await;

    // A fresh cache dir gets a 0700 one too.
    let fresh = f.config("r2");
    let runner = attune_runner::start(fresh.clone(), f.client.clone())
        .await
        .unwrap();
    let mode = std::fs::metadata(fresh.cache_dir.join("params"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o700);
    runner.drain().await;
}

/// A runtime whose environment build hangs (and ignores SIGTERM), writing its pid to `pidfile`.
fn hanging_runtime(pidfile: &Path) -> serde_json::Value {
    let create = format!(
        "trap '' TERM; echo $$ > '{}'; sleep 1000; sleep 1000",
        pidfile.display()
    );
    json!({
        "ref": "core.hang", "name": "hang",
        "versions": [{"version": "1.0", "is_default": true,
            "distributions": {"verification": {"commands": [
                {"binary": "sh", "args": ["-c", "echo hang 1.0"], "pattern": "hang"}]}},
            "execution_config": {
                "interpreter": {"binary": "sh"},
                "environment": {"env_type": "virtualenv",
                                "create_command": ["/bin/sh", "-c", create]}}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_build_fails_that_environment_only_and_never_holds_a_drain() {
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack("demo", &[("actions/hi.sh", "echo hi\n")]).await;
    f.put_action(json!({"ref": "demo.hi", "runtime": "shell", "entry_point": "hi.sh"}))
        .await;
    f.put_action(json!({"ref": "demo.stuck", "runtime": "hang", "entry_point": "hi.sh", "timeout_seconds": 2}))
        .await;

    // At start-up, with a short build limit: start-up ends, the rest serves, the build is killed.
    let first = f.dir.path().join("first.pid");
    f.put_runtime(hanging_runtime(&first)).await;
    let mut config = f.config("r1");
    config.env_build_timeout = Duration::from_secs(2);
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();
    let (r, _) = f
        .invoke("shell", "default", json!({"action": "demo.hi"}))
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    let (r, _) = f
        .invoke("hang", "1.0", json!({"action": "demo.stuck"}))
        .await;
    assert_ne!(r.status, Status::Succeeded, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("not ready"),
        "{r:?}"
    );
    wait_ended(pid_in(&first).await, "the timed-out build to be killed").await;
    runner.drain().await;

    // While serving, with the default limit (600 s): the rest serves, drain does not wait.
    f.runtimes.delete("hang").await.unwrap();
    let runner = attune_runner::start(f.config("r2"), f.client.clone())
        .await
        .unwrap();
    let second = f.dir.path().join("second.pid");
    f.put_runtime(hanging_runtime(&second)).await;
    let builder = pid_in(&second).await;
    for _ in 0..3 {
        let (r, _) = f
            .invoke("shell", "default", json!({"action": "demo.hi"}))
            .await;
        assert_eq!(r.status, Status::Succeeded, "{r:?}");
    }
    tokio::time::timeout(WAIT, runner.drain())
        .await
        .expect("drain does not wait for a hung build");
    wait_ended(builder, "the cancelled build to be killed").await;
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path().join("envs").join("demo"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains(".tmp-")),
        "no half-built directory left: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_a_hung_start_up_build_stops_at_once() {
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack("demo", &[("actions/hi.sh", "echo hi\n")]).await;
    f.put_action(json!({"ref": "demo.stuck", "runtime": "hang", "entry_point": "hi.sh"}))
        .await;
    let pidfile = f.dir.path().join("start.pid");
    f.put_runtime(hanging_runtime(&pidfile)).await;
    let pidfile2 = pidfile.clone();
    let shutdown = async move {
        pid_in(&pidfile2).await;
    };
    tokio::time::timeout(
        WAIT * 2,
        attune_runner::run(f.config("r1"), f.client.clone(), shutdown),
    )
    .await
    .expect("run returns on shutdown during a hung build")
    .unwrap();
    let builder = pid_in(&pidfile).await;
    wait_ended(builder, "the build to be killed").await;
}
