//! End to end: constraints as node and python users write them, through `attune resolve`.
//!
//! One runner host has python 3.11, 3.12 (the default) and 3.13 and node 18, 20 (the default)
//! and 22, all as stub interpreters; the shipped packs are registered. Each npm range or PEP 440
//! specifier from issue 18 must choose the version a node or python user expects, and a
//! misspelt one must be refused with the spelling meant.

use std::time::Duration;

use attune_nats::client::Client;
use attune_nats::Namespace;
use attune_testkit::{
    attune, eventually, python_host, start_registry, start_runner, workspace_root, NatsServer,
};
use serde_json::Value;

/// Waits until a live runner has verified `runtime` `version`.
async fn wait_available(client: &Client, runtime: &str, version: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{runtime} {version} available"),
        || async {
            let rt = client.runtime(runtime).await.ok().flatten()?;
            rt.version(version)?.available.then_some(())
        },
    )
    .await
}

/// The version `attune resolve` picks for `action` under `constraint`.
fn resolved(server: &NatsServer, action: &str, constraint: &str) -> String {
    let out = attune(
        server,
        &["-o", "json", "resolve", action, "--constraint", constraint],
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{constraint:?}: no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    reply["version"]
        .as_str()
        .unwrap_or_else(|| panic!("{constraint:?} chose nothing: {reply}"))
        .to_string()
}

#[tokio::test]
async fn npm_ranges_and_pep_440_specifiers_resolve_as_their_users_expect() {
    let server = NatsServer::start();
    let work = tempfile::tempdir().unwrap();
    let _registry = start_registry(&server, &workspace_root().join("packs"), work.path());
    let host = python_host(&["3.11.7", "3.12.4", "3.13.1"]);
    let node = attune_testkit::which("node").expect("node is needed");
    for (binary, reports) in [
        ("node18", "v18.19.0"),
        ("node20", "v20.11.0"),
        ("node22", "v22.1.0"),
    ] {
        host.add(binary, reports, &node).unwrap();
    }
    let _runner = start_runner(&server, "host", "python,node", &host, work.path());
    let client = Client::new(server.connect().await, Namespace::default());
    for (runtime, version) in [
        ("python", "3.11"),
        ("python", "3.12"),
        ("python", "3.13"),
        ("node", "18"),
        ("node", "20"),
        ("node", "22"),
    ] {
        wait_available(&client, runtime, version).await;
    }

    for (constraint, want) in [
        // npm: space-separated AND, hyphen ranges, `~>` as `~`, wildcards after operators and
        // an empty alternative (the last three mean "any": the default, 20).
        (">=18 <21", "20"),
        ("18 - 20", "20"),
        ("18 - 20 !=20.*", "18"),
        ("~>18", "18"),
        ("^x", "20"),
        ("~x", "20"),
        (">=*", "20"),
        ("18.x || ", "20"),
        ("22.x || 18", "22"),
    ] {
        assert_eq!(
            resolved(&server, "core.node_echo", constraint),
            want,
            "{constraint}"
        );
    }
    for (constraint, want) in [
        // PEP 440: compatible release, exact and prefix equality, exclusion.
        ("~=3.11", "3.13"),
        ("~=3.11,!=3.13.*", "3.12"),
        ("==3.12.*", "3.12"),
        ("==3.12", "3.12"),
        ("!=3.12.1", "3.13"),
        ("~=3.11.0", "3.11"),
        (">= 3.11, <3.13", "3.12"),
        // npm's `=` keeps the partial meaning: 3.12.x.
        ("=3.12", "3.12"),
    ] {
        assert_eq!(
            resolved(&server, "core.py_echo", constraint),
            want,
            "{constraint}"
        );
    }

    // A misspelt constraint is refused with the spelling meant.
    let out = attune(
        &server,
        &["resolve", "core.py_echo", "--constraint", "=>3.12"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("at column 1") && stderr.contains("did you mean \">=3.12\""),
        "{stderr}"
    );
}
