//! `attune auth init` and `attune up --secure` as a user runs them: the binary writes the files,
//! refuses to replace keys, never prints a seed; `up --secure` serves a client holding only the
//! client context, and the server it started logs no permission violation.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use attune_nats::auth;
use attune_nats::client::Client;
use attune_nats::roles::Role;
use attune_nats::{InvocationRequest, Status};
use attune_testkit::{attune_bin, eventually, free_port, workspace_root};
use serde_json::json;

#[test]
fn auth_init_writes_the_files_refuses_to_overwrite_and_prints_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("auth");
    let run = || {
        Command::new(attune_bin())
            .args(["auth", "init"])
            .arg(&dir)
            .args(["--port", "4999", "--client", "ci"])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    let out = String::from_utf8_lossy(&first.stdout);
    let written = auth::load(&dir).unwrap();
    assert_eq!(written.user("ci").unwrap().role, Role::Client);
    for user in &written.users {
        assert!(user.context.is_file());
        let seed = std::fs::read_to_string(&user.seed).unwrap();
        assert!(!out.contains(seed.trim()), "a seed was printed");
        assert!(out.contains(&user.public_key));
    }

    let second = run();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already exists"),
        "{second:?}"
    );
    assert_eq!(auth::load(&dir).unwrap(), written, "the keys were kept");
}

/// `attune up` as a child process, stopped with SIGTERM when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `core` with only the shell runtime and `core.echo`, so the runner verifies one interpreter.
fn shell_only_core(dir: &Path) {
    let core = workspace_root().join("packs").join("core");
    for sub in ["runtimes", "actions"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for file in [
        "pack.yaml",
        "runtimes/shell.yaml",
        "actions/echo.yaml",
        "actions/echo.sh",
    ] {
        std::fs::copy(core.join(file), dir.join(file)).unwrap();
    }
}

#[tokio::test]
async fn up_secure_serves_a_client_holding_only_the_client_context() {
    up_secure_serves_a_client(false).await;
}

#[tokio::test]
async fn up_secure_with_tls_serves_a_client_with_its_certificate() {
    up_secure_serves_a_client(true).await;
}

async fn up_secure_serves_a_client(tls: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let packs = tmp.path().join("core");
    shell_only_core(&packs);
    let data = tmp.path().join("data");
    let server = format!("nats://127.0.0.1:{}", free_port());
    let mut up = Up(Command::new(attune_bin())
        .args(["--server", &server, "up", "--secure", "--concurrency", "2"])
        .args(tls.then_some("--tls"))
        .arg("--packs")
        .arg(&packs)
        .arg("--data-dir")
        .arg(&data)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("up.err")).unwrap())
        .spawn()
        .unwrap());

    let auth_dir = data.join("auth");
    let written = eventually(Duration::from_secs(20), "the auth directory", || {
        let dir = auth_dir.clone();
        async move { auth::load(&dir).ok() }
    })
    .await;
    assert_eq!(written.tls.is_some(), tls);
    let client_files = written.for_role(Role::Client).unwrap();
    let nats = eventually(Duration::from_secs(20), "a client connection", || {
        let (written, url) = (&written, written.url.clone());
        async move {
            let opts = written.connect_options(client_files).await.unwrap();
            opts.connect(url).await.ok()
        }
    })
    .await;
    let client = Client::new(nats, written.namespace().unwrap());
    let request = InvocationRequest {
        id: None,
        action: "core.echo".into(),
        parameters: json!({"message": "hi"}).as_object().cloned().unwrap(),
        timeout_seconds: None,
    };
    let reply = eventually(Duration::from_secs(30), "core.echo to run", || {
        let (client, request) = (&client, &request);
        async move { client.invoke(request).await.ok() }
    })
    .await;
    assert_eq!(reply.status, Status::Succeeded, "{reply:?}");
    assert_eq!(reply.result, json!({"message": "hi"}));

    // The way the README tells a user to call: the CLI with the client context file ...
    let no_contexts = tmp.path().join("xdg");
    let cli = |args: &[&str]| {
        Command::new(attune_bin())
            .args(args)
            .env("XDG_CONFIG_HOME", &no_contexts)
            .env_remove("NATS_URL")
            .env_remove("NATS_CONTEXT")
            .output()
            .unwrap()
    };
    let context = client_files.context.display().to_string();
    let out = cli(&["--context", &context, "invoke", "core.echo", "message=hi"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("hi"),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and without credentials: refused at once, with a message saying so.
    let out = cli(&["--server", &server, "invoke", "core.echo", "message=hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if tls {
        // The server wants TLS before it even looks at credentials.
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.to_lowercase().contains("tls"), "{stderr}");
    } else {
        assert_eq!(out.status.code(), Some(77), "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
    }

    // Ctrl-C (here SIGTERM) stops everything cleanly.
    Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status()
        .unwrap();
    let status = up.0.wait().unwrap();
    let err = std::fs::read_to_string(tmp.path().join("up.err")).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    let log = std::fs::read_to_string(data.join("nats-server.log")).unwrap();
    let violations: Vec<_> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "{violations:#?}");
}
