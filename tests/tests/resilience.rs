//! What the bus and the server can throw at a running installation, against a real nats-server
//! with the registry and a runner in process:
//! - requests whose fields carry control characters are answered with a rejection, never left
//!   to time out (and the services keep serving);
//! - a JetStream wiped under a live runner is followed: the registry republishes, the runner's
//!   KV followers read the re-created buckets, and a pack registered afterwards is served without
//!   restarting anything.

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
        let registry = attune_registry::start(
            ServeConfig::new(
                dir.path().join("registry"),
                vec![core, hostile],
                Namespace::default(),
            ),
            nats.clone(),
        )
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

/// Actions that misbehave on purpose: (name, script).
const HOSTILE: &[(&str, &str)] = &[(
    "big",
    "head -c 1500000 /dev/zero | tr '\\0' x\necho done >&2\n",
)];

fn write_hostile_pack(dir: &Path) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        "ref: hostile\nlabel: Hostile\ndescription: Actions that misbehave.\nversion: 1.0.0\nauthor: Attune\n",
    )
    .unwrap();
    for (name, script) in HOSTILE {
        std::fs::write(
            dir.join(format!("actions/{name}.yaml")),
            format!("ref: hostile.{name}\nrunner_type: shell\nentry_point: {name}.sh\noutput_format: text\ntimeout_seconds: 30\n"),
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
