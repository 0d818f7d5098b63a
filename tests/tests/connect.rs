//! Connecting like the `nats` CLI, end to end: the `attune` binary against a real nats-server
//! that requires credentials, with a real registry answering so that a command exiting 0 proves
//! it connected, authenticated and talked.
//!
//! Every way in is covered — user and password, token, nkey seed file, credentials in the URL, a
//! `nats` context by name, by path and as the selected one, flags over context fields, a server
//! list with a dead server — and so are the refusals: a wrong password and a permission
//! violation both exit 77 without waiting and without printing a secret, and a service with a
//! wrong password gives up with 77 instead of retrying forever.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use attune_nats::connect::{NatsContext, Secret};
use attune_nats::{Namespace, RegistryOp};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_testkit::{attune_bin, free_port, NatsServer};

/// How long a test waits for a process that should end (generous: machines are shared).
const WAIT: Duration = Duration::from_secs(60);

/// The password of user `ada`, which every successful password login uses.
const ADA_PASSWORD: &str = "ada-correct-horse";

/// The connection variables a developer's shell may have set; tests must not inherit them.
const NATS_VARS: [&str; 10] = [
    "NATS_URL",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_CREDS",
    "NATS_NKEY",
    "NATS_CERT",
    "NATS_KEY",
    "NATS_CA",
    "NATS_TIMEOUT",
    "NATS_CONTEXT",
];

/// A nats-server that requires credentials, a registry connected to it as `admin`, and an empty
/// `XDG_CONFIG_HOME` for `nats` contexts.
struct Secured {
    server: NatsServer,
    _registry: RunningRegistry,
    /// Holds the registry's data, the nkey seed file and the config home.
    dir: tempfile::TempDir,
    /// A file holding the seed of an nkey user the server knows.
    nkey_file: PathBuf,
}

impl Secured {
    /// `users` is the server's `authorization { ... }` body; `admin` connects the registry.
    async fn start(authorization: &str, admin: async_nats::ConnectOptions) -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer::start_with_config(&format!("authorization {{ {authorization} }}"));
        let nats = server.connect_with(admin).await;
        let registry = attune_registry::start(
            ServeConfig::new(dir.path().join("registry"), vec![], Namespace::default()),
            nats,
        )
        .await
        .expect("the registry starts");
        let nkey_file = dir.path().join("user.nk");
        Secured {
            server,
            _registry: registry,
            dir,
            nkey_file,
        }
    }

    /// Users `admin` (the registry), `ada` (password), `limited` (may not publish on
    /// `attune.>`), `scoped` (may subscribe only to `_INBOX_scoped.>`) and one nkey user whose
    /// seed is in [`Secured::nkey_file`].
    async fn with_users() -> Secured {
        let key = nkeys::KeyPair::new_user();
        let users = format!(
            r#"users = [
                {{ user: admin, password: admin-pw }}
                {{ user: ada, password: "{ADA_PASSWORD}" }}
                {{ user: limited, password: limited-pw, permissions: {{ publish: {{ deny: ["attune.>"] }} }} }}
                {{ nkey: {} }}
                {{ user: scoped, password: scoped-pw, permissions: {{ subscribe: {{ allow: ["_INBOX_scoped.>"] }} }} }}
            ]"#,
            key.public_key()
        );
        let s = Secured::start(
            &users,
            async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-pw".into()),
        )
        .await;
        std::fs::write(&s.nkey_file, format!("{}\n", key.seed().unwrap())).unwrap();
        s
    }

    /// The server's URL (no credentials).
    fn url(&self) -> String {
        self.server.url()
    }

    /// The `XDG_CONFIG_HOME` the `attune` processes see.
    fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Writes context `name` where the `nats` CLI keeps it under [`Secured::config_home`].
    fn save_context(&self, name: &str, context: &NatsContext) -> PathBuf {
        let path = NatsContext::path(&self.config_home(), name).unwrap();
        context.write(&path).unwrap();
        path
    }

    /// Runs `attune ARGS` with only `env` among the NATS variables, and waits for it.
    async fn attune(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = tokio::process::Command::new(attune_bin());
        for var in NATS_VARS {
            cmd.env_remove(var);
        }
        cmd.env("XDG_CONFIG_HOME", self.config_home())
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("attune {args:?} did not end within {WAIT:?}"))
            .expect("run attune")
    }

    /// Asserts that `attune ARGS runtime list` connected and got the registry's answer.
    async fn assert_connects(&self, args: &[&str], env: &[(&str, &str)]) {
        let mut all = args.to_vec();
        all.extend(["runtime", "list"]);
        let out = self.attune(&all, env).await;
        assert!(
            out.status.success(),
            "attune {all:?} with {env:?} failed ({}): {}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.server.log()
        );
        // Logged at trace level, and still no secret in them.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let seed = std::fs::read_to_string(&self.nkey_file).unwrap_or_default();
        for secret in [ADA_PASSWORD, "tok-s3cret", seed.trim()] {
            assert!(
                secret.is_empty() || !stderr.contains(secret),
                "a secret leaked into the log of attune {all:?}"
            );
        }
    }
}

/// The exit code, and stderr as text.
fn outcome(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A URL where nothing listens.
fn dead_url() -> String {
    format!("nats://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_with_user_and_password_from_flags_or_environment() {
    let s = Secured::with_users().await;
    let url = s.url();
    s.assert_connects(
        &[
            "--server",
            &url,
            "--user",
            "ada",
            "--password",
            ADA_PASSWORD,
        ],
        &[],
    )
    .await;
    s.assert_connects(
        &[],
        &[
            ("NATS_URL", &url),
            ("NATS_USER", "ada"),
            ("NATS_PASSWORD", ADA_PASSWORD),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_with_a_token_as_user_or_in_the_url() {
    let s = Secured::start(
        r#"token: "tok-s3cret""#,
        async_nats::ConnectOptions::with_token("tok-s3cret".into()),
    )
    .await;
    let url = s.url();
    s.assert_connects(&["--server", &url, "--user", "tok-s3cret"], &[])
        .await;
    let with_token = url.replace("nats://", "nats://tok-s3cret@");
    s.assert_connects(&["--server", &with_token], &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_with_an_nkey_seed_file() {
    let s = Secured::with_users().await;
    let url = s.url();
    let nkey = s.nkey_file.display().to_string();
    s.assert_connects(&["--server", &url, "--nkey", &nkey], &[])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_with_user_and_password_in_the_url() {
    let s = Secured::with_users().await;
    let url = s
        .url()
        .replace("nats://", &format!("nats://ada:{ADA_PASSWORD}@"));
    s.assert_connects(&["--server", &url], &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_list_skips_a_server_that_is_down() {
    let s = Secured::with_users().await;
    let list = format!("{},{}", dead_url(), s.url());
    s.assert_connects(
        &[
            "--server",
            &list,
            "--user",
            "ada",
            "--password",
            ADA_PASSWORD,
        ],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_with_a_context_by_name_or_path() {
    let s = Secured::with_users().await;
    let path = s.save_context(
        "ada",
        &NatsContext {
            url: s.url(),
            user: "ada".into(),
            password: Secret::new(ADA_PASSWORD),
            ..NatsContext::default()
        },
    );
    s.assert_connects(&["--context", "ada"], &[]).await;
    s.assert_connects(&["--context", path.to_str().unwrap()], &[])
        .await;
    s.assert_connects(&[], &[("NATS_CONTEXT", "ada")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_selected_context_applies_when_none_is_named() {
    let s = Secured::with_users().await;
    s.save_context(
        "picked",
        &NatsContext {
            url: s.url(),
            nkey: s.nkey_file.display().to_string(),
            ..NatsContext::default()
        },
    );
    let selection = NatsContext::selection_file(&s.config_home());
    std::fs::write(&selection, "picked\n").unwrap();
    s.assert_connects(&[], &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contexts_inbox_prefix_is_used_for_replies() {
    let s = Secured::with_users().await;
    // `scoped` may only subscribe to its own inboxes: the default `_INBOX.` ones are refused.
    let scoped = |inbox_prefix: &str| NatsContext {
        url: s.url(),
        user: "scoped".into(),
        password: Secret::new("scoped-pw"),
        inbox_prefix: inbox_prefix.into(),
        ..NatsContext::default()
    };
    s.save_context("default-inbox", &scoped(""));
    let refused = s
        .attune(&["--context", "default-inbox", "runtime", "list"], &[])
        .await;
    let (code, stderr) = outcome(&refused);
    assert_eq!(code, Some(77), "{stderr}");
    s.save_context("own-inbox", &scoped("_INBOX_scoped"));
    s.assert_connects(&["--context", "own-inbox"], &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_override_the_context_fields() {
    let s = Secured::with_users().await;
    s.save_context(
        "stale",
        &NatsContext {
            url: dead_url(),
            user: "ada".into(),
            password: Secret::new("an-old-password"),
            ..NatsContext::default()
        },
    );
    let alone = s
        .attune(&["--context", "stale", "runtime", "list"], &[])
        .await;
    assert_eq!(
        alone.status.code(),
        Some(69),
        "the stale context alone points at a dead server"
    );
    let url = s.url();
    let wrong_password = s
        .attune(
            &["--context", "stale", "--server", &url, "runtime", "list"],
            &[],
        )
        .await;
    assert_eq!(
        wrong_password.status.code(),
        Some(77),
        "with the right server, the context's old password is refused"
    );
    s.assert_connects(
        &[
            "--context",
            "stale",
            "--server",
            &url,
            "--password",
            ADA_PASSWORD,
        ],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_exits_77_and_is_never_printed() {
    let s = Secured::with_users().await;
    let url = s.url();
    let out = s
        .attune(
            &[
                "--server",
                &url,
                "--user",
                "ada",
                "--password",
                "wrong-hunter2",
                "runtime",
                "list",
            ],
            &[],
        )
        .await;
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("not authorized"), "{stderr}");
    assert!(
        !stderr.contains("wrong-hunter2"),
        "the password leaked: {stderr}"
    );

    let in_url = url.replace("nats://", "nats://ada:url-hunter3@");
    let out = s
        .attune(&["runtime", "list"], &[("NATS_URL", &in_url)])
        .await;
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(77), "{stderr}");
    assert!(
        !stderr.contains("url-hunter3"),
        "the password leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permission_violation_ends_a_command_with_77_naming_the_subject() {
    let s = Secured::with_users().await;
    let url = s.url();
    // Without the violation being noticed, this request would wait for its timeout: the server
    // drops a publish the user may not make and only says so in an error.
    let out = s
        .attune(
            &[
                "--server",
                &url,
                "--user",
                "limited",
                "--password",
                "limited-pw",
                "runtime",
                "list",
            ],
            &[],
        )
        .await;
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(77), "{stderr}");
    let subject = Namespace::default().registry(RegistryOp::RuntimeList);
    assert!(
        stderr.contains(&format!("\"{subject}\"")),
        "the error names {subject}: {stderr}"
    );
    assert!(
        !stderr.contains("limited-pw"),
        "the password leaked: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_a_wrong_password_gives_up_with_77() {
    let s = Secured::with_users().await;
    let url = s.url();
    let data = s.dir.path().join("second-registry");
    let out = s
        .attune(
            &[
                "--server",
                &url,
                "--user",
                "ada",
                "registry",
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[("NATS_PASSWORD", "service-hunter4")],
        )
        .await;
    let (code, stderr) = outcome(&out);
    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("not authorized"), "{stderr}");
    assert!(
        !stderr.contains("service-hunter4"),
        "the password leaked: {stderr}"
    );
}

/// The layout `nats context save` and `nats context select` write, which the tests above rely on.
#[test]
fn contexts_live_where_the_nats_cli_keeps_them() {
    let path = NatsContext::path(Path::new("/home/u/.config"), "prod").unwrap();
    assert_eq!(path, Path::new("/home/u/.config/nats/context/prod.json"));
    assert_eq!(
        NatsContext::selection_file(Path::new("/home/u/.config")),
        Path::new("/home/u/.config/nats/context.txt")
    );
}
