//! `attune up`: everything on one machine — nats-server (when none is reachable), the registry
//! and one runner — until Ctrl-C.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use attune_nats::connect::Resolved;
use attune_nats::local::start_server;
use clap::Args;
use tokio::sync::watch;

use crate::error::{CliError, ComponentError};
use crate::global::Global;

/// Start a local Attune: nats-server with JetStream (only if none answers at --server), the
/// registry with the packs in --packs, and one runner serving every runtime this host verifies.
/// Ctrl-C stops everything it started.
///
/// Examples:
///   attune up
///   attune up --packs ./packs --data-dir /tmp/attune
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

    // 1. NATS: use the one at --server (or the context's), or start one there if it is on this
    // machine. The resolved list has no credentials in it, so it is safe to print.
    let nats = global.spec().resolve()?;
    let servers = nats.server_list();
    let mut nats_child = None;
    if !reachable(&servers) {
        let Some(port) = local_port(&servers) else {
            return Err(CliError::NoLocalServer { server: servers });
        };
        let store = data_dir.join("nats");
        let child = start_server(port, &store, &data_dir.join("nats-server.log"))?;
        println!(
            "nats-server  started on 127.0.0.1:{port} (store {})",
            store.display()
        );
        nats_child = Some(child);
    } else {
        println!("nats-server  using the one at {servers}");
    }

    let outcome = serve(global, &nats, &args, &data_dir).await;

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

/// Runs the registry and the runner until a signal, then stops them in order. A component that
/// failed makes [`CliError::Components`], which lists every failure.
///
/// Both run in this process on one connection, so they use exactly the connection settings
/// `attune up` was given; no credential is passed on to another process.
async fn serve(
    global: &Global,
    nats: &Resolved,
    args: &UpArgs,
    data_dir: &std::path::Path,
) -> Result<ExitCode, CliError> {
    let ns = global.namespace()?;
    let client = nats.connect().await?.client;
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
    let registry = tokio::spawn(attune_registry::serve(
        registry_config,
        client.clone(),
        stopped(stop_rx.clone()),
    ));

    let mut runner_config =
        attune_runner::RunnerConfig::new(data_dir.join("envs"), data_dir.join("cache"));
    runner_config.namespace = ns;
    runner_config.concurrency = args.concurrency;
    let runner = tokio::spawn(attune_runner::run(
        runner_config,
        client.clone(),
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
    println!("Ctrl-C stops everything.");

    let exited_early = tokio::select! {
        _ = crate::service::shutdown_signal() => false,
        _ = registry_done(&registry) => true,
    };
    let _ = stop_tx.send(true);
    println!();
    println!("stopping: the runner drains in-flight work, then the registry stops");
    let mut failures = Vec::new();
    match runner.await {
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
    let registry = registry.await;
    if exited_early {
        failures.push(ComponentError::ExitedEarly {
            what: "registry",
            source: match registry {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Box::new(e)),
                Err(e) => Some(Box::new(e)),
            },
        });
    } else {
        match registry {
            Ok(Ok(())) => println!("registry     stopped"),
            Ok(Err(e)) => failures.push(ComponentError::Failed {
                what: "registry",
                source: Box::new(e),
            }),
            Err(e) => failures.push(ComponentError::Failed {
                what: "registry task",
                source: Box::new(e),
            }),
        }
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Components(failures))
    }
}

/// Resolves when the registry task has ended on its own (an error: it should run until told).
async fn registry_done<T>(task: &tokio::task::JoinHandle<T>) {
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
