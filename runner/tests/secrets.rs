//! Secrets never appear in the process environment, its command line, or the runner's logs.
//! A file of its own: it installs a global log subscriber at TRACE to read every log line.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use attune_nats::Status;
use common::*;
use serde_json::json;

const SECRET: &str = "s3cr3t-hunter2-value";

/// Collects every log line in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_environment_the_command_line_or_the_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("attune_runner=trace")
        .with_writer(move || writer.clone())
        .init();

    // The script reports its environment and command line, and checks it did get the secret.
    let script = "env; echo; tr '\\0' ' ' < /proc/$$/cmdline; echo; \
                  grep -q s3cr3t-hunter2 && echo GOT-IT-ON-STDIN\n";
    let f = Fixture::new().await;
    f.put_runtime(shell_runtime()).await;
    f.put_pack("demo", &[("actions/leak.sh", script)]).await;
    f.put_action(
        json!({"ref": "demo.leak", "runtime": "shell", "entry_point": "leak.sh",
        "parameters": {"type": "object", "properties": {
            "token": {"type": "string", "secret": true, "minLength": 1},
            "pin": {"type": "integer", "secret": true}}}}),
    )
    .await;
    let runner = attune_runner::start(f.config("r1"), f.client.clone())
        .await
        .unwrap();

    let (r, _) = f
        .invoke(
            "shell",
            "default",
            json!({"action": "demo.leak", "parameters": {"token": SECRET}}),
        )
        .await;
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    let (report, got) = r
        .stdout
        .split_once("GOT-IT")
        .expect("the secret reached stdin");
    assert!(
        !report.contains("s3cr3t"),
        "secret in env or cmdline: {report}"
    );
    assert!(report.contains("ATTUNE_ACTION=demo.leak"), "{report}");
    assert!(
        !report.contains("NATS_") && !report.contains("CARGO"),
        "minimal env: {report}"
    );
    let _ = got;

    // A secret that fails its schema is not quoted in the rejection either.
    let (r, _) = f
        .invoke(
            "shell",
            "default",
            json!({"action": "demo.leak", "parameters": {"token": SECRET, "pin": SECRET}}),
        )
        .await;
    assert_eq!(r.status, Status::Rejected);
    assert!(!r.error.as_deref().unwrap().contains("s3cr3t"), "{r:?}");
    runner.drain().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("demo.leak"), "the logs were captured: {text}");
    assert!(!text.contains("s3cr3t"), "secret in the logs:\n{text}");
}
