//! The runner against a real nats-server, real interpreters (sh, python3, node) and stub
//! interpreters for versions this host lacks.

mod common;

use std::time::Duration;

use attune_nats::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, RUNNER_SERVICE};
use attune_nats::Status;
use attune_testkit::{eventually, real_python};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn shell_fixture(files: &[(&str, &str)]) -> Fixture {
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack("demo", files).await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_every_version_in_parallel_pass_fail_hang_and_shim() {
    let f = Fixture::new().await;
    let good = f
        .stubs
        .add("python3.12", "Python 3.12.4", &real_python())
        .unwrap();
    f.stubs
        .add_script(
            "python3.11",
            "echo 'pyenv: python3.11: command not found' >&2; exit 127",
        )
        .unwrap();
    f.stubs.add_script("python3.13", "sleep 30").unwrap();
    f.stubs
        .add("python3.10", "Python 3.9.1", &real_python())
        .unwrap();
    f.put_runtime(
        json!({"ref": "core.python", "name": "python", "aliases": ["python3"], "versions": [
        python_version("3.10", false), python_version("3.11", false),
        python_version("3.12", true), python_version("3.13", false)]}),
    )
    .await;
    f.put_runtime(shell_runtime()).await;

    let mut config = f.config("r1");
    config.runtimes = vec!["python3".into()]; // an alias selects the python runtime only
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();

    let verified = runner.verified();
    assert_eq!(verified.len(), 1, "only python 3.12 passes: {verified:?}");
    assert_eq!(
        (verified[0].runtime.as_str(), verified[0].version.as_str()),
        ("python", "3.12")
    );
    assert_eq!(verified[0].detected_version.as_deref(), Some("3.12.4"));
    assert_eq!(
        verified[0].binary,
        path_str(&good),
        "the stub found on PATH is pinned"
    );
    for v in ["3.10", "3.11", "3.13"] {
        assert!(
            !f.has_responders("python", v).await,
            "python {v} must not be served"
        );
    }
    assert!(
        !f.has_responders("shell", "default").await,
        "shell is filtered out"
    );

    // $SRV.INFO shows the endpoint with its metadata.
    let info = f
        .client
        .request(format!("$SRV.INFO.{RUNNER_SERVICE}"), "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let ep = &info["endpoints"][0];
    assert_eq!(ep["subject"], "attune.invoke.python.3.12");
    assert_eq!(ep["queue_group"], "attune");
    assert_eq!(ep["metadata"]["runtime"], "python");
    assert_eq!(ep["metadata"]["version"], "3.12");
    assert_eq!(ep["metadata"]["detected_version"], "3.12.4");
    assert!(ep["metadata"]["host"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));

    // The heartbeat lists the verified version and the capacity.
    let hb = f
        .runners
        .get("r1")
        .await
        .unwrap()
        .expect("heartbeat written");
    let hb: attune_nats::RunnerHeartbeat = serde_json::from_slice(&hb).unwrap();
    assert_eq!(hb.capacity, 4);
    assert_eq!(hb.versions, verified);
    runner.drain().await;
}

/// Verification proves the version: the `--version` fallback of versions without commands
/// holds a 3.11 binary to 3.11 only (it used to make 3.12 and 3.13 "available" too), the
/// pattern's capture group is the detected version, and a pre-release interpreter serves its
/// minor and is reported as the pre-release it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_proves_the_version_fallback_included_and_keeps_pre_releases() {
    let f = Fixture::new().await;
    f.stubs
        .add("python3", "Python 3.11.7", &real_python())
        .unwrap();
    f.stubs
        .add("python3.14", "Python 3.14.0rc1", &real_python())
        .unwrap();
    let fallback = |version: &str| {
        json!({"version": version,
               "execution_config": {"interpreter": {"binary": "python3", "args": ["-u"]}}})
    };
    f.put_runtime(json!({"ref": "core.python", "name": "python", "versions": [
        fallback("3.11"), fallback("3.12"), fallback("3.13"),
        {"version": "3.14", "is_default": true,
         "distributions": {"verification": {"commands": [
             {"binary": "python3.14", "args": ["--version"], "pattern": "Python (3\\.14\\.\\S+)"}]}},
         "execution_config": {"interpreter": {"binary": "python3.14"}}}]}))
    .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let verified: Vec<(String, Option<String>)> = runner
        .verified()
        .into_iter()
        .map(|v| (v.version, v.detected_version))
        .collect();
    assert_eq!(
        verified,
        [
            ("3.11".to_string(), Some("3.11.7".to_string())),
            ("3.14".to_string(), Some("3.14.0-rc1".to_string()))
        ]
    );
    for v in ["3.12", "3.13"] {
        assert!(
            !f.has_responders("python", v).await,
            "a 3.11 binary must not serve python {v}"
        );
    }
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_python_node_and_shell_with_json_parameters_on_stdin() {
    let f = Fixture::new().await;
    f.stubs
        .add("python3.12", "Python 3.12.4", &real_python())
        .unwrap();
    f.stubs
        .add("node", "v20.11.1", &which_real("node"))
        .unwrap();
    f.put_runtime(
        json!({"ref": "core.python", "name": "python", "versions": [python_version("3.12", true)]}),
    )
    .await;
    f.put_runtime(json!({"ref": "core.nodejs", "name": "node", "versions": [{
        "version": "20", "is_default": true,
        "distributions": {"verification": {"commands": [{"binary": "node", "args": ["--version"], "pattern": "^v20\\."}]}},
        "execution_config": {"interpreter": {"binary": "node"}}}]}))
        .await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack(
        "demo",
        &[
            (
                "actions/echo.py",
                "import json, sys\np = json.load(sys.stdin)\nprint(json.dumps({'message': p['message'], 'n': p['n']}))\n",
            ),
            (
                "actions/echo.js",
                "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const p=JSON.parse(s);console.log(JSON.stringify({message:p.message}))});\n",
            ),
            ("actions/echo.sh", "cat\n"),
        ],
    )
    .await;
    let schema = json!({"type": "object", "required": ["message"], "properties": {
        "message": {"type": "string"}, "n": {"type": "integer", "default": 7}}});
    f.put_action(
        json!({"ref": "demo.py", "runtime": "python", "entry_point": "echo.py",
        "runtime_version": ">=3.12", "parameters": schema, "output_format": "json"}),
    )
    .await;
    f.put_action(
        json!({"ref": "demo.js", "runtime": "node", "entry_point": "echo.js",
        "parameters": schema, "output_format": "json"}),
    )
    .await;
    f.put_action(
        json!({"ref": "demo.sh", "runtime": "shell", "entry_point": "echo.sh",
        "parameters": schema, "output_format": "json"}),
    )
    .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke(
            "python",
            "3.12",
            json!({"id": "x1", "action": "demo.py", "parameters": {"message": "hi"}}),
        )
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(
        r.result,
        json!({"message": "hi", "n": 7}),
        "defaults are applied"
    );
    assert_eq!((r.id.as_str(), r.exit_code), ("x1", Some(0)));
    assert_eq!(r.detected_version.as_deref(), Some("3.12.4"));
    assert_eq!(r.runner.as_deref(), Some("r1"));
    assert!(r.started_at.is_some());

    let (r, _) = f
        .invoke(
            "node",
            "20",
            json!({"action": "demo.js", "parameters": {"message": "yo"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.result.clone()),
        (Status::Succeeded, json!({"message": "yo"})),
        "{r:?}"
    );

    let (r, _) = f
        .invoke(
            "shell",
            "default",
            json!({"action": "demo.sh", "parameters": {"message": "sh"}}),
        )
        .await;
    assert_eq!(
        (r.status, r.result.clone()),
        (Status::Succeeded, json!({"message": "sh", "n": 7})),
        "{r:?}"
    );
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unknown_actions_wrong_versions_and_bad_parameters_with_service_errors() {
    let f = Fixture::new().await;
    f.stubs
        .add("python3.11", "Python 3.11.9", &real_python())
        .unwrap();
    f.put_runtime(
        json!({"ref": "core.python", "name": "python", "versions": [python_version("3.11", true)]}),
    )
    .await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack(
        "demo",
        &[
            ("actions/a.py", "print('ran')\n"),
            ("actions/a.sh", "echo ran\n"),
        ],
    )
    .await;
    f.put_action(json!({"ref": "demo.new", "runtime": "python", "entry_point": "a.py", "runtime_version": ">=3.12"}))
        .await;
    f.put_action(
        json!({"ref": "demo.typed", "runtime": "shell", "entry_point": "a.sh",
        "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}),
    )
    .await;
    f.put_action(json!({"ref": "demo.escape", "runtime": "shell", "entry_point": "../pack.yaml"}))
        .await;
    f.put_action(json!({"ref": "demo.missing", "runtime": "shell", "entry_point": "nope.sh"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let cases = [
        (
            "python",
            "3.11",
            json!({"action": "demo.nope"}),
            "404",
            "unknown action",
        ),
        (
            "python",
            "3.11",
            json!({"action": "demo.new"}),
            "409",
            ">=3.12",
        ),
        (
            "python",
            "3.11",
            json!({"action": "demo.typed"}),
            "409",
            "runs on runtime shell",
        ),
        (
            "shell",
            "default",
            json!({"action": "demo.typed", "parameters": {"n": "x"}}),
            "400",
            "/n",
        ),
        (
            "shell",
            "default",
            json!({"action": "demo.escape"}),
            "400",
            "escapes",
        ),
        (
            "shell",
            "default",
            json!({"action": "demo.missing"}),
            "400",
            "not found",
        ),
    ];
    for (rt, v, body, code, reason) in cases {
        let (r, headers) = f.invoke(rt, v, body.clone()).await;
        assert_eq!(r.status, Status::Rejected, "{body}: {r:?}");
        let error = r.error.clone().unwrap_or_default();
        assert!(
            error.contains(reason),
            "{body}: {error:?} should mention {reason:?}"
        );
        assert_eq!(
            header(&headers, HEADER_SERVICE_ERROR_CODE).as_deref(),
            Some(code),
            "{body}"
        );
        assert_eq!(
            header(&headers, HEADER_SERVICE_ERROR),
            Some(error),
            "{body}"
        );
        assert!(r.stdout.is_empty(), "nothing ran: {r:?}");
    }
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_a_0400_file_in_dotenv_and_yaml_and_the_file_is_removed() {
    let script = "f=\"$ATTUNE_PARAMETERS_FILE\"; stat -c %a \"$f\"; cat \"$f\"; echo \"$f\" >&2\n";
    let f = shell_fixture(&[("actions/file.sh", script)]).await;
    f.put_action(
        json!({"ref": "demo.env", "runtime": "shell", "entry_point": "file.sh",
        "parameter_delivery": "file", "parameter_format": "dotenv"}),
    )
    .await;
    f.put_action(
        json!({"ref": "demo.yaml", "runtime": "shell", "entry_point": "file.sh",
        "parameter_delivery": "file", "parameter_format": "yaml"}),
    )
    .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke(
            "shell",
            "default",
            json!({"action": "demo.env", "parameters": {"name": "it's", "n": 2}}),
        )
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(r.stdout, "400\nn='2'\nname='it'\\''s'\n");
    let file = r.stderr.trim();
    assert!(
        !std::path::Path::new(file).exists(),
        "{file} is removed after the run"
    );

    let (r, _) = f
        .invoke(
            "shell",
            "default",
            json!({"action": "demo.yaml", "parameters": {"n": 2}}),
        )
        .await;
    assert_eq!(r.stdout, "400\nn: 2\n", "{r:?}");
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_text_yaml_jsonl_and_unparsable_json() {
    let f = shell_fixture(&[
        ("actions/text.sh", "echo hello\n"),
        ("actions/yaml.sh", "echo 'a: 1'; echo 'b: [x]'\n"),
        ("actions/jsonl.sh", "echo 1; echo '{\"b\":2}'\n"),
        ("actions/bad.sh", "echo not json\n"),
        ("actions/fail.sh", "echo oops >&2; exit 3\n"),
    ])
    .await;
    for (name, format) in [
        ("text", "text"),
        ("yaml", "yaml"),
        ("jsonl", "jsonl"),
        ("bad", "json"),
        ("fail", "text"),
    ] {
        f.put_action(json!({"ref": format!("demo.{name}"), "runtime": "shell",
            "entry_point": format!("{name}.sh"), "output_format": format}))
            .await;
    }
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    let call = |a: &'static str| f.invoke("shell", "default", json!({"action": a}));

    assert_eq!(call("demo.text").await.0.result, json!("hello"));
    assert_eq!(
        call("demo.yaml").await.0.result,
        json!({"a": 1, "b": ["x"]})
    );
    assert_eq!(call("demo.jsonl").await.0.result, json!([1, {"b": 2}]));
    let (bad, _) = call("demo.bad").await;
    assert_eq!(
        (bad.status, bad.result.clone()),
        (Status::Succeeded, json!(null))
    );
    assert!(bad.error.unwrap().contains("not JSON"));
    let (fail, _) = call("demo.fail").await;
    assert_eq!(
        (fail.status, fail.exit_code, fail.stderr.as_str()),
        (Status::Failed, Some(3), "oops\n")
    );
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group_including_a_grandchild() {
    // The grandchild ignores nothing special; it would outlive a kill of the leader alone.
    let f = shell_fixture(&[(
        "actions/fork.sh",
        "sh -c 'sleep 300' &\necho $!\nsleep 300\n",
    )])
    .await;
    f.put_action(json!({"ref": "demo.fork", "runtime": "shell", "entry_point": "fork.sh", "timeout_seconds": 1}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke("shell", "default", json!({"action": "demo.fork"}))
        .await;
    assert_eq!(r.status, Status::TimedOut, "{r:?}");
    assert!(r.error.as_deref().unwrap_or("").contains("timed out"));
    let grandchild: u32 = r
        .stdout
        .trim()
        .parse()
        .expect("the script printed its child's pid");
    eventually(WAIT, "the grandchild to be gone", || async move {
        let status =
            std::fs::read_to_string(format!("/proc/{grandchild}/status")).unwrap_or_default();
        (status.is_empty() || status.contains("State:\tZ")).then_some(())
    })
    .await;
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_beyond_the_cap_is_truncated_with_a_visible_marker() {
    let f = shell_fixture(&[(
        "actions/big.sh",
        "head -c 5000 /dev/zero | tr '\\0' x\nhead -c 10 /dev/zero | tr '\\0' e >&2\n",
    )])
    .await;
    f.put_action(json!({"ref": "demo.big", "runtime": "shell", "entry_point": "big.sh"}))
        .await;
    let mut config = f.config("r1");
    config.output_cap = 1000;
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke("shell", "default", json!({"action": "demo.big"}))
        .await;
    assert_eq!(r.status, Status::Succeeded);
    assert!(r.stdout_truncated && !r.stderr_truncated, "{r:?}");
    assert_eq!(
        r.stdout,
        format!("{}\n[... truncated: 4000 bytes omitted]", "x".repeat(1000))
    );
    assert_eq!(r.stderr, "e".repeat(10));
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_40_short_calls_against_8_slots_all_succeed() {
    let f = shell_fixture(&[("actions/nap.sh", "sleep 0.2; echo done\n")]).await;
    f.put_action(json!({"ref": "demo.nap", "runtime": "shell", "entry_point": "nap.sh"}))
        .await;
    let mut config = f.config("r1");
    config.concurrency = 8;
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();

    let calls = (0..40).map(|i| {
        f.invoke(
            "shell",
            "default",
            json!({"id": format!("c{i}"), "action": "demo.nap"}),
        )
    });
    let replies = futures::future::join_all(calls).await;
    let ok = replies
        .iter()
        .filter(|(r, _)| r.status == Status::Succeeded)
        .count();
    assert_eq!(
        ok,
        40,
        "{:?}",
        replies.iter().find(|(r, _)| r.status != Status::Succeeded)
    );
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_runner_rejects_beyond_its_pending_bound_at_once() {
    let f = shell_fixture(&[("actions/slow.sh", "sleep 1; echo done\n")]).await;
    f.put_action(json!({"ref": "demo.slow", "runtime": "shell", "entry_point": "slow.sh"}))
        .await;
    let mut config = f.config("r1");
    config.concurrency = 1;
    config.max_pending = 1;
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();

    let calls = (0..5).map(|_| f.invoke("shell", "default", json!({"action": "demo.slow"})));
    let replies = futures::future::join_all(calls).await;
    let succeeded = replies
        .iter()
        .filter(|(r, _)| r.status == Status::Succeeded)
        .count();
    let overloaded: Vec<_> = replies
        .iter()
        .filter(|(r, _)| r.status == Status::Rejected)
        .collect();
    assert_eq!(succeeded, 2, "one runs, one waits: {replies:?}");
    assert_eq!(overloaded.len(), 3);
    for (r, h) in overloaded {
        assert!(r.error.as_deref().unwrap().contains("overloaded"), "{r:?}");
        assert_eq!(header(h, HEADER_SERVICE_ERROR_CODE).as_deref(), Some("503"));
    }
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_every_accepted_invocation_and_removes_the_heartbeat() {
    let f = shell_fixture(&[("actions/slow.sh", "sleep 1; echo done\n")]).await;
    f.put_action(json!({"ref": "demo.slow", "runtime": "shell", "entry_point": "slow.sh"}))
        .await;
    let mut config = f.config("r1");
    config.concurrency = 2;
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();
    assert!(f.runners.get("r1").await.unwrap().is_some());

    let calls: Vec<_> = (0..4)
        .map(|i| {
            let client = f.client.clone();
            let subject = f.ns.invoke("shell", "default");
            tokio::spawn(async move {
                let body =
                    serde_json::to_vec(&json!({"id": format!("d{i}"), "action": "demo.slow"}))
                        .unwrap();
                client.request(subject, body.into()).await
            })
        })
        .collect();
    eventually(WAIT, "4 accepted invocations", || async {
        (runner.in_flight() == 4).then_some(())
    })
    .await;
    runner.drain().await;

    for call in calls {
        let msg = call
            .await
            .unwrap()
            .expect("every accepted invocation is answered");
        let r: attune_nats::InvocationReply = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(r.status, Status::Succeeded, "{r:?}");
    }
    assert!(
        f.runners.get("r1").await.unwrap().is_none(),
        "heartbeat removed"
    );
    assert!(
        !f.has_responders("shell", "default").await,
        "no new work after drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_runtimes_and_changed_packs_are_picked_up_without_restart() {
    let f = shell_fixture(&[("actions/v.sh", "echo one\n")]).await;
    f.put_action(json!({"ref": "demo.v", "runtime": "shell", "entry_point": "v.sh"}))
        .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    assert_eq!(
        f.invoke("shell", "default", json!({"action": "demo.v"}))
            .await
            .0
            .result,
        json!("one")
    );

    f.put_pack("demo", &[("actions/v.sh", "echo two\n")]).await;
    eventually(WAIT, "the new pack digest to be served", || async {
        (f.invoke("shell", "default", json!({"action": "demo.v"}))
            .await
            .0
            .result
            == json!("two"))
        .then_some(())
    })
    .await;

    f.stubs
        .add("python3.12", "Python 3.12.4", &real_python())
        .unwrap();
    f.put_runtime(
        json!({"ref": "core.python", "name": "python", "versions": [python_version("3.12", true)]}),
    )
    .await;
    f.put_pack("py", &[("actions/hi.py", "print('hi from python')\n")])
        .await;
    f.put_action(json!({"ref": "py.hi", "runtime": "python", "entry_point": "hi.py"}))
        .await;
    let reply = eventually(WAIT, "python 3.12 and pack py to be served", || async {
        if !f.has_responders("python", "3.12").await {
            return None;
        }
        let (r, _) = f.invoke("python", "3.12", json!({"action": "py.hi"})).await;
        (r.status == Status::Succeeded).then_some(r)
    })
    .await;
    assert_eq!(reply.result, json!("hi from python"));
    runner.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_pack_still_being_prepared_waits_for_it() {
    let f = Fixture::new().await;
    // A shell runtime whose per-pack environment takes two seconds to build.
    f.put_runtime(json!({
        "ref": "core.shell", "name": "shell",
        "execution_config": {
            "interpreter": {"binary": "sh"},
            "environment": {
                "env_type": "virtualenv",
                "create_command": ["sh", "-c", "sleep 2; mkdir -p \"$0/bin\" && ln -s \"$1\" \"$0/bin/sh\"", "{env_dir}", "{interpreter}"],
                "interpreter_path": "{env_dir}/bin/sh"}},
        "distributions": {"verification": {"commands": [
            {"binary": "sh", "args": ["-c", "echo ok"], "pattern": "^ok"}]}}
    }))
    .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    // A pack registered while the runner runs: its environment is being built when the first
    // request the runner can recognise arrives. That request waits and runs; it is not rejected.
    f.put_pack("slow", &[("actions/hi.sh", "echo hi\n")]).await;
    f.put_action(json!({"ref": "slow.hi", "runtime": "shell", "entry_point": "hi.sh", "timeout_seconds": 30}))
        .await;
    let reply = eventually(WAIT, "the runner to know slow.hi", || async {
        let (r, _) = f
            .invoke("shell", "default", json!({"action": "slow.hi"}))
            .await;
        let unknown = r
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("unknown action"));
        (!unknown).then_some(r)
    })
    .await;
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.result, json!("hi"));
    runner.drain().await;
}

/// Asks the runner(s) to verify again over the bus, as `attune runtime verify` does, and returns
/// the first answer.
async fn ask_verify(f: &Fixture, runtime: &str, version: &str) -> attune_nats::wire::VerifyReply {
    let request = attune_nats::wire::VerifyRequest {
        runtime: Some(runtime.into()),
        version: Some(version.into()),
        runner: None,
    };
    let msg = f
        .client
        .request(
            f.ns.runners_verify(),
            serde_json::to_vec(&request).unwrap().into(),
        )
        .await
        .expect("a runner answers");
    serde_json::from_slice(&msg.payload).expect("a verify reply")
}

/// The served set follows verification: a version that fails re-verification (its interpreter
/// replaced by another version) is unsubscribed, so its requests stop landing here; one that
/// passes again (asked for on the bus) is served again, without a restart; and the schedule
/// (`reverify`) picks up an interpreter installed after start-up without being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_set_follows_re_verification_on_demand_and_on_schedule() {
    let f = Fixture::new().await;
    let stub = f
        .stubs
        .add("python3.13", "Python 3.13.1", &real_python())
        .unwrap();
    f.put_runtime(json!({"ref": "core.python", "name": "python", "versions": [
        python_version("3.13", true)]}))
        .await;
    let mut config = f.config("r1");
    config.reverify = None;
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();
    assert!(f.has_responders("python", "3.13").await);

    // The interpreter behind the name is now a 3.11: asked to verify, the runner says so and
    // stops serving 3.13 (no responders, not a 503 from a runner that cannot run it).
    std::fs::remove_file(&stub).unwrap();
    f.stubs
        .add("python3.13", "Python 3.11.7", &real_python())
        .unwrap();
    let reply = ask_verify(&f, "python", "3.13").await;
    assert_eq!(reply.runner, "r1");
    let found = &reply.versions[0];
    assert!(!found.verified, "{reply:?}");
    assert!(
        found.reason.as_deref().unwrap_or("").contains("3.11.7"),
        "{reply:?}"
    );
    eventually(WAIT, "3.13 unsubscribed", || async {
        (!f.has_responders("python", "3.13").await).then_some(())
    })
    .await;
    assert!(runner.verified().is_empty());

    // Fixed again: verified on demand, served again.
    std::fs::remove_file(&stub).unwrap();
    f.stubs
        .add("python3.13", "Python 3.13.2", &real_python())
        .unwrap();
    let reply = ask_verify(&f, "python", "3.13").await;
    assert!(reply.versions[0].verified, "{reply:?}");
    assert_eq!(
        reply.versions[0].detected_version.as_deref(),
        Some("3.13.2")
    );
    eventually(WAIT, "3.13 served again", || async {
        f.has_responders("python", "3.13").await.then_some(())
    })
    .await;
    // Garbage on the verify subject is answered with what was wrong, and the runner goes on.
    let msg = f
        .client
        .request(f.ns.runners_verify(), "{\"runtime\": 12".into())
        .await
        .expect("a runner answers");
    let reply: attune_nats::wire::VerifyReply = serde_json::from_slice(&msg.payload).unwrap();
    assert!(
        reply
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("invalid verify request"),
        "{reply:?}"
    );
    // An ask naming nothing this runner knows is answered with why.
    let reply = ask_verify(&f, "python", "3.99").await;
    assert!(
        reply
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no version \"3.99\""),
        "{reply:?}"
    );
    runner.drain().await;

    // On schedule: a runner started without 3.13 serves it once the interpreter appears.
    std::fs::remove_file(&stub).unwrap();
    let mut config = f.config("r2");
    config.reverify = Some(Duration::from_millis(300));
    let runner = attune_runner::start(config, f.client.clone())
        .await
        .unwrap();
    assert!(runner.verified().is_empty());
    f.stubs
        .add("python3.13", "Python 3.13.2", &real_python())
        .unwrap();
    eventually(WAIT, "3.13 picked up by the schedule", || async {
        f.has_responders("python", "3.13").await.then_some(())
    })
    .await;
    runner.drain().await;
}

/// A drain while NATS is unreachable still ends: the endpoints' drain cannot complete without a
/// connection, so their wait for it is bounded, and SIGTERM during an outage stops the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_during_a_nats_outage_ends() {
    let mut f = shell_fixture(&[]).await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();
    eventually(WAIT, "shell served", || async {
        f.has_responders("shell", "default").await.then_some(())
    })
    .await;
    f.server.stop();
    tokio::time::timeout(Duration::from_secs(90), runner.drain())
        .await
        .expect("the drain ended while NATS was down");
}
