//! What the long-running commands (`registry serve`, `runner start`, `up`) share: connecting
//! with retries, and the signals that stop them.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use attune_nats::connect::{ConnectError, JetStreamDomain, Resolved};
use tracing::warn;

use crate::error::CliError;
use crate::global::Global;

/// How long a service keeps retrying a server that refuses its credentials. Long enough to ride
/// out a server reloading its configuration, short enough that a wrong password is reported
/// while someone is still looking (exit 77), not retried forever.
const AUTH_RETRY_LIMIT: Duration = Duration::from_secs(10);

/// A stop signal that has not fired yet, to hand to the service it should stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's connection: the client, where its JetStream resources are, and the stop signal
/// that has not fired yet.
pub struct ServiceConnection {
    /// The connected client.
    pub client: async_nats::Client,
    /// `--js-domain` (or the context's): the service's [`attune_nats::connect::JetStreamDomain`].
    pub jetstream_domain: JetStreamDomain,
    /// The stop signal to hand to the service.
    pub signal: StopSignal,
}

/// Connects with retries unless asked to stop first. Returns the connection with the pending
/// stop signal, `None` when stopped while waiting (the service then exits 0), or the error no
/// retry can fix (unusable options, or credentials refused for [`AUTH_RETRY_LIMIT`]).
///
/// `name` is the connection's name as the server shows it (`/connz`, `nats server report
/// connections`): on a cluster it is how an operator tells which node the registry and each
/// runner are connected to, since the client picks a server of the list at random.
pub async fn connect_until_stopped(
    global: &Global,
    name: String,
) -> Result<Option<ServiceConnection>, CliError> {
    let mut spec = global.spec();
    spec.name = Some(name);
    let resolved = spec.resolve()?;
    let mut signal: StopSignal = Box::pin(shutdown_signal());
    tokio::select! {
        c = connect_with_backoff(&resolved) => Ok(Some(ServiceConnection {
            client: c?,
            jetstream_domain: resolved.jetstream_domain().clone(),
            signal,
        })),
        _ = &mut signal => Ok(None),
    }
}

/// Connects, retrying with exponential backoff (100 ms doubling up to 5 s) until NATS answers:
/// a service started before its server, or during a server restart, should wait, not exit.
/// Unusable options fail at once; refused credentials fail after [`AUTH_RETRY_LIMIT`].
pub async fn connect_with_backoff(resolved: &Resolved) -> Result<async_nats::Client, CliError> {
    let mut delay = Duration::from_millis(100);
    let mut refused_since: Option<Instant> = None;
    loop {
        match resolved.connect().await {
            // Services log violations (attune_nats does) but keep serving what they may.
            Ok(conn) => return Ok(conn.client),
            Err(e) if e.is_config() => return Err(e.into()),
            Err(e @ ConnectError::NotAuthorized { .. }) => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= AUTH_RETRY_LIMIT {
                    return Err(e.into());
                }
                warn!(servers = %resolved.server_list(), error = %e, retry_in = ?delay, "NATS refused the credentials");
            }
            Err(e) => {
                refused_since = None;
                warn!(servers = %resolved.server_list(), error = %e, retry_in = ?delay, "NATS not reachable");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
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
