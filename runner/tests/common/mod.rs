//! A real nats-server with the buckets, packs and runtimes a runner reads, provisioned by the
//! registry's own set-up step and published the way the registry would, plus a runner configured
//! with an isolated `PATH` of stub interpreters.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use async_nats::HeaderMap;
use attune_nats::jetstream::StoreOptions;
use attune_nats::{Action, InvocationReply, Namespace, PackMeta, Runtime};
use attune_runner::RunnerConfig;
use attune_testkit::{NatsServer, StubInterpreters};
use serde_json::{json, Value};

pub struct Fixture {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub ns: Namespace,
    pub runtimes: kv::Store,
    pub actions: kv::Store,
    pub packs: kv::Store,
    pub runners: kv::Store,
    pub pack_files: ObjectStore,
    pub stubs: StubInterpreters,
    pub dir: tempfile::TempDir,
}

/// The shell runtime as the core pack defines it (dash has no `--version`, so it verifies with a
/// command that must print `ok`).
pub fn shell_runtime() -> Value {
    json!({
        "ref": "core.shell", "name": "shell", "aliases": ["sh", "bash"],
        "execution_config": {"interpreter": {"binary": "sh"}},
        "distributions": {"verification": {"commands": [
            {"binary": "sh", "args": ["-c", "echo ok"], "pattern": "^ok"}]}}
    })
}

/// A python version verified by `python<version> --version`, with no environment.
pub fn python_version(version: &str, is_default: bool) -> Value {
    let binary = format!("python{version}");
    json!({
        "version": version, "is_default": is_default,
        "distributions": {"verification": {"commands": [
            {"binary": binary, "args": ["--version"], "pattern": format!("Python {}\\.", version.replace('.', "\\."))}]}},
        "execution_config": {"interpreter": {"binary": binary, "args": ["-u"]}}
    })
}

impl Fixture {
    pub async fn new() -> Self {
        let server = NatsServer::start();
        let client = server.connect().await;
        let js = jetstream::new(client.clone());
        let ns = Namespace::default();
        // Runners only open what the registry created: its set-up step, as `registry serve` runs it.
        let all = attune_registry::provision(&js, &ns, &StoreOptions::default())
            .await
            .unwrap();
        Fixture {
            runtimes: all.runtimes,
            actions: all.actions,
            packs: all.packs,
            runners: all.runners,
            pack_files: all.pack_files,
            server,
            client,
            ns,
            stubs: StubInterpreters::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A config with an isolated PATH (stubs + system dirs), private dirs and short limits.
    pub fn config(&self, name: &str) -> RunnerConfig {
        let mut c = RunnerConfig::new(
            self.dir.path().join("envs"),
            self.dir.path().join(format!("cache-{name}")),
        );
        c.name = name.to_string();
        c.path = self.stubs.isolated_path();
        c.concurrency = 4;
        // Long enough for a real interpreter's --version on a loaded 2-core machine; the hang
        // case waits this long, in parallel with the other verifications.
        c.verify_timeout = Duration::from_secs(5);
        c.kill_grace = Duration::from_millis(300);
        c.drain_grace = Duration::from_secs(20);
        c
    }

    pub async fn put_runtime(&self, value: Value) {
        let mut rt: Runtime = serde_json::from_value(value).unwrap();
        rt.normalize();
        self.runtimes
            .put(&rt.name, serde_json::to_vec(&rt).unwrap().into())
            .await
            .unwrap();
    }

    /// Publishes an action; `value` needs `ref`, `runtime`, `entry_point`, anything else optional.
    pub async fn put_action(&self, mut value: Value) {
        let r = value["ref"].as_str().unwrap().to_string();
        let (pack, name) = r.split_once('.').unwrap();
        let obj = value.as_object_mut().unwrap();
        obj.entry("pack").or_insert(json!(pack));
        obj.entry("name").or_insert(json!(name));
        let rt = obj["runtime"].clone();
        obj.entry("runner_type").or_insert(rt);
        let action: Action = serde_json::from_value(value).unwrap();
        self.actions
            .put(
                &action.reference,
                serde_json::to_vec(&action).unwrap().into(),
            )
            .await
            .unwrap();
    }

    /// Writes a pack directory with `files`, uploads its archive and publishes its metadata.
    pub async fn put_pack(&self, pack: &str, files: &[(&str, &str)]) -> String {
        self.put_pack_with(pack, files, |_| {}).await
    }

    /// Like [`Fixture::put_pack`], with the metadata adjusted by `adjust` (a `preload` list).
    pub async fn put_pack_with(
        &self,
        pack: &str,
        files: &[(&str, &str)],
        adjust: impl FnOnce(&mut PackMeta),
    ) -> String {
        let src = self
            .dir
            .path()
            .join("src")
            .join(format!("{pack}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("pack.yaml"), format!("ref: {pack}\n")).unwrap();
        for (path, content) in files {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let (bytes, digest) = attune_nats::archive::pack_dir(&src).unwrap();
        self.pack_files
            .put(digest.as_str(), &mut bytes.as_slice())
            .await
            .unwrap();
        let meta = PackMeta {
            reference: pack.into(),
            label: None,
            description: None,
            version: "1.0.0".into(),
            author: None,
            digest: digest.clone(),
            runtimes: vec![],
            actions: vec![],
            sensors: vec![],
            rules: vec![],
            trigger_types: vec![],
            sensor_specs: vec![],
            preload: Default::default(),
            registered_at: None,
        };
        let mut meta = meta;
        adjust(&mut meta);
        self.packs
            .put(pack, serde_json::to_vec(&meta).unwrap().into())
            .await
            .unwrap();
        digest
    }

    /// Sends an invocation; the reply and its headers. Panics on no responders or timeout.
    pub async fn invoke(
        &self,
        runtime: &str,
        version: &str,
        body: Value,
    ) -> (InvocationReply, Option<HeaderMap>) {
        let msg = self
            .client
            .request(
                self.ns.invoke(runtime, version),
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("invoking {runtime} {version}: {e}"));
        let reply: InvocationReply = serde_json::from_slice(&msg.payload)
            .unwrap_or_else(|e| panic!("reply is not an InvocationReply ({e}): {:?}", msg.payload));
        (reply, msg.headers)
    }

    /// Whether anyone answers on a version's subject.
    pub async fn has_responders(&self, runtime: &str, version: &str) -> bool {
        match self
            .client
            .request(self.ns.invoke(runtime, version), "{}".into())
            .await
        {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    async_nats::client::RequestErrorKind::NoResponders,
                    "{e}"
                );
                false
            }
        }
    }
}

pub fn header(headers: &Option<HeaderMap>, name: &str) -> Option<String> {
    headers.as_ref()?.get(name).map(|v| v.as_str().to_string())
}

pub fn which_real(name: &str) -> PathBuf {
    attune_testkit::which(name).unwrap_or_else(|| panic!("{name} is needed for the runner tests"))
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
