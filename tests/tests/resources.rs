//! Who owns the JetStream resources, and who may make the registry read its own disk.
//!
//! Only the registry creates or updates buckets, object stores and streams, with the operator's
//! settings. A runner started before it waits, saying what is missing, and serves once the
//! registry has provisioned; a runner start leaves the operator's TTLs and limits alone; the CLI
//! against a server with nothing provisioned stops at once with an error that says what to do.
//! Registration by path is refused unless the registry was started with
//! `--allow-register-from`, and then only inside those directories.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use attune_nats::api::{code, PackRegisterReply, PackRegisterRequest};
use attune_nats::client::{Client, ClientError};
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::jobs::open_jobs_stream;
use attune_nats::{Namespace, RegistryOp};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::RunnerConfig;
use attune_testkit::{attune_bin, eventually, workspace_root, NatsServer, ServiceProcess};

/// Generous: a runner verifies interpreters and builds nothing for the core pack's shell actions.
const WAIT: Duration = Duration::from_secs(60);

fn core_pack() -> PathBuf {
    workspace_root().join("packs").join("core")
}

async fn start_registry(
    nats: &async_nats::Client,
    data: &Path,
    edit: impl FnOnce(&mut ServeConfig),
) -> RunningRegistry {
    let mut config = ServeConfig::new(
        data.join("registry"),
        vec![core_pack()],
        Namespace::default(),
    );
    edit(&mut config);
    attune_registry::start(config, nats.clone())
        .await
        .expect("registry starts")
}

#[tokio::test]
async fn a_runner_started_before_the_registry_waits_saying_what_is_missing_then_serves() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").display().to_string();
    let envs = dir.path().join("envs").display().to_string();
    let mut runner = ServiceProcess::start(
        "runner",
        &server,
        &[
            "runner",
            "start",
            "--runtimes",
            "shell",
            "--concurrency",
            "1",
            "--name",
            "early",
            "--cache-dir",
            &cache,
            "--envs-dir",
            &envs,
        ],
        None,
        dir.path(),
    );
    let said = eventually(WAIT, "the runner to log what it waits for", || async {
        let err = runner.stderr();
        err.contains("waiting for the registry").then_some(err)
    })
    .await;
    assert!(
        said.contains("does not exist: start the registry first"),
        "the log names the missing resource and what to do: {said}"
    );
    assert!(runner.is_running(), "it waits instead of exiting: {said}");

    let nats = server.connect().await;
    let registry = start_registry(&nats, dir.path(), |_| {}).await;
    let js = jetstream::new(nats.clone());
    let runners = open_kv(&js, &Namespace::default(), Bucket::Runners)
        .await
        .expect("the registry provisioned the runners bucket");
    eventually(WAIT, "the waiting runner to serve (its heartbeat)", || {
        let runners = runners.clone();
        async move { runners.get("early").await.ok().flatten() }
    })
    .await;
    runner.terminate();
    registry.stop().await;
}

#[tokio::test]
async fn a_runner_start_keeps_the_ttls_and_limits_the_registry_set() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(&nats, dir.path(), |c| {
        c.store.results_ttl = Duration::from_secs(3600);
        c.store.jobs_max_age = Duration::from_secs(1800);
        c.store.jobs_max_bytes = Some(64 * 1024 * 1024);
    })
    .await;

    let mut config = RunnerConfig::new(dir.path().join("envs"), dir.path().join("cache"));
    config.runtimes = vec!["shell".into()];
    config.concurrency = 1;
    let runner = attune_runner::start(config, nats.clone())
        .await
        .expect("runner starts");

    let js = jetstream::new(nats.clone());
    let ns = Namespace::default();
    let results = open_kv(&js, &ns, Bucket::Results).await.unwrap();
    assert_eq!(
        results.stream.cached_info().config.max_age,
        Duration::from_secs(3600),
        "the results TTL the registry set"
    );
    let jobs = open_jobs_stream(&js, &ns).await.unwrap();
    let jobs = &jobs.cached_info().config;
    assert_eq!(jobs.max_age, Duration::from_secs(1800));
    assert_eq!(jobs.max_bytes, 64 * 1024 * 1024);
    runner.drain().await;
    registry.stop().await;
}

#[test]
fn the_cli_against_a_server_without_a_registry_says_to_start_one() {
    let server = NatsServer::start();
    let out = Command::new(attune_bin())
        .args(["--server", &server.url(), "pack", "register"])
        .arg(core_pack())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "unavailable: {stderr}");
    assert!(
        stderr.contains(
            "object store \"attune-pack-files\" does not exist: start the registry first"
        ),
        "{stderr}"
    );
}

/// A pack directory `name` under `root` with one shell action.
fn write_pack(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        dir.join("pack.yaml"),
        format!("ref: {name}\nversion: 1.0.0\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/hi.yaml"),
        format!("ref: {name}.hi\nrunner_type: shell\nentry_point: hi.sh\n"),
    )
    .unwrap();
    std::fs::write(dir.join("actions/hi.sh"), "echo hi\n").unwrap();
    dir
}

async fn register_path(client: &Client, dir: &Path) -> Result<PackRegisterReply, ClientError> {
    let request = PackRegisterRequest {
        path: Some(dir.display().to_string()),
        digest: None,
    };
    client.api(RegistryOp::PackRegister, &request).await
}

fn refusal_code(result: Result<PackRegisterReply, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api(e)) => (e.error.code, e.error.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn registration_by_path_is_refused_unless_inside_an_allowed_directory() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let elsewhere = dir.path().join("elsewhere");
    let inside = write_pack(&allowed, "inside");
    let outside = write_pack(&elsewhere, "outside");
    let client = Client::new(nats.clone(), Namespace::default());

    // Off by default.
    let registry = start_registry(&nats, dir.path(), |_| {}).await;
    let (status, message) = refusal_code(register_path(&client, &inside).await);
    assert_eq!(status, code::FORBIDDEN);
    assert!(message.contains("--allow-register-from"), "{message}");
    registry.stop().await;

    let registry = start_registry(&nats, dir.path(), |c| {
        c.allow_register_from = vec![allowed.clone()];
    })
    .await;
    let reply = register_path(&client, &inside)
        .await
        .expect("inside is allowed");
    assert_eq!(reply.pack.reference, "inside");
    let (status, _) = refusal_code(register_path(&client, &outside).await);
    assert_eq!(status, code::FORBIDDEN, "outside the allowed directory");
    // `..` cannot climb out: the path is canonicalised first.
    let climbing = allowed.join("..").join("elsewhere").join("outside");
    let (status, _) = refusal_code(register_path(&client, &climbing).await);
    assert_eq!(status, code::FORBIDDEN, "climbing out with ..");
    // A symlinked directory inside that leads outside is outside.
    std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
    let (status, _) = refusal_code(register_path(&client, &allowed.join("link")).await);
    assert_eq!(
        status,
        code::FORBIDDEN,
        "a symlink out of the allowed directory"
    );
    // A file of an allowed pack linked outside the pack is refused, naming the file.
    std::os::unix::fs::symlink("/etc/hostname", inside.join("actions/leak.sh")).unwrap();
    let (status, message) = refusal_code(register_path(&client, &inside).await);
    assert!(
        status == code::BAD_REQUEST || status == code::PACK_REJECTED,
        "{status}"
    );
    assert!(message.contains("leak.sh"), "{message}");
    registry.stop().await;
}

#[tokio::test]
async fn the_cli_refused_a_path_says_to_upload_and_uploading_works() {
    let server = NatsServer::start();
    let nats = server.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = start_registry(&nats, dir.path(), |_| {}).await;
    let pack = write_pack(&dir.path().join("packs"), "bypath");
    let url = server.url();
    let cli = move |extra: &'static [&'static str], pack: PathBuf| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(attune_bin())
                .args(["--server", &url, "pack", "register"])
                .args(extra)
                .arg(pack)
                .output()
                .unwrap()
        })
    };
    let out = cli(&["--on-registry-host"], pack.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("without --on-registry-host to upload it"),
        "{stderr}"
    );
    let out = cli(&[], pack).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    registry.stop().await;
}
