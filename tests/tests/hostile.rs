//! The hostile-input suite: what a caller, a pack author and the server can throw at a running
//! installation, against a real nats-server with the registry and a runner in process. Each
//! test shows an attack refused with a clear error, and the services still serving after it:
//! - names: a pack with unsafe names is rejected whole; a job with an unsafe id is refused at
//!   enqueue, and one published straight to the stream ends as a rejected record, never redelivered;
//! - requests: control characters in any field get a 400, not a timeout; a body naming another
//!   action than the subject's is refused; a request cannot raise its action's timeout;
//! - parameter delivery: parameter names that would run a command or rewrite the environment are
//!   refused before any file is written;
//! - action output: a YAML alias bomb is refused, and the runner keeps serving;
//! - replies: more output than `max_payload` still reaches the caller;
//! - processes: a `setsid` child does not outlive its invocation;
//! - the server: a JetStream wiped under a live runner is followed, and a pack registered
//!   afterwards is served without restarting anything.
//!
//! Process containment (setsid children, daemons, a SIGKILLed runner, hung builds) is tested in
//! `runner/tests/processes.rs`; hostile archives and YAML files in `registry/tests/registry.rs`
//! and `registry/src/pack/tests.rs`; the fuzz run in `tests/tests/fuzz.rs`.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use attune_nats::api::{PackRegisterReply, PackRegisterRequest};
use attune_nats::client::Client;
use attune_nats::jobs::HEADER_ASYNC;
use attune_nats::subject::HEADER_SERVICE_ERROR_CODE;
use attune_nats::{InvocationReply, InvocationRequest, Namespace, RegistryOp, Status};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::{RunnerConfig, RunnerHandle};
use attune_testkit::{eventually, workspace_root, NatsServer};
use serde_json::json;

/// How long a test waits for something that should happen (generous: machines are shared).
const WAIT: Duration = Duration::from_secs(60);
/// The timeout every hostile request is sent with: a rejection must come well before it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A nats-server, the registry with `packs/core`, and a shell runner, all in this process.
struct Stack {
    server: NatsServer,
    nats: async_nats::Client,
    client: Client,
    registry: Option<RunningRegistry>,
    runner: Option<RunnerHandle>,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer::start();
        let nats = server.connect().await;
        let core = workspace_root().join("packs").join("core");
        let hostile = dir.path().join("hostile");
        write_hostile_pack(&hostile);
        let mut registry_config = ServeConfig::new(
            dir.path().join("registry"),
            vec![core, hostile],
            Namespace::default(),
        );
        // The tests register packs they write here by path, as an operator would allow.
        registry_config.allow_register_from = vec![dir.path().to_path_buf()];
        let registry = attune_registry::start(registry_config, nats.clone())
            .await
            .expect("registry starts");
        let mut config = RunnerConfig::new(dir.path().join("envs"), dir.path().join("cache"));
        config.name = "resilient".into();
        config.runtimes = vec!["shell".into()];
        config.path = "/usr/local/bin:/usr/bin:/bin".into();
        config.concurrency = 2;
        config.verify_timeout = Duration::from_secs(5);
        let runner = attune_runner::start(config, nats.clone())
            .await
            .expect("runner starts");
        let stack = Stack {
            client: Client::new(nats.clone(), Namespace::default()),
            server,
            nats,
            registry: Some(registry),
            runner: Some(runner),
            dir,
        };
        stack.wait_until_echo_works().await;
        stack
    }

    /// Waits until `core.echo` succeeds by name, which needs the registry to see the runner.
    async fn wait_until_echo_works(&self) {
        eventually(WAIT, "core.echo succeeds by name", || async {
            let reply = self
                .request(
                    "attune.action.core.echo",
                    json!({"parameters": {"message": "hi"}})
                        .to_string()
                        .into_bytes(),
                    None,
                )
                .await?;
            (reply.0.status == Status::Succeeded).then_some(())
        })
        .await;
    }

    /// Sends `body` to `subject` (with `headers`) and parses the reply; `None` if none came.
    async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        headers: Option<HeaderMap>,
    ) -> Option<(InvocationReply, Option<HeaderMap>)> {
        let mut req = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(REQUEST_TIMEOUT));
        if let Some(h) = headers {
            req = req.headers(h);
        }
        let msg = self
            .nats
            .send_request(subject.to_string(), req)
            .await
            .ok()?;
        let reply = serde_json::from_slice(&msg.payload).ok()?;
        Some((reply, msg.headers))
    }

    async fn stop(mut self) {
        if let Some(r) = self.runner.take() {
            r.drain().await;
        }
        if let Some(r) = self.registry.take() {
            r.stop().await;
        }
    }
}

/// A request body with `field` set to `value`, the rest valid.
fn body_with(field: &str, value: serde_json::Value) -> Vec<u8> {
    let mut body = json!({"id": "ok-1", "action": "core.echo", "parameters": {"message": "hi"}});
    if field == "parameter name" {
        body["parameters"] = json!({ value.as_str().unwrap(): "x", "message": "hi" });
    } else {
        body[field] = value;
    }
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn control_characters_in_request_fields_get_a_rejection_not_a_timeout() {
    let stack = Stack::start().await;
    let hostile = [
        "core\necho",
        "core\r\necho",
        "core\0echo",
        "a\u{1b}[2Jb",
        "x\ty",
    ];
    let mut async_header = HeaderMap::new();
    async_header.insert(HEADER_ASYNC, "true");
    let routes: [(&str, Option<HeaderMap>); 3] = [
        ("attune.invoke.shell.default", None),
        ("attune.action.core.echo", None),
        ("attune.action.core.echo", Some(async_header)),
    ];
    for (subject, headers) in &routes {
        for field in ["action", "id", "parameter name"] {
            for value in hostile {
                let body = body_with(field, json!(value));
                let (reply, reply_headers) = stack
                    .request(subject, body, headers.clone())
                    .await
                    .unwrap_or_else(|| panic!("no reply on {subject} for a {field} of {value:?}"));
                assert_eq!(
                    reply.status,
                    Status::Rejected,
                    "{subject}, {field} = {value:?}: {reply:?}"
                );
                let code = reply_headers
                    .as_ref()
                    .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE))
                    .map(|v| v.to_string());
                assert_eq!(
                    code.as_deref(),
                    Some("400"),
                    "{subject}, {field} = {value:?}"
                );
                assert!(
                    reply.error.as_deref().unwrap_or("").contains(match field {
                        "parameter name" => "parameters",
                        f => f,
                    }),
                    "the error names the field: {:?}",
                    reply.error
                );
            }
        }
    }
    // Both services still serve.
    stack.wait_until_echo_works().await;
    let (reply, _) = stack
        .request(
            "attune.invoke.shell.default",
            body_with("id", json!("fine-2")),
            None,
        )
        .await
        .expect("a valid request is answered");
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.id, "fine-2");
    stack.stop().await;
}

/// Actions that misbehave on purpose: (name, extra YAML, script).
const HOSTILE: &[(&str, &str, &str)] = &[
    (
        "big",
        "output_format: text\ntimeout_seconds: 30\n",
        "head -c 1500000 /dev/zero | tr '\\0' x\necho done >&2\n",
    ),
    (
        "slow",
        "output_format: text\ntimeout_seconds: 1\n",
        "sleep 30\necho never\n",
    ),
    (
        "dotenv",
        "output_format: text\ntimeout_seconds: 10\nparameter_delivery: file\nparameter_format: dotenv\n",
        ". \"$ATTUNE_PARAMETERS_FILE\"\necho sourced\n",
    ),
    (
        "escape",
        "output_format: text\ntimeout_seconds: 10\nparameter_delivery: file\nparameter_format: dotenv\n",
        ". \"$ATTUNE_PARAMETERS_FILE\"\nsetsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 &\necho $! > \"$pidfile\"\necho left a child\n",
    ),
    (
        "yaml_bomb",
        "output_format: yaml\ntimeout_seconds: 30\n",
        "printf 'pad: [%s p]\\n' \"$(yes 'p,' | head -n 1200 | tr -d '\\n')\"\n\
         printf 'a0: &a0 [%s lol]\\n' \"$(yes 'lol,' | head -n 99 | tr -d '\\n')\"\n\
         for i in 1 2 3 4 5; do p=$((i-1)); printf 'a%s: &a%s [*a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s, *a%s]\\n' $i $i $p $p $p $p $p $p $p $p $p $p; done\n",
    ),
];

fn write_hostile_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: hostile\nlabel: Hostile\ndescription: Actions that misbehave.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    for (name, extra, script) in HOSTILE {
        std::fs::write(
            dir.join(format!("actions/{name}.yaml")),
            format!("ref: hostile.{name}\nrunner_type: shell\nentry_point: {name}.sh\n{extra}"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("actions/{name}.sh")),
            format!("#!/bin/sh\n{script}"),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn a_reply_larger_than_max_payload_still_reaches_the_caller() {
    let stack = Stack::start().await;
    let max_payload = stack.nats.server_info().max_payload;
    // A plain NATS requester gets a reply that fits, naming where the whole reply is.
    let msg = stack
        .nats
        .send_request(
            "attune.action.hostile.big".to_string(),
            async_nats::Request::new()
                .payload(br#"{"id":"big-1"}"#.to_vec().into())
                .timeout(Some(REQUEST_TIMEOUT)),
        )
        .await
        .expect("a reply, not a timeout");
    assert!(
        msg.payload.len() <= max_payload,
        "{} bytes",
        msg.payload.len()
    );
    let reply: InvocationReply = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert!(reply.stdout_truncated);
    assert_eq!(reply.result_ref.as_deref(), Some("sync-big-1"));
    // The Rust client (and so `attune invoke`) fetches the whole reply.
    let full = stack
        .client
        .invoke(&InvocationRequest {
            id: Some("big-2".into()),
            action: "hostile.big".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(full.status, Status::Succeeded);
    assert!(full.stdout.len() > 1_000_000, "{}", full.stdout.len());
    assert!(full.stdout.starts_with("xxxx"));
    assert_eq!(full.stderr, "done\n");
    stack.stop().await;
}

fn write_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: late\nlabel: Late\ndescription: Registered after a wipe.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/hello.yaml"),
        "ref: late.hello\nrunner_type: shell\nentry_point: hello.sh\noutput_format: text\ntimeout_seconds: 10\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/hello.sh"),
        "#!/bin/sh\necho after the wipe\n",
    )
    .unwrap();
}

#[tokio::test]
async fn a_wiped_jetstream_is_followed_and_a_pack_registered_after_it_is_served() {
    let mut stack = Stack::start().await;
    stack.server.wipe_and_restart();

    // The registry republishes into the empty server; the runner follows the new buckets.
    stack.wait_until_echo_works().await;

    let pack = stack.dir.path().join("late");
    write_pack(&pack);
    let registered: PackRegisterReply = eventually(WAIT, "pack registered", || async {
        stack
            .client
            .api(
                RegistryOp::PackRegister,
                &PackRegisterRequest {
                    path: Some(pack.to_string_lossy().into_owned()),
                    digest: None,
                },
            )
            .await
            .ok()
    })
    .await;
    assert_eq!(registered.pack.reference, "late");

    let reply = eventually(WAIT, "late.hello served after the wipe", || async {
        let request = InvocationRequest {
            action: "late.hello".into(),
            ..Default::default()
        };
        let reply = stack.client.invoke(&request).await.ok()?;
        (reply.status == Status::Succeeded).then_some(reply)
    })
    .await;
    assert_eq!(reply.result, json!("after the wipe"));
    assert_eq!(reply.runner.as_deref(), Some("resilient"));
    stack.stop().await;
}

/// Sends `body` to `subject` and returns the reply and its error code header.
async fn ask(
    stack: &Stack,
    subject: &str,
    body: serde_json::Value,
) -> (InvocationReply, Option<String>) {
    let (reply, headers) = stack
        .request(subject, serde_json::to_vec(&body).unwrap(), None)
        .await
        .unwrap_or_else(|| panic!("no reply on {subject} for {body}"));
    let code = headers
        .as_ref()
        .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE))
        .map(|v| v.to_string());
    (reply, code)
}

#[tokio::test]
async fn unsafe_names_are_refused_where_they_arrive() {
    let stack = Stack::start().await;
    // A pack: rejected whole, with the file and line of each unsafe name.
    let pack = stack.dir.path().join("badnames");
    std::fs::create_dir_all(pack.join("actions")).unwrap();
    std::fs::write(
        pack.join("pack.yaml"),
        "ref: badnames\nlabel: Bad\ndescription: Unsafe names.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    std::fs::write(
        pack.join("actions/a.yaml"),
        "name: \"x; rm -rf\"\nrunner_type: shell\nentry_point: a.sh\nparameters:\n  BASH_ENV:\n    type: string\n",
    )
    .unwrap();
    std::fs::write(pack.join("actions/a.sh"), "#!/bin/sh\necho\n").unwrap();
    let err = stack
        .client
        .api::<_, PackRegisterReply>(
            RegistryOp::PackRegister,
            &PackRegisterRequest {
                path: Some(pack.to_string_lossy().into_owned()),
                digest: None,
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("actions/a.yaml:1:"), "{err}");
    assert!(err.contains("BASH_ENV"), "{err}");
    assert!(
        stack.client.action("badnames.a").await.is_err(),
        "nothing of a rejected pack is registered"
    );

    // A job id that is not a safe KV key: refused at enqueue, nothing queued.
    let mut async_header = HeaderMap::new();
    async_header.insert(HEADER_ASYNC, "true");
    let (reply, headers) = stack
        .request(
            "attune.action.core.echo",
            br#"{"id":"job 1:x","parameters":{"message":"hi"}}"#.to_vec(),
            Some(async_header),
        )
        .await
        .expect("an answer");
    assert_eq!(reply.status, Status::Rejected);
    assert_eq!(
        headers
            .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE).map(|v| v.to_string()))
            .as_deref(),
        Some("400")
    );
    assert!(reply.error.unwrap().contains("field \"id\""));

    // The same job published straight to the stream: a final rejected record under a safe id.
    let js = async_nats::jetstream::new(stack.nats.clone());
    let ack = js
        .publish(
            "attune.jobs.shell.default",
            br#"{"id":"job 1:x","action":"core.echo","parameters":{"message":"hi"}}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let safe_id = format!("ATTUNE_JOBS-{}", ack.sequence);
    let record = eventually(WAIT, "the bad job's record", || async {
        stack
            .client
            .result(&safe_id)
            .await
            .ok()
            .flatten()
            .filter(|r| r.is_final)
    })
    .await;
    assert_eq!(record.reply.status, Status::Rejected);
    assert!(record.reply.error.unwrap().contains("field \"id\""));
    assert_eq!(record.attempts.len(), 1, "never redelivered");
    stack.wait_until_echo_works().await;
    stack.stop().await;
}

#[tokio::test]
async fn a_request_cannot_run_another_action_or_raise_its_timeout() {
    let stack = Stack::start().await;
    let (reply, code) = ask(
        &stack,
        "attune.action.core.echo",
        json!({"action": "hostile.slow"}),
    )
    .await;
    assert_eq!(
        (reply.status, code.as_deref()),
        (Status::Rejected, Some("400"))
    );
    assert!(reply
        .error
        .unwrap()
        .contains("subject is for \"core.echo\""));

    // hostile.slow may run 1 s; asking for 100 s does not give it more.
    let (reply, _) = ask(
        &stack,
        "attune.action.hostile.slow",
        json!({"timeout_seconds": 100}),
    )
    .await;
    assert_eq!(reply.status, Status::TimedOut, "{reply:?}");
    assert!(reply.error.unwrap().contains("timed out after 1s"));

    for bad in [json!(0), json!(-3), json!("soon")] {
        let (reply, code) = ask(
            &stack,
            "attune.action.hostile.slow",
            json!({"timeout_seconds": bad}),
        )
        .await;
        assert_eq!(
            (reply.status, code.as_deref()),
            (Status::Rejected, Some("400")),
            "{bad}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn parameter_names_cannot_run_commands_or_rewrite_the_environment() {
    let stack = Stack::start().await;
    let pwned = stack.dir.path().join("pwned");
    for name in [
        format!("x; touch {}; y", pwned.display()),
        "PATH".to_string(),
        "LD_PRELOAD".to_string(),
        "bash_env".to_string(),
        "ATTUNE_EXEC_ID".to_string(),
        "IFS".to_string(),
    ] {
        let (reply, code) = ask(
            &stack,
            "attune.action.hostile.dotenv",
            json!({"parameters": {name.clone(): "x"}}),
        )
        .await;
        assert_eq!(
            (reply.status, code.as_deref()),
            (Status::Rejected, Some("400")),
            "{name}: {reply:?}"
        );
        assert!(reply.error.unwrap().contains("parameter name"), "{name}");
    }
    assert!(!pwned.exists(), "no command ran");
    // A safe name is delivered and sourced as a value, quotes and all.
    let (reply, _) = ask(
        &stack,
        "attune.action.hostile.dotenv",
        json!({"parameters": {"note": "it's $(touch nope); fine"}}),
    )
    .await;
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.result, json!("sourced"));
    stack.stop().await;
}

#[tokio::test]
async fn a_yaml_alias_bomb_printed_by_an_action_is_refused_and_the_runner_keeps_serving() {
    let stack = Stack::start().await;
    let (reply, _) = ask(&stack, "attune.action.hostile.yaml_bomb", json!({})).await;
    assert_eq!(
        reply.status,
        Status::Succeeded,
        "the action itself exited 0"
    );
    assert_eq!(reply.result, serde_json::Value::Null);
    let error = reply.error.unwrap();
    assert!(error.contains("nodes"), "{error}");
    // Still serving, and still heartbeating (by-name routing depends on it).
    stack.wait_until_echo_works().await;
    stack.stop().await;
}

/// Whether process `pid` is gone (or a zombie nobody can run any more).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn a_process_an_action_leaves_behind_does_not_outlive_the_invocation() {
    let stack = Stack::start().await;
    let pidfile = stack.dir.path().join("escaped.pid");
    let (reply, _) = ask(
        &stack,
        "attune.action.hostile.escape",
        json!({"parameters": {"pidfile": pidfile.to_string_lossy()}}),
    )
    .await;
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(WAIT, "the setsid child to be gone", || async {
        ended(pid).then_some(())
    })
    .await;
    stack.wait_until_echo_works().await;
    stack.stop().await;
}
