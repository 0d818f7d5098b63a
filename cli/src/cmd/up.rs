//! `attune up`: everything on one machine — nats-server (when none is reachable), the registry
//! and one runner — until Ctrl-C. With `--secure`, nats-server runs the configuration of an auth
//! directory (`attune auth init`'s files, kept under the data directory) and every component
//! connects with its own role's key.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use attune_nats::auth::{self, AuthDir, AuthOptions};
use attune_nats::connect::{ConnectSpec, Resolved};
use attune_nats::local::{start_server, start_with_config};
use attune_nats::roles::Role;
use clap::Args;
use tokio::sync::watch;

use crate::error::{CliError, ComponentError};
use crate::global::Global;

/// Start a local Attune: nats-server with JetStream (only if none answers at --server), the
/// registry with the packs in --packs, and one runner serving every runtime this host verifies.
/// Ctrl-C stops everything it started.
///
/// With --secure, nats-server requires a key: the registry, the runner and you each get one with
/// the least permissions of their role (see `attune auth init`). The files are made once, in
/// DATA_DIR/auth, and reused.
///
/// Examples:
///   attune up
///   attune up --packs ./packs --data-dir /tmp/attune
///   attune up --secure --tls
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Pack directories (a pack, or a directory of packs).
    #[arg(long, default_value = "packs", num_args = 1..)]
    pub packs: Vec<PathBuf>,
    /// Where the nats-server store, the registry database, pack cache and environments live.
    #[arg(long, default_value = ".attune")]
    pub data_dir: PathBuf,
    /// How many invocations the runner runs at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Run nats-server with per-role nkeys and permissions (files in DATA_DIR/auth).
    #[arg(long)]
    pub secure: bool,
    /// With --secure: require TLS with client certificates (a private CA is generated).
    #[arg(long, requires = "secure")]
    pub tls: bool,
}

/// Runs `attune up` until Ctrl-C or SIGTERM.
pub async fn run(global: &Global, args: UpArgs) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|source| CliError::Io {
        what: "creating",
        path: args.data_dir.clone(),
        source,
    })?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .unwrap_or(args.data_dir.clone());

    // 1. The auth directory, with --secure: made on the first run, reused after.
    let nats = global.spec().resolve()?;
    let secure = if args.secure {
        Some(auth_dir(global, &nats, &args, &data_dir)?)
    } else {
        None
    };
    // The resolved list has no credentials in it, so it is safe to print.
    let servers = secure
        .as_ref()
        .map_or_else(|| nats.server_list(), |a| a.url.clone());

    // 2. NATS: use the one at --server (or the context's), or start one there if it is on this
    // machine.
    let mut nats_child = None;
    if !reachable(&servers) {
        let Some(port) = local_port(&servers) else {
            return Err(CliError::NoLocalServer { server: servers });
        };
        let log = data_dir.join("nats-server.log");
        let child = match &secure {
            Some(auth) => start_with_config(&auth.server_config, port, &log)?,
            None => start_server(port, &data_dir.join("nats"), &log)?,
        };
        match &secure {
            Some(auth) => println!(
                "nats-server  started on {servers} with {}",
                auth.server_config.display()
            ),
            None => println!(
                "nats-server  started on 127.0.0.1:{port} (store {})",
                data_dir.join("nats").display()
            ),
        }
        nats_child = Some(child);
    } else {
        println!("nats-server  using the one at {servers}");
    }

    let outcome = serve(global, &nats, &args, &data_dir, secure.as_ref()).await;

    if let Some(mut child) = nats_child {
        // SIGTERM lets nats-server flush JetStream; then make sure it is gone.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        println!("nats-server  stopped");
    }
    outcome
}

/// The auth directory of `up --secure`: DATA_DIR/auth as an earlier run left it, or new files
/// for a server on --server's port whose JetStream store is DATA_DIR/nats.
fn auth_dir(
    global: &Global,
    nats: &Resolved,
    args: &UpArgs,
    data_dir: &Path,
) -> Result<AuthDir, CliError> {
    let dir = data_dir.join("auth");
    if auth::exists(&dir) {
        let existing = auth::load(&dir)?;
        if existing.tls.is_some() != args.tls {
            println!(
                "note         {} was made {} TLS and is used as it is (delete it to change)",
                dir.display(),
                if existing.tls.is_some() {
                    "with"
                } else {
                    "without"
                }
            );
        }
        return Ok(existing);
    }
    let Some(port) = local_port(&nats.server_list()) else {
        return Err(CliError::NoLocalServer {
            server: nats.server_list(),
        });
    };
    let mut opts = AuthOptions::new(global.namespace()?);
    opts.port = port;
    opts.tls = args.tls;
    opts.store_dir = Some(data_dir.join("nats"));
    let made = auth::init(&dir, &opts)?;
    println!(
        "auth         wrote keys, contexts and {} under {}",
        made.server_config.display(),
        dir.display()
    );
    Ok(made)
}

/// Connects the component playing `role`: through that role's context file when secure (the
/// same file a user would pass with `--context`), else with the options `attune up` was given.
async fn connect_as(
    nats: &Resolved,
    secure: Option<&AuthDir>,
    role: Role,
) -> Result<async_nats::Client, CliError> {
    let Some(auth) = secure else {
        return Ok(nats.connect().await?.client);
    };
    let spec = ConnectSpec {
        context: Some(auth.for_role(role)?.context.display().to_string()),
        ..ConnectSpec::default()
    };
    Ok(spec.resolve()?.connect().await?.client)
}

/// Runs the registry and the runner until a signal, then stops them in order. The registry has
/// published (buckets, streams, object stores) before the runner starts, so the runner only opens
/// them. A component that failed makes [`CliError::Components`], which lists every failure.
///
/// Both run in this process, so they use exactly the connection settings `attune up` was given
/// (or, with --secure, their role's context); no credential is passed on to another process.
async fn serve(
    global: &Global,
    nats: &Resolved,
    args: &UpArgs,
    data_dir: &std::path::Path,
    secure: Option<&AuthDir>,
) -> Result<ExitCode, CliError> {
    let ns = global.namespace()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut registry_config = attune_registry::ServeConfig::new(
        data_dir.join("registry"),
        args.packs.clone(),
        ns.clone(),
    );
    // Local use: the --packs directories may also be registered again by path.
    registry_config.allow_register_from = args.packs.clone();
    registry_config.jetstream_domain = nats.jetstream_domain().clone();
    let registry_client = connect_as(nats, secure, Role::Registry).await?;
    let running = attune_registry::start(registry_config, registry_client)
        .await
        .map_err(|e| {
            CliError::Components(vec![ComponentError::Failed {
                what: "registry",
                source: Box::new(e),
            }])
        })?;
    let registry = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            stop.await;
            running.stop().await;
        }
    });

    let mut runner_config =
        attune_runner::RunnerConfig::new(data_dir.join("envs"), data_dir.join("cache"));
    runner_config.namespace = ns;
    runner_config.concurrency = args.concurrency;
    runner_config.jetstream_domain = nats.jetstream_domain().clone();
    let runner_client = connect_as(nats, secure, Role::Runner).await?;
    let runner = tokio::spawn(attune_runner::run(
        runner_config,
        runner_client,
        stopped(stop_rx.clone()),
    ));

    println!(
        "registry     serving packs from {}",
        args.packs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "runner       verifying interpreters and building environments under {}",
        data_dir.display()
    );
    println!();
    match secure {
        Some(auth) => {
            let client = auth.for_role(Role::Client)?.context.display().to_string();
            let admin = auth.for_role(Role::Admin)?.context.display().to_string();
            println!("Try, in another terminal (the client context may invoke and read):");
            println!("  attune --context {client} runtime list");
            println!("  attune --context {client} invoke core.echo message=hi");
            println!("Changes (pack register/remove, runtime default/enable/disable) need admin:");
            println!("  attune --context {admin} pack register ./my-pack");
        }
        None => {
            match nats.context() {
                Some(context) => println!(
                    "Try, in another terminal (NATS_URL={} NATS_CONTEXT={context}):",
                    nats.server_list()
                ),
                None => println!(
                    "Try, in another terminal (NATS_URL={}):",
                    nats.server_list()
                ),
            }
            println!("  attune runtime list");
            println!("  attune resolve core.py_info");
            println!("  attune invoke core.echo message=hi");
            println!("  attune invoke examples.greet name=Ada language=fr");
        }
    }
    println!("Ctrl-C stops everything.");

    let exited_early = tokio::select! {
        _ = crate::service::shutdown_signal() => false,
        _ = task_done(&runner) => true,
    };
    let _ = stop_tx.send(true);
    println!();
    println!("stopping: the runner drains in-flight work, then the registry stops");
    let mut failures = Vec::new();
    let runner = runner.await;
    if exited_early {
        failures.push(ComponentError::ExitedEarly {
            what: "runner",
            source: match runner {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Box::new(e)),
                Err(e) => Some(Box::new(e)),
            },
        });
    } else {
        match runner {
            Ok(Ok(())) => println!("runner       stopped"),
            Ok(Err(e)) => failures.push(ComponentError::Failed {
                what: "runner",
                source: Box::new(e),
            }),
            Err(e) => failures.push(ComponentError::Failed {
                what: "runner task",
                source: Box::new(e),
            }),
        }
    }
    match registry.await {
        Ok(()) => println!("registry     stopped"),
        Err(e) => failures.push(ComponentError::Failed {
            what: "registry task",
            source: Box::new(e),
        }),
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Components(failures))
    }
}

/// Resolves when a component's task has ended on its own (an error: it should run until told).
async fn task_done<T>(task: &tokio::task::JoinHandle<T>) {
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether something accepts TCP connections at the first URL of `server`.
fn reachable(server: &str) -> bool {
    let Some(addr) = host_port(server) else {
        return false;
    };
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// The port of `server` when it names this machine.
fn local_port(server: &str) -> Option<u16> {
    let hp = host_port(server)?;
    let (host, port) = hp.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]").then_some(())?;
    port.parse().ok()
}

/// `nats://host:port,…` → `host:port` of the first server (port 4222 when absent).
fn host_port(server: &str) -> Option<String> {
    let first = server.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return None;
    }
    Some(if rest.contains(':') && !rest.ends_with(']') {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("nats://127.0.0.1:4222").as_deref(),
            Some("127.0.0.1:4222")
        );
        assert_eq!(
            host_port("nats://localhost").as_deref(),
            Some("localhost:4222")
        );
        assert_eq!(
            host_port("tls://u:p@h:1,nats://x:2").as_deref(),
            Some("h:1")
        );
        assert_eq!(local_port("nats://127.0.0.1:4333"), Some(4333));
        assert_eq!(local_port("nats://demo.nats.io:4222"), None);
    }
}
