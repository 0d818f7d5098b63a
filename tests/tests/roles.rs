//! The roles enforced by a real nats-server running the configuration `auth init` writes: every
//! role's normal path works without a single permission violation (plain and over TLS with
//! client certificates), and what a role must not do is refused by the server.
//!
//! The registry and the runner run in process, each on a connection made with its own role's
//! nkey and inbox prefix. Denials are seen twice: as the `-ERR 'Permissions Violation …'` the
//! server sends the offending connection (async-nats reports it to the event callback), and as
//! unchanged registry state afterwards.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use attune_nats::api::{
    Empty, PackGetReply, PackRegisterReply, PackRegisterRequest, RefRequest, RunnerListReply,
    RuntimeReply, SensorListReply, SetDefaultRequest,
};
use attune_nats::auth::{self, AuthDir, AuthOptions};
use attune_nats::client::Client;
use attune_nats::events::{read_events, Window};
use attune_nats::jetstream::Bucket;
use attune_nats::jobs::{Enqueued, HEADER_ASYNC};
use attune_nats::resolve::Mode;
use attune_nats::{InvocationRequest, Namespace, RegistryOp, Status};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::{RunnerConfig, RunnerHandle};
use attune_testkit::{eventually, free_port, workspace_root};
use futures::StreamExt;
use serde_json::json;

/// How long to wait for the server's `-ERR` after a refused operation.
const DENIAL_WAIT: Duration = Duration::from_secs(3);

/// A pack of shell actions: `echo` prints its parameters, `big` prints more than a NATS message
/// holds (so its result goes through the results object store).
fn write_pack(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        format!("ref: {name}\nlabel: Secured\ndescription: Actions the role tests run.\nversion: 1.0.0\nauthor: Attune\n"),
    )
    .unwrap();
    // `echo` has a concurrency limit: the runner takes and releases its slots in KV.
    for (action, script, extra) in [
        ("echo", "cat\n", "concurrency: {limit: 4}\n"),
        ("big", "head -c 3000000 /dev/zero | tr '\\0' x\n", ""),
    ] {
        std::fs::write(
            dir.join("actions").join(format!("{action}.yaml")),
            format!("ref: {name}.{action}\nrunner_type: shell\nentry_point: {action}.sh\noutput_format: text\ntimeout_seconds: 30\n{extra}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("actions").join(format!("{action}.sh")),
            format!("#!/bin/sh\n{script}"),
        )
        .unwrap();
    }
    // A sensor: the runner takes its lease and publishes its event.
    std::fs::create_dir_all(dir.join("sensors")).unwrap();
    std::fs::write(
        dir.join("sensors/beat.yaml"),
        "name: beat\nrunner_type: shell\nentry_point: beat.sh\ntriggers: [beat]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sensors/beat.sh"),
        "echo '{\"n\": 1}'\nexec sleep 3600\n",
    )
    .unwrap();
}

/// A nats-server running the generated configuration, and the auth directory it came from.
struct Secured {
    dir: tempfile::TempDir,
    auth: AuthDir,
    ns: Namespace,
    server: Child,
    log: PathBuf,
}

impl Secured {
    /// Generates an auth directory (users: the four roles and a second client, `other`) and
    /// starts nats-server with its configuration.
    fn start(tls: bool) -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::default();
        let mut opts = AuthOptions::new(ns.clone());
        opts.port = free_port();
        opts.tls = tls;
        opts.clients = vec!["other".into()];
        let auth = auth::init(&dir.path().join("auth"), &opts).expect("auth init");
        let log = dir.path().join("nats-server.log");
        let server = attune_nats::local::start_with_config(&auth.server_config, opts.port, &log)
            .expect("nats-server starts with the generated configuration");
        Secured {
            dir,
            auth,
            ns,
            server,
            log,
        }
    }

    /// Connects as `user`, recording every error the server sends this connection.
    async fn connect(&self, user: &str) -> Conn {
        let files = self.auth.user(user).expect("a user auth init wrote");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let nats = self
            .auth
            .connect_options(files)
            .await
            .unwrap()
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(&self.auth.url)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        Conn {
            user: user.to_string(),
            nats,
            errors,
        }
    }

    /// The permission violations the server logged.
    fn logged_violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_string)
            .collect()
    }

    /// Starts the registry (packs `core` and `sec`) on the registry's connection. It creates every
    /// JetStream resource, so the runner only opens them.
    async fn registry(&self, conn: &Conn) -> RunningRegistry {
        let pack = self.dir.path().join("packs").join("sec");
        write_pack(&pack, "sec");
        let core = workspace_root().join("packs").join("core");
        attune_registry::start(
            ServeConfig::new(
                self.dir.path().join("registry"),
                vec![core, pack],
                self.ns.clone(),
            ),
            conn.nats.clone(),
        )
        .await
        .expect("the registry starts with the registry role")
    }

    /// Starts a runner serving `shell` on the runner's connection.
    async fn runner(&self, conn: &Conn) -> RunnerHandle {
        let root = self.dir.path();
        let mut c = RunnerConfig::new(root.join("envs"), root.join("cache"));
        c.name = "secured".into();
        c.namespace = self.ns.clone();
        c.runtimes = vec!["shell".into()];
        c.path = "/usr/local/bin:/usr/bin:/bin".into();
        c.concurrency = 2;
        c.verify_timeout = Duration::from_secs(5);
        c.drain_grace = Duration::from_secs(10);
        attune_runner::start(c, conn.nats.clone())
            .await
            .expect("the runner starts with the runner role")
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// One user's connection and the errors the server sent it.
struct Conn {
    user: String,
    nats: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Conn {
    fn client(&self, ns: &Namespace) -> Client {
        Client::new(self.nats.clone(), ns.clone())
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits for the server to refuse `what` on `subject` (`Publish` or `Subscription`).
    async fn assert_denied(&self, what: &str, subject: &str) {
        self.nats.flush().await.unwrap();
        let expected = format!("Permissions Violation for {what} to \"{subject}\"");
        let deadline = tokio::time::Instant::now() + DENIAL_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.errors().iter().any(|e| e.contains(&expected)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{}: expected the server to refuse {what} to {subject}; errors: {:?}",
            self.user,
            self.errors()
        );
    }

    /// Publishes to `subject` and expects the server to refuse it.
    async fn publish_denied(&self, subject: String) {
        self.nats
            .publish(subject.clone(), "{}".into())
            .await
            .unwrap();
        self.assert_denied("Publish", &subject).await;
    }

    /// Subscribes to `subject` (in `queue` if given) and expects the server to refuse it.
    async fn subscribe_denied(&self, subject: String, queue: Option<&str>) {
        let _sub = match queue {
            Some(q) => self
                .nats
                .queue_subscribe(subject.clone(), q.to_string())
                .await
                .unwrap(),
            None => self.nats.subscribe(subject.clone()).await.unwrap(),
        };
        self.assert_denied("Subscription", &subject).await;
    }
}

fn request(action: &str, params: serde_json::Value) -> InvocationRequest {
    InvocationRequest {
        id: None,
        action: action.to_string(),
        parameters: params.as_object().cloned().unwrap_or_default(),
        timeout_seconds: None,
    }
}

/// Every role does its normal work end to end: the registry serves and routes, the runner
/// serves a sync call by name and by subject and runs jobs, the client reads results (one of
/// them from the results object store), the admin uploads and removes a pack and sets a default.
async fn every_role_works_without_a_violation(tls: bool) {
    let s = Secured::start(tls);
    let registry_conn = s.connect("registry").await;
    let runner_conn = s.connect("runner").await;
    let client_conn = s.connect("client").await;
    let admin_conn = s.connect("admin").await;
    let registry = s.registry(&registry_conn).await;
    let runner = s.runner(&runner_conn).await;
    let client = client_conn.client(&s.ns);
    let admin = admin_conn.client(&s.ns);

    eventually(Duration::from_secs(20), "sec.echo to be available", || {
        let client = &client;
        async move {
            client
                .resolve("sec.echo", None, Mode::Sync)
                .await
                .ok()
                .filter(|r| r.key().is_ok())
        }
    })
    .await;

    // The route the registry keeps, in the one read `attune invoke` makes.
    eventually(Duration::from_secs(20), "sec.echo's route", || {
        let client = &client;
        async move {
            client
                .route("sec.echo")
                .await
                .filter(|r| matches!(r.sync, attune_nats::wire::RouteTarget::Version { .. }))
        }
    })
    .await;

    // Sync, by subject (the client resolves from KV) and by name (through the router).
    let reply = client
        .invoke(&request("sec.echo", json!({"message": "by subject"})))
        .await
        .expect("invoke by subject");
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert!(reply.stdout.contains("by subject"), "{}", reply.stdout);
    let reply = client
        .invoke_subject(
            &s.ns.action("sec.echo"),
            &request("sec.echo", json!({"message": "by name"})),
            None,
        )
        .await
        .expect("invoke by name");
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert!(reply.stdout.contains("by name"), "{}", reply.stdout);

    // Async: enqueued by the client, and by name through the router.
    let queued = client
        .enqueue(&request("sec.echo", json!({"message": "queued"})))
        .await
        .expect("enqueue");
    let record = client
        .wait_result(&queued.id, Duration::from_secs(30))
        .await
        .expect("the job's result");
    assert_eq!(record.reply.status, Status::Succeeded, "{record:?}");
    assert!(record.reply.stdout.contains("queued"));
    let stored = client.result(&queued.id).await.unwrap().expect("by id");
    assert_eq!(stored.reply.id, queued.id);

    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_ASYNC, "true");
    let body = serde_json::to_vec(&request("sec.big", json!({}))).unwrap();
    let answer = client_conn
        .nats
        .request_with_headers(s.ns.action("sec.big"), headers, body.into())
        .await
        .expect("the router answers an async call");
    let queued: Enqueued = serde_json::from_slice(&answer.payload).unwrap();
    let record = client
        .wait_result(&queued.id, Duration::from_secs(30))
        .await
        .expect("the big job's result");
    assert_eq!(
        record.reply.status,
        Status::Succeeded,
        "{:?}",
        record.reply.error
    );
    assert!(record.object.is_some(), "too large for a message");
    assert!(
        record.reply.stdout.len() > 1_000_000,
        "the whole reply, read from the object store"
    );
    assert!(!client.results().await.expect("list results").is_empty());

    // Read-only registry operations.
    let runners: RunnerListReply = client.api(RegistryOp::RunnerList, &Empty {}).await.unwrap();
    assert_eq!(runners.runners.len(), 1);

    // Runner: every execution is recorded; a client reads the history.
    // (Boxed, as the whole test is: held inline, its future is large for a test thread's
    // stack in debug builds.)
    let history = Box::pin(eventually(
        Duration::from_secs(20),
        "the execution history",
        || {
            let nats = client_conn.nats.clone();
            let ns = s.ns.clone();
            async move {
                let js = jetstream::new(nats);
                let filter = attune_nats::executions::ExecutionFilter::default();
                attune_nats::executions::list_executions(&js, &ns, &filter, 0, 100)
                    .await
                    .ok()
                    .filter(|r| !r.is_empty())
            }
        },
    ))
    .await;
    assert!(
        history.iter().any(|r| r.action == "sec.echo"),
        "{history:?}"
    );

    // Runner: the sensor's lease is taken and its event published; the admin reads it, a
    // client sees where the sensor runs.
    let events = Box::pin(eventually(
        Duration::from_secs(30),
        "the sensor's event",
        || {
            let nats = admin_conn.nats.clone();
            let ns = s.ns.clone();
            async move {
                let js = async_nats::jetstream::new(nats);
                let mut stream = read_events(&js, &ns, Some("sec.beat"), Window::Last(10))
                    .await
                    .ok()?;
                let mut found = Vec::new();
                while let Some(Ok((_, Ok(e)))) = stream.next().await {
                    found.push(e);
                }
                (!found.is_empty()).then_some(found)
            }
        },
    ))
    .await;
    assert_eq!(events[0].sensor.as_deref(), Some("sec.beat"));
    // The lease's counters follow within a renewal (a second).
    let beat = eventually(
        Duration::from_secs(10),
        "the sensor's lease counting it",
        || {
            let client = &client;
            async move {
                let sensors: SensorListReply = client
                    .api(RegistryOp::SensorList, &Empty {})
                    .await
                    .expect("a client lists sensors");
                sensors
                    .sensors
                    .into_iter()
                    .find(|s| s.lease.as_ref().is_some_and(|l| l.events >= 1))
            }
        },
    )
    .await;
    assert_eq!(beat.sensor.reference, "sec.beat");

    // Admin: re-verification on demand reaches the runner, which answers.
    let found = admin
        .verify(
            &attune_nats::wire::VerifyRequest {
                runtime: Some("shell".into()),
                ..Default::default()
            },
            Duration::from_secs(30),
        )
        .await
        .expect("an admin may ask the runners to verify");
    assert!(found.missing.is_empty(), "{found:?}");
    assert!(found.answers[0].versions[0].verified, "{found:?}");

    // Admin: upload and register a pack, set a default, remove the pack.
    let extra = s.dir.path().join("packs").join("sec2");
    write_pack(&extra, "sec2");
    let (bytes, digest) = attune_nats::archive::pack_dir(&extra).unwrap();
    let files =
        attune_nats::jetstream::open_pack_files(&jetstream::new(admin_conn.nats.clone()), &s.ns)
            .await
            .expect("admin opens the pack files");
    files
        .put(digest.as_str(), &mut bytes.as_slice())
        .await
        .expect("admin uploads");
    let registered: PackRegisterReply = admin
        .api(
            RegistryOp::PackRegister,
            &PackRegisterRequest {
                path: None,
                digest: Some(digest),
            },
        )
        .await
        .expect("admin registers an uploaded pack");
    assert_eq!(registered.pack.reference, "sec2");
    let shell: RuntimeReply = client
        .api(
            RegistryOp::RuntimeGet,
            &attune_nats::api::NameRequest {
                name: "shell".into(),
            },
        )
        .await
        .unwrap();
    let default = shell
        .runtime
        .versions
        .iter()
        .find(|v| v.is_default)
        .expect("shell has a default")
        .version
        .clone();
    let _: RuntimeReply = admin
        .api(
            RegistryOp::VersionSetDefault,
            &SetDefaultRequest {
                runtime: "shell".into(),
                version: default,
            },
        )
        .await
        .expect("admin sets a default");
    let _: serde_json::Value = admin
        .api(
            RegistryOp::PackRemove,
            &RefRequest {
                reference: "sec2".into(),
            },
        )
        .await
        .expect("admin removes a pack");

    runner.drain().await;
    registry.stop().await;
    for conn in [&registry_conn, &runner_conn, &client_conn, &admin_conn] {
        assert!(
            conn.errors().is_empty(),
            "{}: {:?}",
            conn.user,
            conn.errors()
        );
    }
    assert!(
        s.logged_violations().is_empty(),
        "{:#?}",
        s.logged_violations()
    );
}

#[tokio::test]
async fn every_role_works_without_a_violation_over_plain_nats() {
    Box::pin(every_role_works_without_a_violation(false)).await;
}

#[tokio::test]
async fn every_role_works_without_a_violation_over_tls_with_client_certificates() {
    Box::pin(every_role_works_without_a_violation(true)).await;
}

#[tokio::test]
async fn a_client_cannot_change_forge_or_eavesdrop() {
    let s = Secured::start(false);
    let registry_conn = s.connect("registry").await;
    let registry = s.registry(&registry_conn).await;
    let conn = s.connect("client").await;
    let ns = &s.ns;

    // Nothing that changes the registry.
    for op in RegistryOp::ALL.into_iter().filter(|op| op.changes_state()) {
        conn.publish_denied(ns.registry(op)).await;
    }
    // No KV bucket and no object store: not a key, not a chunk.
    for bucket in Bucket::ALL {
        conn.publish_denied(format!("$KV.{}.forged", bucket.name(ns)))
            .await;
    }
    for store in [ns.object_pack_files(), ns.object_results_files()] {
        conn.publish_denied(format!("$O.{store}.M.forged")).await;
    }
    // No JetStream administration.
    conn.publish_denied(format!("$JS.API.STREAM.DELETE.{}", ns.stream_jobs()))
        .await;
    conn.publish_denied(format!("$JS.API.STREAM.CREATE.{}", ns.stream_jobs()))
        .await;
    conn.publish_denied(format!("$JS.API.STREAM.PURGE.KV_{}", ns.kv_runtimes()))
        .await;
    // No deleting the registries' rules consumer, and no events at all: not published
    // (forged triggers) and not read.
    conn.publish_denied(format!(
        "$JS.API.CONSUMER.DELETE.{}.{}",
        ns.stream_events(),
        ns.rules_consumer()
    ))
    .await;
    conn.publish_denied(format!("$JS.API.STREAM.INFO.{}", ns.stream_events()))
        .await;
    conn.publish_denied(ns.events("examples", "tick")).await;
    // No forged results, no serving as a runner or router, no reading others' replies, no
    // making every runner re-verify.
    conn.publish_denied(ns.results("forged")).await;
    conn.publish_denied(ns.runners_verify()).await;
    conn.subscribe_denied(ns.invoke_all(), None).await;
    conn.subscribe_denied(
        ns.invoke("shell", "default"),
        Some(attune_nats::subject::RUNNER_QUEUE_GROUP),
    )
    .await;
    conn.subscribe_denied(
        ns.action_all(),
        Some(attune_nats::subject::ROUTER_QUEUE_GROUP),
    )
    .await;
    for other in ["other", "runner", "registry", "admin"] {
        let inbox = auth::load(&s.auth.dir)
            .unwrap()
            .user(other)
            .unwrap()
            .inbox_prefix
            .clone();
        conn.subscribe_denied(format!("{inbox}.>"), None).await;
    }

    // The server's log names them too (the normal-path tests rely on that to see none).
    let logged = s.logged_violations();
    assert!(
        logged.iter().any(|l| l.contains(&ns.results("forged"))),
        "{logged:#?}"
    );

    // And the registry is as it was: the pack is there, its actions resolve.
    let client = conn.client(ns);
    let pack: PackGetReply = client
        .api(
            RegistryOp::PackGet,
            &RefRequest {
                reference: "sec".into(),
            },
        )
        .await
        .expect("reading is allowed");
    assert_eq!(pack.pack.reference, "sec");
    client.action("sec.echo").await.expect("still registered");
    registry.stop().await;
}

#[tokio::test]
async fn a_runner_cannot_register_packs_or_change_defaults_but_an_admin_can() {
    let s = Secured::start(false);
    let registry_conn = s.connect("registry").await;
    let registry = s.registry(&registry_conn).await;
    let runner = s.connect("runner").await;
    let ns = &s.ns;
    for op in [
        RegistryOp::PackRegister,
        RegistryOp::PackRemove,
        RegistryOp::VersionSetDefault,
        RegistryOp::VersionSetEnabled,
    ] {
        runner.publish_denied(ns.registry(op)).await;
    }
    // A runner serves; it does not route, and it does not write the registry's buckets.
    runner
        .subscribe_denied(
            ns.action_all(),
            Some(attune_nats::subject::ROUTER_QUEUE_GROUP),
        )
        .await;
    runner
        .publish_denied(format!("$KV.{}.forged", ns.kv_actions()))
        .await;
    runner.subscribe_denied(ns.invoke_all(), None).await;

    let admin = s.connect("admin").await;
    let reply: serde_json::Value = admin
        .client(ns)
        .api(
            RegistryOp::VersionSetEnabled,
            &attune_nats::api::SetEnabledRequest {
                runtime: "shell".into(),
                version: "default".into(),
                enabled: false,
            },
        )
        .await
        .expect("an admin may disable a version");
    assert_eq!(reply["runtime"]["versions"][0]["enabled"], false, "{reply}");
    assert!(admin.errors().is_empty(), "{:?}", admin.errors());
    registry.stop().await;
}

#[tokio::test]
async fn a_connection_without_a_known_key_is_refused() {
    let s = Secured::start(false);
    assert!(async_nats::connect(&s.auth.url).await.is_err());
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert!(async_nats::ConnectOptions::new()
        .nkey(stranger)
        .connect(&s.auth.url)
        .await
        .is_err());
}

/// nats-server does not check a push consumer's delivery subject against its creator's publish
/// rights. A client, which may read results through consumers, aims one at `pack.remove` over
/// a stored object whose bytes are a valid removal request (an action's output can shape what is
/// stored). The server delivers it; the registry must see a replay, not a request, and change
/// nothing.
#[tokio::test]
async fn a_client_cannot_reach_a_registry_operation_through_a_push_consumer() {
    use async_nats::jetstream::consumer::{push, AckPolicy, DeliverPolicy};
    let s = Secured::start(false);
    let registry_conn = s.connect("registry").await;
    let registry = s.registry(&registry_conn).await;
    let ns = &s.ns;

    // Stored bytes that read as "remove pack sec" (written with the runner's key, as a large
    // result would be).
    let runner = s.connect("runner").await;
    let removal = serde_json::to_vec(&RefRequest {
        reference: "sec".into(),
    })
    .unwrap();
    attune_nats::jobs::open_results_files(&jetstream::new(runner.nats.clone()), ns)
        .await
        .expect("the runner opens the results store")
        .put("shaped-by-an-action", &mut removal.as_slice())
        .await
        .expect("the runner stores a result");

    // The client aims a push consumer over the chunks at the registry's removal subject.
    let client = s.connect("client").await;
    let js = jetstream::new(client.nats.clone());
    let store = ns.object_results_files();
    let stream = js
        .get_stream(format!("OBJ_{store}"))
        .await
        .expect("a client may open the results store");
    let mut witness = registry_conn
        .nats
        .subscribe(ns.registry(RegistryOp::PackRemove))
        .await
        .unwrap();
    registry_conn.nats.flush().await.unwrap();
    let _consumer = stream
        .create_consumer(push::Config {
            deliver_subject: ns.registry(RegistryOp::PackRemove),
            filter_subject: format!("$O.{store}.C.>"),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("nats-server lets the client create it");
    // A witness on the registry's own connection sees what the server delivers there.
    let delivered = tokio::time::timeout(Duration::from_secs(10), witness.next())
        .await
        .expect("the server delivers the chunk to pack.remove")
        .expect("the witness subscription is open");
    assert_eq!(delivered.payload.as_ref(), removal.as_slice());
    assert!(
        delivered
            .reply
            .as_deref()
            .is_some_and(|r| r.starts_with(attune_nats::subject::JS_ACK_PREFIX)),
        "a replay carries an acknowledgement subject: {:?}",
        delivered.reply
    );
    // Give the registry time to act on it, had it taken it for a request.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pack: PackGetReply = client
        .client(ns)
        .api(
            RegistryOp::PackGet,
            &RefRequest {
                reference: "sec".into(),
            },
        )
        .await
        .expect("pack sec is still registered");
    assert_eq!(pack.pack.reference, "sec");
    registry.stop().await;
}
