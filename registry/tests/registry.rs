//! The registry service against a real nats-server: registration and KV publication, rejected
//! packs, restarts and wiped JetStream, availability from heartbeats, the API's answers, and the
//! by-name router.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use attune_nats::api::{
    ActionListReply, ActionListRequest, Empty, PackGetReply, PackListReply, PackRegisterReply,
    PackRegisterRequest, PackRemoveReply, RefRequest, ResolveReply, ResolveRequest,
    RunnerListReply, RuntimeReply, SetDefaultRequest, SetEnabledRequest,
};
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::subject::{HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, REGISTRY_SERVICE};
use attune_nats::version::Verdict;
use attune_nats::wire::{ApiError, VerifiedVersion};
use attune_nats::{
    InvocationReply, Namespace, PackMeta, RegistryOp, RunnerHeartbeat, Runtime, Status,
};
use attune_registry::{start, RunningRegistry, ServeConfig};
use attune_testkit::{eventually, hostile_archives, workspace_root, NatsServer};
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

const WAIT: Duration = Duration::from_secs(15);

/// A nats-server, a data dir, and (while running) a registry.
struct Fixture {
    _server: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    ns: Namespace,
    data: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        let server = NatsServer::start();
        let client = server.connect().await;
        Fixture {
            js: jetstream::new(client.clone()),
            client,
            _server: server,
            ns: Namespace::default(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    async fn start(&self, packs: &[PathBuf]) -> RunningRegistry {
        self.start_allowing(packs, &[]).await
    }

    /// A registry that also allows `pack.register` by path inside `allow`.
    async fn start_allowing(&self, packs: &[PathBuf], allow: &[PathBuf]) -> RunningRegistry {
        let mut config = ServeConfig::new(
            self.data.path().to_path_buf(),
            packs.to_vec(),
            self.ns.clone(),
        );
        config.allow_register_from = allow.to_vec();
        config.check_interval = Duration::from_millis(200);
        start(config, self.client.clone())
            .await
            .expect("registry starts")
    }

    async fn kv(&self, bucket: Bucket) -> kv::Store {
        open_kv(&self.js, &self.ns, bucket).await.unwrap()
    }

    /// Every key and JSON value of a bucket.
    async fn kv_all(&self, bucket: Bucket) -> BTreeMap<String, serde_json::Value> {
        let kv = self.kv(bucket).await;
        let keys: Vec<String> = kv.keys().await.unwrap().try_collect().await.unwrap();
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = kv.get(&k).await.unwrap() {
                out.insert(k, serde_json::from_slice(&v).unwrap());
            }
        }
        out
    }

    async fn runtime_kv(&self, name: &str) -> Option<Runtime> {
        let v = self.kv(Bucket::Runtimes).await.get(name).await.unwrap()?;
        Some(serde_json::from_slice(&v).unwrap())
    }

    /// Calls one API operation; `Err` carries the error body and the service error headers.
    async fn api<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        op: RegistryOp,
        req: &Req,
    ) -> Result<Rep, (ApiError, String, String)> {
        let msg = self
            .client
            .request(
                self.ns.registry(op),
                serde_json::to_vec(req).unwrap().into(),
            )
            .await
            .expect("the registry answers");
        if let Ok(err) = serde_json::from_slice::<ApiError>(&msg.payload) {
            let headers = msg.headers.expect("errors carry headers");
            let get = |h: &str| headers.get(h).map(|v| v.to_string()).unwrap_or_default();
            return Err((
                err,
                get(HEADER_SERVICE_ERROR_CODE),
                get(HEADER_SERVICE_ERROR),
            ));
        }
        Ok(serde_json::from_slice(&msg.payload).expect("reply parses"))
    }

    async fn heartbeat(&self, id: &str, versions: &[(&str, &str)]) {
        let now = time::OffsetDateTime::now_utc();
        let beat = RunnerHeartbeat {
            id: id.into(),
            host: "test-host".into(),
            pid: 1,
            versions: versions
                .iter()
                .map(|(r, v)| VerifiedVersion {
                    runtime: r.to_string(),
                    version: v.to_string(),
                    detected_version: None,
                    binary: format!("/usr/bin/{r}{v}"),
                })
                .collect(),
            capacity: 4,
            in_flight: 0,
            started_at: now,
            updated_at: now,
            draining: false,
            unknown_runtimes: Vec::new(),
            records_dropped: 0,
            warm_pools: Vec::new(),
        };
        self.kv(Bucket::Runners)
            .await
            .put(id, serde_json::to_vec(&beat).unwrap().into())
            .await
            .unwrap();
    }

    async fn availability(&self, runtime: &str) -> Vec<(String, bool)> {
        self.runtime_kv(runtime)
            .await
            .map(|r| {
                r.versions
                    .iter()
                    .map(|v| (v.version.clone(), v.available))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn shipped(name: &str) -> PathBuf {
    workspace_root().join("packs").join(name)
}

fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
}

const TOOL_V1_V2: &str = r#"ref: demo.tool
name: tool
versions:
  - version: "1.0"
    is_default: true
    execution_config: { interpreter: { binary: tool1 } }
  - version: "2.0"
    execution_config: { interpreter: { binary: tool2 } }
"#;

const TOOL_V1: &str = r#"ref: demo.tool
name: tool
versions:
  - version: "1.0"
    is_default: true
    execution_config: { interpreter: { binary: tool1 } }
"#;

/// A pack `demo` with its own runtime `tool` (1.0, 2.0) and actions `a` and `b`.
fn demo_pack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("pack.yaml", "ref: demo\nversion: 1.0.0\n"),
            ("runtimes/tool.yaml", TOOL_V1_V2),
            (
                "actions/a.yaml",
                "name: a\nrunner_type: tool\nentry_point: a.sh\n",
            ),
            ("actions/a.sh", "echo a\n"),
            (
                "actions/b.yaml",
                "name: b\nrunner_type: tool\nentry_point: b.sh\n",
            ),
            ("actions/b.sh", "echo b\n"),
        ],
    );
    dir
}

fn register_path(dir: &Path) -> PackRegisterRequest {
    PackRegisterRequest {
        path: Some(dir.display().to_string()),
        digest: None,
    }
}

#[tokio::test]
async fn start_up_publishes_the_shipped_packs_to_kv_and_the_object_store() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core"), shipped("examples")]).await;

    let runtimes = fx.kv_all(Bucket::Runtimes).await;
    assert_eq!(
        runtimes.keys().collect::<Vec<_>>(),
        ["node", "python", "shell"]
    );
    let python: Runtime = serde_json::from_value(runtimes["python"].clone()).unwrap();
    let versions: Vec<(&str, bool)> = python
        .versions
        .iter()
        .map(|v| (v.version.as_str(), v.is_default))
        .collect();
    assert_eq!(versions, [("3.11", false), ("3.12", true), ("3.13", false)]);
    let shell: Runtime = serde_json::from_value(runtimes["shell"].clone()).unwrap();
    assert_eq!(shell.versions[0].version, "default");

    let actions = fx.kv_all(Bucket::Actions).await;
    assert!(actions.contains_key("core.echo") && actions.contains_key("examples.greet"));

    let packs = fx.kv_all(Bucket::Packs).await;
    let core: PackMeta = serde_json::from_value(packs["core"].clone()).unwrap();
    assert!(core.digest.starts_with("sha256-"));
    let files = fx
        .js
        .get_object_store(fx.ns.object_pack_files())
        .await
        .unwrap();
    let info = files.info(&core.digest).await.expect("archive uploaded");
    assert!(info.size > 0);

    let listed: PackListReply = fx.api(RegistryOp::PackList, &Empty {}).await.unwrap();
    let refs: Vec<&str> = listed.packs.iter().map(|p| p.reference.as_str()).collect();
    assert_eq!(refs, ["core", "examples"]);
    reg.stop().await;
}

#[tokio::test]
async fn re_registering_a_pack_deletes_what_its_yaml_no_longer_has() {
    let fx = Fixture::new().await;
    let demo = demo_pack();
    let reg = fx
        .start_allowing(&[shipped("core")], &[demo.path().to_path_buf()])
        .await;
    let first: PackRegisterReply = fx
        .api(RegistryOp::PackRegister, &register_path(demo.path()))
        .await
        .unwrap();
    assert_eq!(first.pack.actions, ["demo.a", "demo.b"]);
    assert_eq!(fx.availability("tool").await.len(), 2);

    fs::write(demo.path().join("runtimes/tool.yaml"), TOOL_V1).unwrap();
    fs::remove_file(demo.path().join("actions/b.yaml")).unwrap();
    let second: PackRegisterReply = fx
        .api(RegistryOp::PackRegister, &register_path(demo.path()))
        .await
        .unwrap();

    assert_ne!(first.pack.digest, second.pack.digest);
    let tool = fx.runtime_kv("tool").await.unwrap();
    let versions: Vec<&str> = tool.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["1.0"]);
    let actions = fx.kv_all(Bucket::Actions).await;
    assert!(actions.contains_key("demo.a"));
    assert!(!actions.contains_key("demo.b"), "stale action key deleted");
    let packs = fx.kv_all(Bucket::Packs).await;
    assert_eq!(packs["demo"]["digest"], second.pack.digest.as_str());
    reg.stop().await;
}

#[tokio::test]
async fn a_rejected_pack_lists_every_problem_and_changes_nothing() {
    let fx = Fixture::new().await;
    let demo = demo_pack();
    let reg = fx
        .start_allowing(&[shipped("core")], &[demo.path().to_path_buf()])
        .await;
    let _: PackRegisterReply = fx
        .api(RegistryOp::PackRegister, &register_path(demo.path()))
        .await
        .unwrap();
    let before = (
        fx.kv_all(Bucket::Runtimes).await,
        fx.kv_all(Bucket::Actions).await,
        fx.kv_all(Bucket::Packs).await,
    );

    // Two mistakes: an unknown runtime and an invalid constraint; and a removed action that must
    // not be deleted because the pack as a whole is refused.
    fs::remove_file(demo.path().join("actions/b.yaml")).unwrap();
    write_files(
        demo.path(),
        &[(
            "actions/a.yaml",
            "name: a\nrunner_type: cobol\nentry_point: a.sh\n",
        )],
    );
    write_files(
        demo.path(),
        &[(
            "actions/c.yaml",
            "name: c\nrunner_type: python\nentry_point: a.sh\nruntime_version: \">=banana\"\n",
        )],
    );
    let (err, code, header) = fx
        .api::<_, PackRegisterReply>(RegistryOp::PackRegister, &register_path(demo.path()))
        .await
        .unwrap_err();

    assert_eq!(err.error.code, 422);
    assert_eq!(code, "422");
    assert!(header.contains("rejected"), "{header}");
    assert_eq!(err.error.details.len(), 2, "{:?}", err.error.details);
    assert!(
        err.error.details[0].contains("actions/a.yaml:2:"),
        "{:?}",
        err.error.details
    );
    assert!(
        err.error.details[1].contains("actions/c.yaml:4:"),
        "{:?}",
        err.error.details
    );
    let after = (
        fx.kv_all(Bucket::Runtimes).await,
        fx.kv_all(Bucket::Actions).await,
        fx.kv_all(Bucket::Packs).await,
    );
    assert_eq!(before, after);
    reg.stop().await;
}

#[tokio::test]
async fn removing_a_pack_deletes_its_keys_but_not_a_runtime_others_use() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core"), shipped("examples")]).await;

    let (err, code, _) = fx
        .api::<_, PackRemoveReply>(
            RegistryOp::PackRemove,
            &RefRequest {
                reference: "core".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!((err.error.code, code.as_str()), (409, "409"));
    assert!(
        err.error.message.contains("examples."),
        "{}",
        err.error.message
    );
    assert!(fx.runtime_kv("python").await.is_some());

    let removed: PackRemoveReply = fx
        .api(
            RegistryOp::PackRemove,
            &RefRequest {
                reference: "examples".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(removed.removed, "examples");
    let actions = fx.kv_all(Bucket::Actions).await;
    assert!(
        actions.keys().all(|k| k.starts_with("core.")),
        "{actions:?}"
    );
    assert!(!fx.kv_all(Bucket::Packs).await.contains_key("examples"));

    let (err, _, _) = fx
        .api::<_, PackGetReply>(
            RegistryOp::PackGet,
            &RefRequest {
                reference: "examples".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, 404);
    reg.stop().await;
}

#[tokio::test]
async fn an_uploaded_archive_registers_like_a_directory() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    let demo = demo_pack();
    let (bytes, digest) = attune_nats::archive::pack_dir(demo.path()).unwrap();
    let files = fx
        .js
        .get_object_store(fx.ns.object_pack_files())
        .await
        .unwrap();
    files
        .put(digest.as_str(), &mut bytes.as_slice())
        .await
        .unwrap();

    let reply: PackRegisterReply = fx
        .api(
            RegistryOp::PackRegister,
            &PackRegisterRequest {
                path: None,
                digest: Some(digest.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.pack.reference, "demo");
    assert_eq!(reply.pack.digest, digest);
    let got: PackGetReply = fx
        .api(
            RegistryOp::PackGet,
            &RefRequest {
                reference: "demo".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(got.runtimes[0].name, "tool");
    assert_eq!(got.actions.len(), 2);
    reg.stop().await;
}

impl Fixture {
    /// Puts `bytes` in the pack files store and registers them by digest.
    async fn upload(&self, bytes: &[u8]) -> Result<PackRegisterReply, (ApiError, String, String)> {
        let digest = attune_nats::archive::digest(bytes);
        let files = self
            .js
            .get_object_store(self.ns.object_pack_files())
            .await
            .unwrap();
        files.put(digest.as_str(), &mut &bytes[..]).await.unwrap();
        self.api(
            RegistryOp::PackRegister,
            &PackRegisterRequest {
                path: None,
                digest: Some(digest),
            },
        )
        .await
    }

    /// What is registered: the packs, runtimes and actions buckets.
    async fn registered(&self) -> Vec<BTreeMap<String, serde_json::Value>> {
        let mut all = Vec::new();
        for bucket in [Bucket::Packs, Bucket::Runtimes, Bucket::Actions] {
            all.push(self.kv_all(bucket).await);
        }
        all
    }
}

#[tokio::test]
async fn hostile_archives_are_refused_and_the_registry_keeps_serving() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    let before = fx.registered().await;
    let cases = hostile_archives("/tmp/attune-registry-evil");
    for (case, bytes, expected) in cases {
        let (err, code, _) = fx.upload(&bytes).await.expect_err(case);
        assert_eq!(err.error.code, 400, "{case}: {err:?}");
        assert_eq!(code, "400", "{case}");
        assert!(err.error.message.contains(expected), "{case}: {err:?}");
    }
    assert!(!fx.data.path().join("evil").exists());
    assert!(!Path::new("/tmp/attune-registry-evil").exists());
    assert_eq!(fx.registered().await, before, "nothing registered changed");

    // Still serving: a valid upload registers.
    let demo = demo_pack();
    let (bytes, _) = attune_nats::archive::pack_dir(demo.path()).unwrap();
    let reply = fx.upload(&bytes).await.unwrap();
    assert_eq!(reply.pack.reference, "demo");
    reg.stop().await;
}

/// A hostile pack to upload: what it is, the files it adds, and the problem expected.
type HostilePack = (&'static str, Vec<(&'static str, String)>, &'static str);

#[tokio::test]
async fn uploaded_packs_with_hostile_yaml_or_names_are_rejected_whole() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    let before = fx.registered().await;
    let action = |extra: &str| format!("name: a\nrunner_type: shell\nentry_point: a.sh\n{extra}");
    let laughs = action(&format!(
        "x: &a [{}]\ny: &b [{}]\nz: [{}]\n",
        "lol,".repeat(2000),
        "*a,".repeat(1000),
        "*b,".repeat(1000)
    ));
    let cases: Vec<HostilePack> = vec![
        (
            "YAML billion laughs",
            vec![("actions/a.yaml", laughs)],
            "actions/a.yaml: YAML expands to more than",
        ),
        (
            "runtime named as an absolute path",
            vec![(
                "runtimes/x.yaml",
                "name: /tmp/x\nexecution_config: { interpreter: { binary: sh } }\n".to_string(),
            )],
            "runtime name: \"/tmp/x\" has the character '/'",
        ),
        (
            "action name with a subject wildcard",
            vec![(
                "actions/a.yaml",
                action("").replace("name: a", "name: \"a.>\""),
            )],
            "action name: \"a.>\" has the character '.'",
        ),
        (
            "parameter name that is a shell command",
            vec![(
                "actions/a.yaml",
                action("parameters:\n  \"x; touch pwned; y\": {type: string}\n"),
            )],
            "parameter name: \"x; touch pwned; y\" has the character ';'",
        ),
        (
            "reserved parameter name",
            vec![(
                "actions/a.yaml",
                action("parameters:\n  LD_PRELOAD: {type: string}\n"),
            )],
            "parameter name: \"LD_PRELOAD\" is reserved",
        ),
    ];
    for (case, files, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<(&str, &str)> = vec![
            ("pack.yaml", "ref: evil\nversion: 1.0.0\n"),
            ("actions/a.sh", "echo a\n"),
        ];
        all.extend(files.iter().map(|(p, c)| (*p, c.as_str())));
        write_files(dir.path(), &all);
        let (bytes, _) = attune_nats::archive::pack_dir(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let (err, code, _) = fx.upload(&bytes).await.expect_err(case);
        assert!(started.elapsed() < Duration::from_secs(5), "{case}");
        assert_eq!(err.error.code, 422, "{case}: {err:?}");
        assert_eq!(code, "422", "{case}");
        assert!(
            err.error.details.iter().any(|d| d.contains(expected)),
            "{case}: {:?}",
            err.error.details
        );
    }
    assert_eq!(fx.registered().await, before, "nothing registered changed");
    let echo: attune_nats::api::ActionReply = fx
        .api(
            RegistryOp::ActionGet,
            &RefRequest {
                reference: "core.echo".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(echo.action.reference, "core.echo");
    reg.stop().await;
}

#[tokio::test]
async fn a_restarted_registry_republishes_kv_from_its_store() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core"), shipped("examples")]).await;
    let published = fx.kv_all(Bucket::Actions).await;
    reg.stop().await;

    for bucket in [Bucket::Runtimes, Bucket::Actions, Bucket::Packs] {
        fx.js.delete_key_value(bucket.name(&fx.ns)).await.unwrap();
    }
    fx.js
        .delete_object_store(fx.ns.object_pack_files())
        .await
        .unwrap();

    // No --packs this time: everything comes from registry.redb.
    let reg = fx.start(&[]).await;
    assert_eq!(fx.kv_all(Bucket::Actions).await, published);
    let core = fx.kv_all(Bucket::Packs).await["core"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let files = fx
        .js
        .get_object_store(fx.ns.object_pack_files())
        .await
        .unwrap();
    assert!(
        files.info(&core).await.is_ok(),
        "archive re-uploaded from redb"
    );
    reg.stop().await;
}

#[tokio::test]
async fn a_wiped_jetstream_is_republished_while_the_registry_runs() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    for bucket in [
        Bucket::Runtimes,
        Bucket::Actions,
        Bucket::Packs,
        Bucket::Runners,
    ] {
        fx.js.delete_key_value(bucket.name(&fx.ns)).await.unwrap();
    }
    fx.js
        .delete_object_store(fx.ns.object_pack_files())
        .await
        .unwrap();

    eventually(WAIT, "runtimes republished", || async {
        let names = fx
            .js
            .get_key_value(fx.ns.kv_runtimes())
            .await
            .ok()?
            .keys()
            .await
            .ok()?
            .try_collect::<Vec<String>>()
            .await
            .ok()?;
        (names.len() == 3).then_some(())
    })
    .await;
    eventually(WAIT, "pack archive re-uploaded", || async {
        let files = fx
            .js
            .get_object_store(fx.ns.object_pack_files())
            .await
            .ok()?;
        let digest = fx
            .js
            .get_key_value(fx.ns.kv_packs())
            .await
            .ok()?
            .get("core")
            .await
            .ok()??;
        let meta: PackMeta = serde_json::from_slice(&digest).ok()?;
        files.info(&meta.digest).await.ok()
    })
    .await;

    // The heartbeat watch was re-created on the new runners bucket.
    fx.heartbeat("r1", &[("python", "3.13")]).await;
    eventually(WAIT, "3.13 available after the wipe", || async {
        fx.availability("python")
            .await
            .contains(&("3.13".to_string(), true))
            .then_some(())
    })
    .await;
    reg.stop().await;
}

#[tokio::test]
async fn availability_follows_heartbeats_appearing_draining_and_expiring() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    assert!(fx.availability("python").await.iter().all(|(_, a)| !a));

    fx.heartbeat("r1", &[("python", "3.13")]).await;
    fx.heartbeat("r2", &[("python", "3.11")]).await;
    eventually(WAIT, "3.11 and 3.13 available", || async {
        let a = fx.availability("python").await;
        (a == [
            ("3.11".to_string(), true),
            ("3.12".to_string(), false),
            ("3.13".to_string(), true),
        ])
        .then_some(())
    })
    .await;
    let python = fx.runtime_kv("python").await.unwrap();
    assert!(python.version("3.13").unwrap().verified_at.is_some());
    let runners: RunnerListReply = fx.api(RegistryOp::RunnerList, &Empty {}).await.unwrap();
    let ids: Vec<&str> = runners.runners.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);

    // A clean drain deletes the key.
    fx.kv(Bucket::Runners).await.delete("r2").await.unwrap();
    eventually(WAIT, "3.11 unavailable after r2 drained", || async {
        (!fx.availability("python")
            .await
            .contains(&("3.11".to_string(), true)))
        .then_some(())
    })
    .await;

    // r1 stops heartbeating: its entry expires without a delete marker.
    eventually(WAIT, "3.13 unavailable after r1's TTL", || async {
        fx.availability("python")
            .await
            .iter()
            .all(|(_, a)| !a)
            .then_some(())
    })
    .await;
    let runners: RunnerListReply = fx.api(RegistryOp::RunnerList, &Empty {}).await.unwrap();
    assert!(runners.runners.is_empty());
    reg.stop().await;
}

#[tokio::test]
async fn resolve_explains_the_choice_and_operator_choices_apply_at_once() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    fx.heartbeat(
        "r1",
        &[("python", "3.11"), ("python", "3.12"), ("python", "3.13")],
    )
    .await;
    let resolve = |action: &str, constraint: Option<&str>| ResolveRequest {
        action: action.into(),
        constraint: constraint.map(str::to_string),
    };
    let r: ResolveReply = eventually(WAIT, "py_info resolves to 3.13", || async {
        let r: ResolveReply = fx
            .api(RegistryOp::Resolve, &resolve("core.py_info", None))
            .await
            .ok()?;
        (r.version.as_deref() == Some("3.13")).then_some(r)
    })
    .await;
    assert_eq!(r.constraint, ">=3.12");
    assert_eq!(r.subject.as_deref(), Some("attune.invoke.python.3.13"));
    let verdicts: Vec<(&str, Verdict)> = r
        .candidates
        .iter()
        .map(|c| (c.version.as_str(), c.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("3.11", Verdict::DoesNotSatisfy),
            ("3.12", Verdict::NotHighest),
            ("3.13", Verdict::Chosen)
        ]
    );

    // Without a constraint the default wins; moving the default moves the choice immediately.
    let r: ResolveReply = fx
        .api(RegistryOp::Resolve, &resolve("core.py_echo", None))
        .await
        .unwrap();
    assert_eq!(r.version.as_deref(), Some("3.12"));
    let set: RuntimeReply = fx
        .api(
            RegistryOp::VersionSetDefault,
            &SetDefaultRequest {
                runtime: "python3".into(),
                version: "3.11".into(),
            },
        )
        .await
        .unwrap();
    let defaults: Vec<&str> = set
        .runtime
        .versions
        .iter()
        .filter(|v| v.is_default)
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(defaults, ["3.11"], "exactly one default");
    let r: ResolveReply = fx
        .api(RegistryOp::Resolve, &resolve("core.py_echo", None))
        .await
        .unwrap();
    assert_eq!(r.version.as_deref(), Some("3.11"));

    // Disabling 3.13 makes py_info fall back to 3.12 at once.
    let _: RuntimeReply = fx
        .api(
            RegistryOp::VersionSetEnabled,
            &SetEnabledRequest {
                runtime: "python".into(),
                version: "3.13".into(),
                enabled: false,
            },
        )
        .await
        .unwrap();
    let r: ResolveReply = fx
        .api(RegistryOp::Resolve, &resolve("core.py_info", None))
        .await
        .unwrap();
    assert_eq!(r.version.as_deref(), Some("3.12"));

    // A "what if" constraint nothing satisfies is an answer with an error, not an API error.
    let r: ResolveReply = fx
        .api(
            RegistryOp::Resolve,
            &resolve("core.py_info", Some(">=3.14")),
        )
        .await
        .unwrap();
    assert_eq!(r.version, None);
    assert_eq!(
        r.error.as_deref(),
        Some("no available python version satisfies \">=3.14\" (registered: 3.11, 3.12, 3.13; available: 3.11, 3.12; disabled: 3.13)")
    );
    let (err, code, _) = fx
        .api::<_, ResolveReply>(RegistryOp::Resolve, &resolve("core.nope", None))
        .await
        .unwrap_err();
    assert_eq!((err.error.code, code.as_str()), (404, "404"));
    reg.stop().await;

    // Operator choices outlast a restart that re-registers the pack from its directory.
    let reg = fx.start(&[shipped("core")]).await;
    let python = fx.runtime_kv("python").await.unwrap();
    assert!(python.version("3.11").unwrap().is_default);
    assert!(!python.version("3.12").unwrap().is_default);
    assert!(!python.version("3.13").unwrap().enabled);
    reg.stop().await;
}

#[tokio::test]
async fn api_lists_filter_and_report_bad_requests() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core"), shipped("examples")]).await;
    let only: ActionListReply = fx
        .api(
            RegistryOp::ActionList,
            &ActionListRequest {
                pack: Some("examples".into()),
            },
        )
        .await
        .unwrap();
    assert!(!only.actions.is_empty());
    assert!(only.actions.iter().all(|a| a.pack == "examples"));

    let (err, code, _) = fx
        .api::<_, RuntimeReply>(RegistryOp::RuntimeGet, &serde_json::json!({"nom": "x"}))
        .await
        .unwrap_err();
    assert_eq!((err.error.code, code.as_str()), (400, "400"));
    let (err, _, _) = fx
        .api::<_, RuntimeReply>(
            RegistryOp::VersionSetDefault,
            &SetDefaultRequest {
                runtime: "python".into(),
                version: "2.7".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.error.code, 404);
    assert!(err.error.message.contains("2.7"), "{}", err.error.message);

    // Discoverable as a NATS micro service, one endpoint per operation.
    let info = fx
        .client
        .request(format!("$SRV.INFO.{REGISTRY_SERVICE}"), "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "attune-registry");
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert_eq!(subjects.len(), RegistryOp::ALL.len());
    assert!(subjects.contains(&"attune.registry.version.set_default"));
    reg.stop().await;
}

#[tokio::test]
async fn the_router_forwards_to_the_version_subject_and_the_runner_answers_the_requester() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;

    // A stub runner on python 3.13: it echoes the header it got and the body's action.
    let mut stub = fx
        .client
        .queue_subscribe("attune.invoke.python.3.13", "attune".into())
        .await
        .unwrap();
    let stub_client = fx.client.clone();
    tokio::spawn(async move {
        while let Some(msg) = stub.next().await {
            let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            let trace = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("X-Trace").map(|v| v.to_string()))
                .unwrap_or_default();
            let mut reply = InvocationReply::rejected("x", body["action"].as_str().unwrap(), "");
            reply.status = Status::Succeeded;
            reply.error = None;
            reply.stdout = format!("served on {} trace={trace}", msg.subject);
            stub_client
                .publish(
                    msg.reply.unwrap(),
                    serde_json::to_vec(&reply).unwrap().into(),
                )
                .await
                .unwrap();
        }
    });
    fx.client.flush().await.unwrap();
    fx.heartbeat("r1", &[("python", "3.13")]).await;
    eventually(WAIT, "py_info routable", || async {
        let r: ResolveReply = fx
            .api(
                RegistryOp::Resolve,
                &ResolveRequest {
                    action: "core.py_info".into(),
                    constraint: None,
                },
            )
            .await
            .ok()?;
        r.subject.map(|_| ())
    })
    .await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Trace", "t-42");
    // The body leaves out `action`: the subject names it, and the router fills it in.
    let msg = fx
        .client
        .request_with_headers("attune.action.core.py_info", headers, "{}".into())
        .await
        .unwrap();
    let reply: InvocationReply = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(reply.status, Status::Succeeded);
    assert_eq!(reply.action, "core.py_info");
    assert_eq!(
        reply.stdout,
        "served on attune.invoke.python.3.13 trace=t-42"
    );
    reg.stop().await;
}

#[tokio::test]
async fn the_router_rejects_at_once_what_nobody_can_serve() {
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    let ask = |subject: &'static str| {
        let client = fx.client.clone();
        async move {
            // The body may leave the action out: the subject names it.
            let msg = client
                .request(subject, r#"{"id":"req-1"}"#.into())
                .await
                .unwrap();
            let reply: InvocationReply = serde_json::from_slice(&msg.payload).unwrap();
            let code = msg
                .headers
                .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE).map(|v| v.to_string()));
            (reply, code)
        }
    };

    let (reply, code) = ask("attune.action.core.nope").await;
    assert_eq!(
        (reply.status, reply.id.as_str()),
        (Status::Rejected, "req-1")
    );
    assert_eq!(code.as_deref(), Some("404"));

    let (reply, code) = ask("attune.action.core.py_info").await;
    assert_eq!(reply.status, Status::Rejected);
    assert_eq!(code.as_deref(), Some("503"));
    assert_eq!(
        reply.error.as_deref(),
        Some("no available python version satisfies \">=3.12\" (registered: 3.11, 3.12, 3.13; available: none)")
    );

    // A body naming another action than the subject's is refused, whatever the subject.
    let msg = fx
        .client
        .request(
            "attune.action.core.echo",
            r#"{"id":"req-2","action":"core.noop"}"#.into(),
        )
        .await
        .unwrap();
    let reply: InvocationReply = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        (reply.status, reply.id.as_str()),
        (Status::Rejected, "req-2")
    );
    let code = msg
        .headers
        .and_then(|h| h.get(HEADER_SERVICE_ERROR_CODE).map(|v| v.to_string()));
    assert_eq!(code.as_deref(), Some("400"));
    assert!(reply
        .error
        .unwrap()
        .contains("subject is for \"core.echo\""));
    reg.stop().await;
}

#[tokio::test]
async fn each_action_has_its_route_in_kv_rewritten_only_when_it_changes() {
    use attune_nats::wire::{ActionRoute, RouteTarget};
    let fx = Fixture::new().await;
    let reg = fx.start(&[shipped("core")]).await;
    let client = attune_nats::client::Client::new(fx.client.clone(), fx.ns.clone());
    let routes = fx.kv(Bucket::Routes).await;
    let route = |r: Option<ActionRoute>| r.map(|r| (r.sync, r.job));

    // No runner: a sync call is refused in the resolver's words; a job waits for the version
    // the resolver would pick with every enabled version up (the newest that fits).
    let refused = eventually(WAIT, "the route of core.py_info", || async {
        client.route("core.py_info").await
    })
    .await;
    assert_eq!(
        route(Some(refused.clone())).unwrap().0,
        RouteTarget::Refused {
            message: "no available python version satisfies \">=3.12\" (registered: 3.11, 3.12, 3.13; available: none)".into()
        }
    );
    assert!(
        matches!(&refused.job, RouteTarget::Version { version, subject, .. }
        if version == "3.13" && subject == &attune_nats::VersionKey::new("python", "3.13").jobs_subject(&fx.ns))
    );
    assert_eq!(
        refused.parameters,
        client.action("core.py_info").await.unwrap().parameters
    );

    // A runner serving 3.13: the route moves there, once.
    fx.heartbeat("r1", &[("python", "3.13")]).await;
    let moved = eventually(WAIT, "the route to follow the runner", || async {
        client.route("core.py_info").await.filter(|r| {
            matches!(&r.sync,
            RouteTarget::Version { version, subject, .. }
            if version == "3.13" && subject == &fx.ns.invoke("python", "3.13"))
        })
    })
    .await;
    let revision = routes
        .entry("core.py_info")
        .await
        .unwrap()
        .unwrap()
        .revision;
    // Heartbeats that change nothing rewrite nothing.
    for _ in 0..3 {
        fx.heartbeat("r1", &[("python", "3.13")]).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let entry = routes.entry("core.py_info").await.unwrap().unwrap();
    assert_eq!(entry.revision, revision, "rewritten without a change");
    assert_eq!(
        serde_json::from_slice::<ActionRoute>(&entry.value).unwrap(),
        moved
    );

    // An unknown action has no route: the client resolves the long way and says why.
    assert!(client.route("core.nope").await.is_none());
    assert!(client.route("not a ref").await.is_none());
    reg.stop().await;
}

/// A registry whose buckets JetStream cannot place (three replicas on a single server stands in
/// for a cluster still forming) waits and retries instead of exiting, and a shutdown ends the
/// wait cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_waits_for_jetstream_to_take_its_buckets_and_stops_on_shutdown() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(
        dir.path().join("data"),
        vec![workspace_root().join("packs/core")],
        Namespace::default(),
    );
    config.store.replicas = 3;
    let nats = server.connect().await;
    let still_waiting =
        tokio::time::timeout(Duration::from_secs(3), start(config.clone(), nats.clone())).await;
    assert!(
        still_waiting.is_err(),
        "start neither failed nor served while it cannot publish"
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(attune_registry::serve(config, nats, async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("a shutdown ends the wait")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}
