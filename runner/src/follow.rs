//! Watching KV: the runner's three buckets turned into [`Change`]s for the reconciler.
//!
//! Each bucket is followed by one [`KvFollower`] (the shared watch helper), so errors, server
//! restarts and a wiped JetStream are survived without a restart: a re-created bucket is read
//! again and its differences arrive here as ordinary puts and deletes.

use async_nats::jetstream;
use attune_nats::shutdown::Shutdown;
use attune_nats::watch::{KvChange, KvFollower, WatchError};
use attune_nats::{Action, PackMeta, Runtime};
use tokio::sync::mpsc;
use tracing::{debug, error};

/// A change seen on KV, decoded.
#[derive(Debug)]
pub enum Change {
    /// A runtime was put (`Some`) or deleted (`None`).
    Runtime(String, Option<Runtime>),
    /// An action was put or deleted.
    Action(String, Option<Action>),
    /// A pack's metadata was put or deleted.
    Pack(String, Option<PackMeta>),
}

/// Which bucket a follower reads, and so how its values decode.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `attune-runtimes`.
    Runtime,
    /// `attune-actions`.
    Action,
    /// `attune-packs`.
    Pack,
}

impl Kind {
    /// Decodes one KV change. A value that does not parse counts as a delete: what cannot be
    /// read cannot be served.
    pub fn decode(self, change: KvChange) -> Change {
        fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
            serde_json::from_slice(value)
                .inspect_err(
                    |e| error!(%key, error = %e, "ignoring a KV value that does not parse"),
                )
                .ok()
        }
        let (key, value) = match change {
            KvChange::Put { key, value, .. } => (key, Some(value)),
            KvChange::Delete { key } => (key, None),
        };
        match self {
            Kind::Runtime => {
                let rt = value.and_then(|v| parse::<Runtime>(&key, &v)).map(|mut r| {
                    r.normalize();
                    r
                });
                Change::Runtime(key, rt)
            }
            Kind::Action => {
                let a = value.and_then(|v| parse(&key, &v));
                Change::Action(key, a)
            }
            Kind::Pack => {
                let p = value.and_then(|v| parse(&key, &v));
                Change::Pack(key, p)
            }
        }
    }
}

/// Opens a follower of `bucket` and reads its current content, decoded.
pub async fn snapshot(
    js: &jetstream::Context,
    bucket: String,
    kind: Kind,
) -> Result<(KvFollower, Vec<Change>), WatchError> {
    let mut follower = KvFollower::new(js.clone(), bucket);
    let changes = follower.snapshot().await?;
    Ok((
        follower,
        changes.into_iter().map(|c| kind.decode(c)).collect(),
    ))
}

/// Forwards every later change of `follower` to the reconciler until shutdown.
pub async fn forward(
    mut follower: KvFollower,
    kind: Kind,
    tx: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    loop {
        let change = tokio::select! {
            _ = shutdown.recv() => break,
            c = follower.next() => c,
        };
        if tx.send(kind.decode(change)).await.is_err() {
            break;
        }
    }
    debug!(bucket = follower.bucket(), "stopped following");
}
