//! End to end, with the real binaries: dependencies a pack vendors reach its actions through a
//! per-(pack, version) environment, installed offline, outside the pack, and only when they change.
//!
//! The python side (a vendored wheel, `examples.slugify`) runs in `heterogeneous.rs`; this is the
//! node side: a `file:` tarball and a `file:` directory, installed by npm in offline mode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::Namespace;
use attune_testkit::{
    attune, eventually, start_registry, workspace_root, NatsServer, ServiceProcess,
};
use serde_json::Value;

/// A pack whose action requires a vendored tarball (made with `npm pack`) and a vendored
/// directory, both as `file:` dependencies of its `package.json`.
fn write_node_pack(dir: &Path, code_marker: &str) {
    let vendor = dir.join("vendor");
    std::fs::create_dir_all(vendor.join("padder")).unwrap();
    std::fs::create_dir_all(vendor.join("greeter")).unwrap();
    std::fs::create_dir_all(dir.join("actions")).unwrap();
    std::fs::write(
        vendor.join("padder/package.json"),
        r#"{"name": "padder", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(
        vendor.join("padder/index.js"),
        "module.exports = (s, n) => String(s).padStart(n, '0');\n",
    )
    .unwrap();
    let packed = Command::new("npm")
        .args(["pack", "--silent", "--pack-destination", ".."])
        .current_dir(vendor.join("padder"))
        .output()
        .expect("npm is needed for the node environment test");
    assert!(packed.status.success(), "{packed:?}");
    std::fs::remove_dir_all(vendor.join("padder")).unwrap();
    std::fs::write(
        vendor.join("greeter/package.json"),
        r#"{"name": "greeter", "version": "2.0.0", "main": "g.js"}"#,
    )
    .unwrap();
    std::fs::write(
        vendor.join("greeter/g.js"),
        "module.exports = (n) => 'hello ' + n;\n",
    )
    .unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: nodedeps\nversion: 1.0.0\n").unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name": "nodedeps", "private": true,
            "dependencies": {"padder": "file:vendor/padder-1.0.0.tgz", "greeter": "file:./vendor/greeter"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/pad.js"),
        format!(
            "const pad = require('padder'), greet = require('greeter');\n\
             console.log(JSON.stringify({{padded: pad(7, 3), greeting: greet('node'), code: '{code_marker}'}}));\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("actions/pad.yaml"),
        "name: pad\nrunner_type: node\nentry_point: pad.js\noutput_format: json\n",
    )
    .unwrap();
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// Changes the action's code marker from `from` to `to` (and the manifest to `manifest`, if
/// given), registers the pack again, and waits until the new code answers.
async fn update(server: &NatsServer, src: &Path, from: &str, to: &str, manifest: Option<&str>) {
    let code = src.join("actions/pad.js");
    let text = std::fs::read_to_string(&code).unwrap();
    std::fs::write(
        &code,
        text.replace(&format!("'{from}'"), &format!("'{to}'")),
    )
    .unwrap();
    if let Some(m) = manifest {
        std::fs::write(src.join("package.json"), m).unwrap();
    }
    let out = attune(server, &["pack", "register", src.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    invoke_until(server, to).await;
}

async fn invoke_until(server: &NatsServer, want_code: &str) -> Value {
    eventually(
        Duration::from_secs(90),
        &format!("nodedeps.pad with code {want_code}"),
        || async {
            let out = attune(server, &["-o", "json", "invoke", "nodedeps.pad"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["status"] == "succeeded" && v["result"]["code"] == want_code).then_some(v)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn node_actions_require_vendored_dependencies_installed_offline_outside_the_pack() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("nodedeps");
    write_node_pack(&src, "v1");
    let _registry = start_registry(&server, &workspace_root().join("packs/core"), work.path());
    let cache = work.path().join("cache");
    let envs = work.path().join("envs");
    let _runner = ServiceProcess::start(
        "runner",
        &server,
        &[
            "runner",
            "start",
            "--name",
            "r1",
            "--runtimes",
            "node",
            "--envs-dir",
            envs.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
        work.path(),
    );
    let client = Client::new(server.connect().await, Namespace::default());
    eventually(Duration::from_secs(60), "node 20 available", || async {
        let rt = client.runtime("node").await.ok().flatten()?;
        rt.version("20")?.available.then_some(())
    })
    .await;
    let out = attune(&server, &["pack", "register", src.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let reply = invoke_until(&server, "v1").await;
    assert_eq!(reply["result"]["padded"], "007", "{reply}");
    assert_eq!(reply["result"]["greeting"], "hello node", "{reply}");
    // A node process started ahead finds the same dependencies (NODE_PATH from its start).
    let warm = eventually(Duration::from_secs(60), "a warm nodedeps.pad", || async {
        let out = attune(&server, &["-o", "json", "invoke", "nodedeps.pad"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "succeeded" && v["warm"] == true).then_some(v)
    })
    .await;
    assert_eq!(warm["result"], reply["result"], "{warm}");

    // Installed in the environment, copied (not linked into pack files that go away)...
    let env = envs.join("nodedeps/node-20");
    let modules = env.join("node_modules");
    assert!(modules.join("padder/index.js").is_file());
    assert!(!modules
        .join("greeter")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    // ...and nothing written into the pack: the runner's copy holds exactly the archive's files.
    let unpacked: Vec<PathBuf> = std::fs::read_dir(cache.join("packs/nodedeps"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(unpacked.len(), 1);
    assert_eq!(
        tree(&unpacked[0]),
        tree(&src),
        "the pack directory is untouched"
    );
    assert!(!src.join("node_modules").exists() && !src.join("package-lock.json").exists());

    // New code, same dependencies: nothing is installed again.
    let marker = env.join(".attune-deps-sha256");
    let installed_at = std::fs::metadata(&marker).unwrap().modified().unwrap();
    update(&server, &src, "v1", "v2", None).await;
    assert_eq!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        installed_at,
        "same manifest: no reinstall"
    );

    // A changed manifest is installed again.
    let manifest = r#"{"name": "nodedeps", "private": true, "version": "1.0.1",
        "dependencies": {"padder": "file:vendor/padder-1.0.0.tgz", "greeter": "file:./vendor/greeter"}}"#;
    update(&server, &src, "v2", "v3", Some(manifest)).await;
    assert_ne!(
        std::fs::metadata(&marker).unwrap().modified().unwrap(),
        installed_at,
        "changed manifest: reinstalled"
    );
}
