//! Warm interpreters against a real nats-server and real python and node: a warm child is
//! indistinguishable from a cold start, is contained like one, and its pool follows the pack,
//! survives a crash by falling back to cold, and reports itself in the heartbeat.

mod common;

use std::time::Duration;

use attune_nats::{InvocationReply, RunnerHeartbeat, Status};
use attune_testkit::{eventually, real_python};
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Prints everything of its start that an action could depend on, then exits 3.
const PY_PROBE: &str = r#"import json, os, signal, sys
data = sys.stdin.read()
main = sys.modules["__main__"]
def handler(sig):
    h = signal.getsignal(sig)
    return h if isinstance(h, int) else getattr(h, "__name__", repr(h))
skip = ("ATTUNE_EXEC_ID", "ATTUNE_ACTION", "ATTUNE_PROCESS_TAG", "ATTUNE_PARAMETERS_FILE")
params = os.environ.get("ATTUNE_PARAMETERS_FILE")
out = {
    "argv": sys.argv, "orig_argv": getattr(sys, "orig_argv", None), "executable": sys.executable,
    "env": {k: v for k, v in os.environ.items() if k not in skip},
    "params_file": open(params).read() if params else None,
    "cwd": os.getcwd(), "path": sys.path, "flags": list(sys.flags), "stdin": data,
    "name": __name__, "file": __file__, "main_is_globals": main.__dict__ is globals(),
    "dunders": sorted(k for k in globals() if k.startswith("__")),
    "loader": type(__loader__).__name__, "spec": repr(__spec__), "builtins": type(__builtins__).__name__,
    "stdout": [sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering, sys.stdout.isatty()],
    "stdin_enc": [sys.stdin.encoding, sys.stdin.errors],
    "stderr": [sys.stderr.encoding, sys.stderr.errors, sys.stderr.line_buffering],
    "own_group": os.getpgid(0) == os.getpid(),
    "signals": {s: handler(getattr(signal, s)) for s in ("SIGINT", "SIGPIPE", "SIGCHLD", "SIGTERM", "SIGHUP", "SIGXFSZ")},
    "umask": os.umask(0o22), "warnoptions": sys.warnoptions, "xoptions": sys._xoptions,
    "fds": sorted([int(x), os.readlink("/proc/self/fd/" + x).split(":")[0]] for x in os.listdir("/proc/self/fd") if os.path.exists("/proc/self/fd/" + x)),
}
print(json.dumps(out, sort_keys=True))
print("to stderr", file=sys.stderr)
import atexit
atexit.register(lambda: print("atexit ran"))
sys.exit(3)
"#;

/// The same for node.
const JS_PROBE: &str = r#"let data = '';
process.stdin.on('data', d => data += d).on('end', () => {
  const skip = ['ATTUNE_EXEC_ID', 'ATTUNE_ACTION', 'ATTUNE_PROCESS_TAG', 'ATTUNE_PARAMETERS_FILE'];
  const env = {};
  for (const k of Object.keys(process.env).sort()) if (!skip.includes(k)) env[k] = process.env[k];
  console.log(JSON.stringify({
    argv: process.argv, execArgv: process.execArgv, execPath: process.execPath, env,
    cwd: process.cwd(), stdin: data, main: require.main === module, filename: __filename,
    paths: module.paths, ownGroup: true,
  }));
  console.error('to stderr');
  process.exitCode = 3;
});
"#;

fn python_warm_runtime() -> Value {
    let mut v = python_version("3.12", true);
    v["execution_config"]["env_vars"] = json!({
        "PYTHONPATH": {"operation": "prepend", "value": "{pack_dir}/lib", "separator": ":"},
        "PYTHONDONTWRITEBYTECODE": "1"
    });
    v["execution_config"]["warm"] = json!({"launcher": "python_fork"});
    json!({"ref": "core.python", "name": "python", "versions": [v]})
}

fn node_warm_runtime() -> Value {
    json!({"ref": "core.nodejs", "name": "node", "versions": [{
        "version": "20", "is_default": true,
        "distributions": {"verification": {"commands": [{"binary": "node", "args": ["--version"], "pattern": "^v20\\."}]}},
        "execution_config": {"interpreter": {"binary": "node"},
            "env_vars": {"NODE_PATH": {"operation": "prepend", "value": "{pack_dir}/lib", "separator": ":"}},
            "warm": {"launcher": "node_spawn"}}}]})
}

async fn python_fixture() -> Fixture {
    let f = Fixture::new().await;
    f.stubs
        .add("python3.12", "Python 3.12.4", &real_python())
        .unwrap();
    f.put_runtime(python_warm_runtime()).await;
    f
}

/// Invokes until a warm interpreter answers (the first calls run cold while the pool starts).
async fn until_warm(f: &Fixture, runtime: &str, version: &str, body: Value) -> InvocationReply {
    let mut last = None;
    for _ in 0..100 {
        let (r, _) = f.invoke(runtime, version, body.clone()).await;
        if r.warm {
            return r;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no warm interpreter answered: last reply {last:?}");
}

/// The probe's JSON line, and the rest of stdout.
fn probe(r: &InvocationReply) -> (Value, String) {
    let (first, rest) = r.stdout.split_once('\n').unwrap_or((&r.stdout, ""));
    (
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {r:?}")),
        rest.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_python_child_is_indistinguishable_from_a_cold_start() {
    let f = python_fixture().await;
    f.put_pack("demo", &[("actions/probe.py", PY_PROBE), ("lib/.keep", "")])
        .await;
    for (name, warm, delivery) in [
        ("warm", true, "stdin"),
        ("cold", false, "stdin"),
        ("warmfile", true, "file"),
        ("coldfile", false, "file"),
    ] {
        f.put_action(
            json!({"ref": format!("demo.{name}"), "runtime": "python", "entry_point": "probe.py",
            "warm": warm, "parameter_delivery": delivery, "output_format": "text"}),
        )
        .await;
    }
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let body = |a: &str| json!({"action": a, "parameters": {"message": "hi"}});
    for (warm, cold) in [
        ("demo.warm", "demo.cold"),
        ("demo.warmfile", "demo.coldfile"),
    ] {
        let w = until_warm(&f, "python", "3.12", body(warm)).await;
        let (c, _) = f.invoke("python", "3.12", body(cold)).await;
        assert!(
            !c.warm,
            "warm: false always starts a fresh interpreter: {c:?}"
        );
        assert_eq!(
            (w.exit_code, c.exit_code),
            (Some(3), Some(3)),
            "{w:?}\n{c:?}"
        );
        assert_eq!(w.stderr, c.stderr);
        let ((wp, wrest), (cp, crest)) = (probe(&w), probe(&c));
        assert_eq!(wrest, crest, "atexit handlers run warm as cold");
        assert_eq!(wrest.trim(), "atexit ran");
        for key in cp.as_object().unwrap().keys().filter(|k| *k != "fds") {
            assert_eq!(wp[key], cp[key], "{key} differs warm / cold");
        }
        // One documented difference: the warm child holds its close-on-exec report socket.
        let mut warm_fds = wp["fds"].as_array().unwrap().clone();
        let cold_fds = cp["fds"].as_array().unwrap();
        let extra = warm_fds
            .iter()
            .position(|fd| fd[1] == "socket" && !cold_fds.contains(fd))
            .expect("the report socket");
        warm_fds.remove(extra);
        assert_eq!(&warm_fds, cold_fds, "open descriptors warm / cold");
        assert!(wp["env"]["PYTHONPATH"].as_str().unwrap().ends_with("/lib"));
        assert_eq!(wp["own_group"], true);
    }
    // The ways out are cold's too: an uncaught exception's traceback starts in the script, a
    // syntax error has none, SystemExit with a message prints it.
    for (name, code) in [
        ("boom", "def f():\n    raise ValueError('boom')\nf()\n"),
        ("syntax", "def (\n"),
        ("message", "import sys\nsys.exit('bye')\n"),
        ("thread", "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()\n"),
    ] {
        f.put_pack("demo", &[(&format!("actions/{name}.py"), code)]).await;
        for warm in [true, false] {
            f.put_action(json!({"ref": format!("demo.{name}{warm}"), "runtime": "python",
                "entry_point": format!("{name}.py"), "warm": warm}))
                .await;
        }
        let w = until_warm(&f, "python", "3.12", json!({"action": format!("demo.{name}true")})).await;
        let (c, _) = f.invoke("python", "3.12", json!({"action": format!("demo.{name}false")})).await;
        assert_eq!(
            (w.exit_code, &w.stdout, &w.stderr),
            (c.exit_code, &c.stdout, &c.stderr),
            "{name} warm / cold"
        );
    }

    // Every warm call is a fresh process: nothing one leaves behind is seen by the next.
    f.put_pack(
        "demo",
        &[(
            "actions/state.py",
            "import os, sys\nprint(os.getpid(), getattr(sys, 'attune_was_here', False))\nsys.attune_was_here = True\n",
        )],
    )
    .await;
    f.put_action(json!({"ref": "demo.state", "runtime": "python", "entry_point": "state.py"}))
        .await;
    let a = until_warm(&f, "python", "3.12", json!({"action": "demo.state"})).await;
    let b = until_warm(&f, "python", "3.12", json!({"action": "demo.state"})).await;
    assert!(
        a.stdout.ends_with("False\n") && b.stdout.ends_with("False\n"),
        "{a:?} {b:?}"
    );
    assert_ne!(a.stdout, b.stdout, "two invocations, two processes");
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_node_process_is_indistinguishable_from_a_cold_start() {
    let f = Fixture::new().await;
    f.stubs
        .add("node", "v20.11.1", &which_real("node"))
        .unwrap();
    f.put_runtime(node_warm_runtime()).await;
    f.put_pack("demo", &[("actions/probe.js", JS_PROBE)]).await;
    for (name, warm) in [("warm", true), ("cold", false)] {
        f.put_action(
            json!({"ref": format!("demo.{name}"), "runtime": "node", "entry_point": "probe.js",
            "warm": warm, "output_format": "text"}),
        )
        .await;
    }
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let w = until_warm(
        &f,
        "node",
        "20",
        json!({"action": "demo.warm", "parameters": {"a": 1}}),
    )
    .await;
    let (c, _) = f
        .invoke(
            "node",
            "20",
            json!({"action": "demo.cold", "parameters": {"a": 1}}),
        )
        .await;
    assert!(!c.warm);
    assert_eq!(
        (w.exit_code, c.exit_code),
        (Some(3), Some(3)),
        "{w:?}\n{c:?}"
    );
    assert_eq!(w.stderr, c.stderr);
    assert_eq!(probe(&w).0, probe(&c).0);
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_a_warm_child_and_everything_it_started() {
    let f = python_fixture().await;
    f.put_pack(
        "demo",
        &[(
            "actions/fork.py",
            "import subprocess, sys, time\np = subprocess.Popen(['sh', '-c', 'sleep 300'], start_new_session=True)\nprint(p.pid, flush=True)\ntime.sleep(300)\n",
        )],
    )
    .await;
    f.put_action(json!({"ref": "demo.fork", "runtime": "python", "entry_point": "fork.py", "timeout_seconds": 2}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let r = until_warm(&f, "python", "3.12", json!({"action": "demo.fork"})).await;
    assert_eq!(r.status, Status::TimedOut, "{r:?}");
    let grandchild: u32 = r
        .stdout
        .trim()
        .parse()
        .expect("the action printed its child's pid");
    eventually(
        WAIT,
        "the warm child's own child to be gone",
        || async move {
            let status =
                std::fs::read_to_string(format!("/proc/{grandchild}/status")).unwrap_or_default();
            (status.is_empty() || status.contains("State:\tZ")).then_some(())
        },
    )
    .await;
    runner.drain().await;
}

/// The zygotes of the fixture's runners (children of this process, started from a launcher in
/// the fixture's directory).
fn zygotes(f: &Fixture) -> Vec<i32> {
    let me = std::process::id() as i32;
    let dir = f.dir.path().display().to_string();
    attune_runner::contain::all_processes()
        .into_iter()
        .filter(|p| p.ppid == me && !p.is_dead())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&dir) && c.contains("zygote.py")
            })
        })
        .map(|p| p.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_zygote_means_cold_calls_until_it_is_restarted() {
    let f = python_fixture().await;
    f.put_pack("demo", &[("actions/hi.py", "print('hi')\n")])
        .await;
    f.put_action(json!({"ref": "demo.hi", "runtime": "python", "entry_point": "hi.py"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    until_warm(&f, "python", "3.12", json!({"action": "demo.hi"})).await;
    let before = zygotes(&f);
    assert_eq!(before.len(), 1, "one zygote for one pack and version");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Its children die with it (an invocation running in one then reports SIGKILL); once the
    // runner has noticed, every call succeeds: cold while it is down, warm once restarted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut cold = 0;
    let started = std::time::Instant::now();
    loop {
        let (r, _) = f
            .invoke("python", "3.12", json!({"action": "demo.hi"}))
            .await;
        assert_eq!(
            (r.status, r.stdout.as_str()),
            (Status::Succeeded, "hi\n"),
            "{r:?}"
        );
        if r.warm && cold > 0 {
            break;
        }
        cold += usize::from(!r.warm);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the zygote was never restarted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = zygotes(&f);
    assert_eq!(now.len(), 1);
    assert_ne!(now, before, "a new zygote");
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_update_replaces_its_zygote_and_preload_is_imported_once_per_zygote() {
    let f = python_fixture().await;
    let marks = f.dir.path().join("imports.txt");
    let heavy = format!(
        "with open({:?}, 'a') as f:\n    f.write('imported\\n')\nVALUE = 42\n",
        marks.display().to_string()
    );
    let preload = |m: &mut attune_nats::PackMeta| {
        m.preload.insert("python".into(), vec!["heavy".into()]);
    };
    f.put_pack_with(
        "demo",
        &[
            ("actions/v.py", "import heavy\nprint('v1', heavy.VALUE)\n"),
            ("lib/heavy.py", &heavy),
        ],
        preload,
    )
    .await;
    f.put_action(json!({"ref": "demo.v", "runtime": "python", "entry_point": "v.py"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let mut cold = 0;
    for _ in 0..100 {
        let (r, _) = f
            .invoke("python", "3.12", json!({"action": "demo.v"}))
            .await;
        assert_eq!(r.stdout, "v1 42\n", "{r:?}");
        if r.warm {
            break;
        }
        cold += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let r = until_warm(&f, "python", "3.12", json!({"action": "demo.v"})).await;
        assert_eq!(r.stdout, "v1 42\n");
    }
    let imports = std::fs::read_to_string(&marks).unwrap().lines().count();
    assert_eq!(
        imports,
        cold + 1,
        "once per cold call, once for the zygote, never per warm call"
    );

    let first = zygotes(&f);
    f.put_pack_with(
        "demo",
        &[
            ("actions/v.py", "import heavy\nprint('v2', heavy.VALUE)\n"),
            ("lib/heavy.py", &heavy),
        ],
        preload,
    )
    .await;
    eventually(WAIT, "the new pack to run warm", || async {
        let (r, _) = f
            .invoke("python", "3.12", json!({"action": "demo.v"}))
            .await;
        (r.warm && r.stdout == "v2 42\n").then_some(())
    })
    .await;
    eventually(WAIT, "the old zygote to be gone", || async {
        let now = zygotes(&f);
        (now.len() == 1 && now != first).then_some(())
    })
    .await;

    // The heartbeat shows the pool, its state and memory.
    let entry = f.runners.get("r1").await.unwrap().expect("a heartbeat");
    let beat: RunnerHeartbeat = serde_json::from_slice(&entry).unwrap();
    eventually(WAIT, "the heartbeat to list the pool", || async {
        let entry = f.runners.get("r1").await.ok()??;
        let beat: RunnerHeartbeat = serde_json::from_slice(&entry).ok()?;
        beat.warm_pools
            .iter()
            .find(|p| p.pack == "demo" && p.state == "ready" && p.memory_bytes > 0 && p.served > 0)
            .map(|_| ())
    })
    .await;
    drop(beat);
    runner.drain().await;
    eventually(WAIT, "drain to stop the zygotes", || async {
        zygotes(&f).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_warm_job_running_when_its_zygote_quits_still_finishes() {
    let f = python_fixture().await;
    let files = |v: &'static str| {
        [
            ("actions/v.py", v),
            (
                "actions/slow.py",
                "import time\nprint('start', flush=True)\ntime.sleep(5)\nprint('done')\n",
            ),
        ]
    };
    f.put_pack_with("demo", &files("print('v1')\n"), |_| {})
        .await;
    f.put_action(json!({"ref": "demo.v", "runtime": "python", "entry_point": "v.py"}))
        .await;
    f.put_action(json!({"ref": "demo.slow", "runtime": "python", "entry_point": "slow.py"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    until_warm(&f, "python", "3.12", json!({"action": "demo.v"})).await;
    let first = zygotes(&f);

    // A warm job is running when a pack update makes its zygote quit.
    let slow = f.invoke("python", "3.12", json!({"action": "demo.slow"}));
    let update = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        f.put_pack_with("demo", &files("print('v2')\n"), |_| {})
            .await;
        // The first call on the new files starts the new pool, which retires the old one.
        eventually(WAIT, "the new pack to run warm", || async {
            let (r, _) = f
                .invoke("python", "3.12", json!({"action": "demo.v"}))
                .await;
            (r.warm && r.stdout == "v2\n").then_some(())
        })
        .await;
        eventually(WAIT, "the old zygote to quit", || async {
            let now = zygotes(&f);
            first.iter().all(|z| !now.contains(z)).then_some(())
        })
        .await;
    };
    let ((r, _), ()) = tokio::join!(slow, update);
    assert!(r.warm, "the job ran warm: {r:?}");
    assert_eq!(r.status, attune_nats::Status::Succeeded, "{r:?}");
    assert_eq!(r.stdout, "start\ndone\n");
    runner.drain().await;
}
