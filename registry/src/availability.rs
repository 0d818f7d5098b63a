//! Availability: which versions live runners serve, kept current in the store.
//!
//! A version is available while at least one live, non-draining runner lists it; its
//! `verified_at` is the newest such heartbeat, and its `detected_versions` what those runners'
//! interpreters report (so `runtime list` shows a pre-release as one). [`run`] follows the `attune-runners` bucket into
//! the registry's [`Liveness`](crate::liveness::Liveness), sweeps expired heartbeats, and hands
//! every change of the available set to the store (which persists and republishes it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_nats::jetstream::Bucket;
use attune_nats::shutdown::Shutdown;
use attune_nats::watch::KvFollower;
use tracing::{debug, warn};

use crate::registry::Registry;
use crate::store::Availability;

/// How long a newer `verified_at` alone may wait before it is handed to the store.
const VERIFIED_AT_BATCH: Duration = Duration::from_secs(5);

/// Keeps availability current until shutdown: follows heartbeats (through errors and wipes),
/// sweeps expired ones every `sweep`, and hands every change to the store (which persists and
/// republishes it).
pub async fn run(registry: Arc<Registry>, sweep: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<Availability> = None;
    // Whether the set of available versions may have changed since it was last computed; a
    // heartbeat that only renews a runner is not such a change, so with many runners the
    // registry does not recompute (over every runner and version) per heartbeat.
    let mut dirty = true;
    let mut last_check = Instant::now();
    let check_every = sweep.max(Duration::from_secs(1));
    let mut heartbeats = KvFollower::new(
        registry.publisher.jetstream().clone(),
        Bucket::Runners.name(&registry.ns),
    )
    .with_check_interval(check_every);
    // Nothing is applied before the heartbeats there are now have been read: a registry that
    // just started knows no runner yet, and applying that empty set would mark every version
    // unavailable (and refuse every by-name call, and rewrite every route) until the first read.
    // Until then the store keeps the availability it persisted.
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            read = heartbeats.snapshot() => match read {
                Ok(changes) => {
                    for change in &changes {
                        registry.liveness.observe(change);
                    }
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the heartbeats yet; retrying");
                    tokio::time::sleep(sweep.max(Duration::from_millis(100))).await;
                }
            },
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            change = heartbeats.next() => dirty |= registry.liveness.observe(&change),
            // Heartbeats that stopped mean dead runners only while the watch is known to see
            // them: cut off from its server (a lost node, a leader election), it sees nothing,
            // and expiring every runner then would refuse every call by name. Until it is
            // current again, the last known runners stand.
            _ = tick.tick() => {
                let fresh = heartbeats
                    .confirmed_at()
                    .is_some_and(|at| at.elapsed() <= check_every * 3);
                if fresh {
                    dirty |= registry.liveness.sweep(Instant::now());
                } else {
                    debug!("heartbeat watch not confirmed current: not expiring runners now");
                }
            }
        }
        // A change of *which* versions are available goes out at once; a newer `verified_at`
        // alone waits a little (and the store throttles it further), so heartbeats do not turn
        // into a write and a publish each.
        if !dirty && last_check.elapsed() < VERIFIED_AT_BATCH {
            continue;
        }
        dirty = false;
        last_check = Instant::now();
        let now = registry.liveness.availability();
        if applied.as_ref() == Some(&now) {
            continue;
        }
        match registry.apply_availability(now.clone()).await {
            Ok(()) => applied = Some(now),
            Err(e) => {
                dirty = true;
                warn!(error = %e, "recording availability failed; will retry");
            }
        }
    }
}
