//! The system under test, started by the bench itself on loopback: a `nats-server`, the
//! registry (in process) with `packs/core` and a generated `bench` pack, and one runner (in
//! process) whose `PATH` holds only symlinks to real interpreters, so it verifies exactly those.
//!
//! Start-up is timed here: the runner's first start (verification, pack fetch, environment
//! builds) and then, after a drain, starts over the same environments directory, which is the
//! figure docs/performance.md sets a target for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attune_nats::client::Client;
use attune_nats::resolve::Mode;
use attune_nats::{InvocationRequest, Namespace, Status};
use attune_registry::{RunningRegistry, ServeConfig};
use attune_runner::{RunnerConfig, RunnerHandle};
use attune_testkit::NatsServer;

/// One action of the bench pack.
struct BenchAction {
    /// The label in the table.
    label: &'static str,
    /// The action name.
    name: &'static str,
    /// Its runtime.
    runtime: &'static str,
    /// Its script.
    entry: &'static str,
    /// The script's contents.
    code: &'static str,
    /// Whether it may run warm (the runtime's warm path), or always starts cold.
    warm: bool,
}

/// Modules of the standard library the heavy action imports and the pack preloads: about a
/// tenth of a second of imports at every cold start.
pub const HEAVY_MODULES: &[&str] = &[
    "asyncio",
    "unittest",
    "http.server",
    "email.mime.multipart",
    "xml.dom.minidom",
    "decimal",
    "urllib.request",
    "logging.handlers",
    "concurrent.futures",
    "sqlite3",
    "zipfile",
    "tarfile",
];

/// The bench pack's actions. Each does nothing (the heavy one only imports), so what is
/// measured is the cost of getting there and back.
const ACTIONS: &[BenchAction] = &[
    BenchAction {
        label: "sh",
        name: "sh_noop",
        runtime: "shell",
        entry: "sh_noop.sh",
        code: "#!/bin/sh\nexit 0\n",
        warm: false,
    },
    BenchAction {
        label: "python cold",
        name: "py_noop_cold",
        runtime: "python",
        entry: "py_noop.py",
        code: "",
        warm: false,
    },
    BenchAction {
        label: "python warm",
        name: "py_noop",
        runtime: "python",
        entry: "py_noop.py",
        code: "",
        warm: true,
    },
    BenchAction {
        label: "py heavy warm",
        name: "py_heavy",
        runtime: "python",
        entry: "py_heavy.py",
        code: "",
        warm: true,
    },
    BenchAction {
        label: "node cold",
        name: "node_noop_cold",
        runtime: "node",
        entry: "node_noop.js",
        code: "",
        warm: false,
    },
    BenchAction {
        label: "node warm",
        name: "node_noop",
        runtime: "node",
        entry: "node_noop.js",
        code: "",
        warm: true,
    },
];

/// One action as the benchmark drives it, with the exact command a direct spawn runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short label: `sh`, `python`, `node`.
    pub label: &'static str,
    /// The action ref (`bench.sh_noop`).
    pub action: String,
    /// Runtime name and version the action resolves to.
    pub runtime: String,
    /// The version the action resolves to.
    pub version: String,
    /// The interpreter the runner runs: the pinned binary, or the environment's interpreter.
    pub program: PathBuf,
    /// The interpreter's arguments, then the script.
    pub args: Vec<String>,
    /// The pack directory (working directory).
    pub cwd: PathBuf,
    /// Whether the action may run warm.
    pub warm: bool,
}

/// Start-up figures, in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Startup {
    /// `attune_registry::start` with core and bench packs, to serving.
    pub registry_ms: f64,
    /// The runner's first start: verification, pack fetch and environment builds.
    pub runner_first_ms: f64,
    /// Starts with environments already built (same envs dir), one per attempt.
    pub runner_warm_ms: Vec<f64>,
}

/// Everything the bench started; [`Stack::stop`] stops it all.
pub struct Stack {
    /// Kept alive for the run; killed on drop.
    pub server: NatsServer,
    /// A client of the system under test.
    pub client: Client,
    /// The registry.
    registry: RunningRegistry,
    /// The runner being measured.
    runner: RunnerHandle,
    /// Temporary directories (packs, PATH, envs, cache, registry data).
    _dir: tempfile::TempDir,
    /// Start-up figures.
    pub startup: Startup,
    /// The runner's `PATH` (its private directory of interpreter links).
    pub path: String,
    /// The actions to drive, in table order.
    pub targets: Vec<Target>,
}

/// The real interpreters (never a pyenv shim) for the runner's private `PATH`, as
/// `(name on PATH, real file)`.
fn interpreters() -> Result<Vec<(String, PathBuf)>, String> {
    let find = |name: &str| -> Result<PathBuf, String> {
        ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} not found in /usr/bin, /bin or /usr/local/bin"))
    };
    let python = std::env::var_os("ATTUNE_BENCH_PYTHON")
        .map(PathBuf::from)
        .map_or_else(|| find("python3"), Ok)?;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg("import sys; print('%d.%d' % sys.version_info[:2])")
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    let py_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(vec![
        ("sh".into(), find("sh")?),
        ("bash".into(), find("bash")?),
        ("node".into(), find("node")?),
        (format!("python{py_version}"), python),
    ])
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes the `bench` pack (no requirements, so environments need no network).
fn write_pack(dir: &Path) -> Result<(), String> {
    write(
        &dir.join("pack.yaml"),
        &format!(
            "ref: bench\nlabel: Bench\ndescription: No-op actions the benchmark invokes.\nversion: 1.0.0\nauthor: Attune\npreload:\n  python: [{}]\n",
            HEAVY_MODULES.join(", ")
        ),
    )?;
    let heavy = format!("import {}\n", HEAVY_MODULES.join(", "));
    for a in ACTIONS {
        let (name, runtime, entry) = (a.name, a.runtime, a.entry);
        write(
            &dir.join("actions").join(format!("{name}.yaml")),
            &format!(
                "ref: bench.{name}\ndescription: does nothing\nrunner_type: {runtime}\nentry_point: {entry}\noutput_format: text\ntimeout_seconds: 30\nwarm: {}\n",
                a.warm
            ),
        )?;
        let code = if a.name == "py_heavy" {
            heavy.as_str()
        } else {
            a.code
        };
        write(&dir.join("actions").join(entry), code)?;
    }
    Ok(())
}

impl Stack {
    /// Starts nats-server, the registry and a runner (twice: cold, then `warm_starts` times over
    /// the built environments), and waits until every bench action answers by name.
    pub async fn start(concurrency: usize, warm_starts: usize) -> Result<Stack, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path();
        let server = NatsServer::start();
        let nats = server.connect().await;
        let ns = Namespace::default();

        let pack_dir = root.join("packs").join("bench");
        write_pack(&pack_dir)?;
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
        for (name, real) in interpreters()? {
            std::os::unix::fs::symlink(&real, bin.join(&name))
                .map_err(|e| format!("linking {name}: {e}"))?;
        }

        let core = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("packs")
            .join("core");
        let core = std::fs::canonicalize(&core)
            .map_err(|e| format!("the core pack at {}: {e}", core.display()))?;
        let began = Instant::now();
        let registry = attune_registry::start(
            ServeConfig::new(
                root.join("registry"),
                vec![core, pack_dir.clone()],
                ns.clone(),
            ),
            server.connect().await,
        )
        .await
        .map_err(|e| format!("starting the registry: {e}"))?;
        let registry_ms = ms(began.elapsed());

        let config = {
            let mut c = RunnerConfig::new(root.join("envs"), root.join("cache"));
            c.namespace = ns.clone();
            c.runtimes = vec!["shell".into(), "python".into(), "node".into()];
            c.concurrency = concurrency;
            c.name = "bench-runner".into();
            c.path = bin.display().to_string();
            c
        };
        let began = Instant::now();
        let mut runner = attune_runner::start(config.clone(), server.connect().await)
            .await
            .map_err(|e| format!("starting the runner: {e}"))?;
        let runner_first_ms = ms(began.elapsed());
        let mut runner_warm_ms = Vec::new();
        for _ in 0..warm_starts {
            runner.drain().await;
            let began = Instant::now();
            runner = attune_runner::start(config.clone(), server.connect().await)
                .await
                .map_err(|e| format!("restarting the runner: {e}"))?;
            runner_warm_ms.push(ms(began.elapsed()));
        }

        let client = Client::new(nats, ns.clone());
        // The registry learns availability from heartbeats: wait until every action routes.
        for a in ACTIONS {
            wait_routable(&client, &format!("bench.{}", a.name)).await?;
        }
        let mut targets = Vec::new();
        let verified = runner.verified();
        for a in ACTIONS {
            let (label, entry) = (a.label, a.entry);
            let action = format!("bench.{}", a.name);
            let resolved = client
                .resolve(&action, None, Mode::Sync)
                .await
                .map_err(|e| format!("resolving {action}: {e}"))?;
            let key = resolved.key().map_err(|e| format!("{action}: {e}"))?;
            let rt = resolved
                .runtime
                .as_ref()
                .ok_or_else(|| format!("{action}: its runtime is not registered"))?;
            let (runtime, version) = (key.runtime.clone(), key.version.clone());
            let pinned = verified
                .iter()
                .find(|v| v.runtime == runtime && v.version == version)
                .ok_or_else(|| format!("the runner did not verify {runtime} {version}"))?;
            let exec = rt
                .version(&version)
                .and_then(|v| v.execution_config.clone())
                .or_else(|| rt.execution_config.clone())
                .ok_or_else(|| format!("{runtime} {version} has no execution_config"))?;
            let env_dir = attune_runner::env::env_dir(&config.envs_dir, "bench", &key);
            let program = match exec
                .environment
                .as_ref()
                .and_then(|e| e.interpreter_path.as_deref())
            {
                Some(path) if attune_runner::env::wants_env(&exec) => {
                    PathBuf::from(path.replace("{env_dir}", &env_dir.to_string_lossy()))
                }
                _ => PathBuf::from(&pinned.binary),
            };
            let mut args = exec.interpreter.args.clone();
            args.push(
                pack_dir
                    .join("actions")
                    .join(entry)
                    .to_string_lossy()
                    .into_owned(),
            );
            targets.push(Target {
                label,
                action,
                runtime,
                version,
                program,
                args,
                cwd: pack_dir.clone(),
                warm: a.warm,
            });
        }

        Ok(Stack {
            server,
            client,
            registry,
            runner,
            _dir: dir,
            startup: Startup {
                registry_ms,
                runner_first_ms,
                runner_warm_ms,
            },
            targets,
            path: config.path.clone(),
        })
    }

    /// Turns the runner's execution records and live output on or off.
    pub fn set_recording(&self, on: bool) {
        self.runner.set_recording(on);
    }

    /// Drains the runner, stops the registry, then (on drop) the server.
    pub async fn stop(self) {
        self.runner.drain().await;
        self.registry.stop().await;
        drop(self.server);
    }
}

/// Waits until `action` runs by name (20 s at most).
async fn wait_routable(client: &Client, action: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let subject = client.namespace().action(action);
    let request = InvocationRequest {
        id: None,
        action: action.to_string(),
        parameters: Default::default(),
        timeout_seconds: None,
    };
    loop {
        let last = match client.invoke_subject(&subject, &request, None).await {
            Ok(r) if r.status == Status::Succeeded => return Ok(()),
            Ok(r) => format!("{} {}", r.status.as_str(), r.error.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!("{action} is not routable by name: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Milliseconds as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
