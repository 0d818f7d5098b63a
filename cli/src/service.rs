//! What the long-running commands (`registry serve`, `runner start`, `up`) share: connecting
//! with retries, and the signals that stop them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tracing::warn;

use crate::error::CliError;
use crate::global::{ConnectError, Global};

/// A stop signal that has not fired yet, to hand to the service it should stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Connects with retries unless asked to stop first. Returns the client and the pending stop
/// signal, `None` when stopped while waiting (the service then exits 0), or the error of options
/// that no retry can fix (a bad prefix or credentials file).
pub async fn connect_until_stopped(
    global: &Global,
) -> Result<Option<(async_nats::Client, StopSignal)>, CliError> {
    let mut signal: StopSignal = Box::pin(shutdown_signal());
    tokio::select! {
        c = connect_with_backoff(global) => match c {
            Ok(c) => Ok(Some((c, signal))),
            Err(e) => Err(CliError::ServiceOptions(e)),
        },
        _ = &mut signal => Ok(None),
    }
}

/// Connects, retrying with exponential backoff (100 ms doubling up to 5 s) until NATS answers:
/// a service started before its server, or during a server restart, should wait, not exit.
pub async fn connect_with_backoff(global: &Global) -> Result<async_nats::Client, ConnectError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let opts = global.connect_options().await?;
        match opts.connect(global.server.as_str()).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                warn!(server = %global.server, error = %e, retry_in = ?delay, "NATS not reachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT), the two ways services are asked to stop.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
