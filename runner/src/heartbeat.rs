//! The runner's heartbeat in `attune-runners`: who it is, what it serves, how busy it is.
//!
//! The bucket's TTL removes a runner that dies; a runner that drains deletes its own entry so the
//! registry stops counting it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream::kv::Store;
use attune_nats::jetstream::HEARTBEAT_INTERVAL;
use attune_nats::RunnerHeartbeat;
use tracing::{debug, warn};

use crate::catalog::Catalog;
use crate::service::Dispatcher;
use attune_nats::shutdown::Shutdown;

/// Writes heartbeats until stopped.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// `attune-runners`.
    pub store: Store,
    /// Source of served versions.
    pub catalog: Arc<Catalog>,
    /// Source of capacity and load.
    pub dispatcher: Arc<Dispatcher>,
    /// Set once draining: beats say so until the entry is removed.
    pub draining: Arc<AtomicBool>,
    /// When the runner started.
    pub started_at: time::OffsetDateTime,
}

impl Heartbeat {
    /// The current heartbeat.
    pub fn current(&self) -> RunnerHeartbeat {
        let config = &self.dispatcher.config;
        RunnerHeartbeat {
            id: config.name.clone(),
            host: config.host.clone(),
            pid: std::process::id(),
            versions: self.catalog.verified_versions(),
            capacity: config.concurrency,
            in_flight: config.concurrency - self.dispatcher.slots.available_permits(),
            started_at: self.started_at,
            updated_at: time::OffsetDateTime::now_utc(),
            draining: self.draining.load(Ordering::Acquire),
            unknown_runtimes: self.catalog.read(|s| s.unknown_runtimes.clone()),
            warm_pools: self.dispatcher.warm.report(),
            records_dropped: self.dispatcher.history.dropped(),
        }
    }

    /// Writes one heartbeat now.
    pub async fn beat(&self) {
        let body = serde_json::to_vec(&self.current()).expect("a heartbeat serialises");
        if let Err(e) = self
            .store
            .put(&self.dispatcher.config.name, body.into())
            .await
        {
            warn!(error = %e, "heartbeat not written");
        }
    }

    /// Beats every [`HEARTBEAT_INTERVAL`] until `stop` fires.
    pub async fn run(self, mut stop: Shutdown) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => self.beat().await,
                _ = stop.recv() => break,
            }
        }
        debug!("heartbeat loop stopped");
    }

    /// Deletes this runner's entry.
    pub async fn remove(&self) {
        if let Err(e) = self.store.delete(&self.dispatcher.config.name).await {
            warn!(error = %e, "heartbeat not removed");
        }
    }
}
