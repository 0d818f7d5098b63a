//! Availability: which versions live runners serve, from the `attune-runners` heartbeats.
//!
//! A version is available while at least one live, non-draining runner lists it; its
//! `verified_at` is the newest such heartbeat. Heartbeats expire by the bucket's `max_age`
//! ([`HEARTBEAT_TTL`]), and JetStream removes expired entries *without* a delete marker, so a
//! watch never says that a runner vanished. [`Liveness`] therefore gives each heartbeat a
//! deadline (its server timestamp plus the TTL) and [`run`] sweeps on a short interval; a clean
//! drain deletes the key, which the watch does see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation};
use attune_nats::jetstream::{Bucket, HEARTBEAT_TTL};
use attune_nats::RunnerHeartbeat;
use futures::StreamExt;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::registry::Registry;
use crate::serve::Shutdown;
use crate::store::Availability;

/// How long a newer `verified_at` alone may wait before it is handed to the store.
const VERIFIED_AT_BATCH: Duration = Duration::from_secs(5);

struct Live {
    beat: RunnerHeartbeat,
    expires: Instant,
}

/// The live runners, by id.
#[derive(Default)]
pub struct Liveness {
    runners: Mutex<HashMap<String, Live>>,
}

impl Liveness {
    /// Takes one KV entry of `attune-runners` into account.
    pub fn observe(&self, entry: &Entry) {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        match entry.operation {
            Operation::Delete | Operation::Purge => {
                if runners.remove(&entry.key).is_some() {
                    info!(runner = %entry.key, "runner left");
                }
            }
            Operation::Put => match serde_json::from_slice::<RunnerHeartbeat>(&entry.value) {
                Ok(beat) => {
                    // Age by the server's clock, so a backlog replayed at start-up counts from
                    // when each beat was written, not from when the registry read it.
                    let age = (OffsetDateTime::now_utc() - entry.created).clamp(
                        time::Duration::ZERO,
                        time::Duration::try_from(HEARTBEAT_TTL).unwrap_or(time::Duration::ZERO),
                    );
                    let age = Duration::try_from(age).unwrap_or_default();
                    let expires = Instant::now() + HEARTBEAT_TTL.saturating_sub(age);
                    if !runners.contains_key(&entry.key) {
                        info!(runner = %entry.key, host = %beat.host, "runner seen");
                    }
                    runners.insert(entry.key.clone(), Live { beat, expires });
                }
                Err(e) => warn!(runner = %entry.key, error = %e, "unreadable heartbeat ignored"),
            },
        }
    }

    /// Forgets runners whose last heartbeat is older than the TTL; true if any were dropped.
    pub fn sweep(&self, now: Instant) -> bool {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        let before = runners.len();
        runners.retain(|id, live| {
            let keep = live.expires > now;
            if !keep {
                info!(runner = %id, "runner stopped heartbeating");
            }
            keep
        });
        runners.len() != before
    }

    /// The live runners' latest heartbeats, by id.
    pub fn runners(&self) -> Vec<RunnerHeartbeat> {
        let runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<RunnerHeartbeat> = runners.values().map(|l| l.beat.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// (runtime, version) → newest heartbeat time, over live runners that take work.
    pub fn availability(&self) -> Availability {
        let runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Availability = HashMap::new();
        for live in runners.values().filter(|l| !l.beat.draining) {
            for v in &live.beat.versions {
                let at = &live.beat.updated_at;
                out.entry((v.runtime.clone(), v.version.clone()))
                    .and_modify(|cur| {
                        if newer(at, cur) {
                            cur.clone_from(at);
                        }
                    })
                    .or_insert_with(|| at.clone());
            }
        }
        out
    }
}

fn newer(a: &str, b: &str) -> bool {
    match (attune_nats::time::parse(a), attune_nats::time::parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => a > b,
    }
}

/// Keeps availability current until shutdown: watches heartbeats, sweeps expired ones every
/// `sweep`, and hands every change to the store (which persists and republishes it).
/// `rewatch` asks for a fresh watch (the supervisor saw the bucket vanish and re-created it).
pub async fn run(
    registry: Arc<Registry>,
    sweep: Duration,
    mut rewatch: tokio::sync::watch::Receiver<u64>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<Availability> = None;
    let mut last_apply = Instant::now();
    'outer: loop {
        let watch = match registry.publisher.bucket(Bucket::Runners).await {
            Ok(kv) => kv.watch_with_history(">").await.ok(),
            Err(_) => None,
        };
        let Some(mut watch) = watch else {
            debug!("heartbeat watch unavailable; retrying");
            tokio::select! {
                _ = shutdown.wait() => break 'outer,
                _ = tokio::time::sleep(sweep) => continue 'outer,
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.wait() => break 'outer,
                _ = rewatch.changed() => continue 'outer,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => registry.liveness.observe(&entry),
                    Some(Err(e)) => {
                        warn!(error = %e, "heartbeat watch failed; re-creating it");
                        continue 'outer;
                    }
                    None => continue 'outer,
                },
                _ = tick.tick() => {
                    registry.liveness.sweep(Instant::now());
                }
            }
            let now = registry.liveness.availability();
            if applied.as_ref() == Some(&now) {
                continue;
            }
            // A change in *which* versions are available goes out at once; a newer
            // `verified_at` alone waits a little (and the store throttles it further), so
            // heartbeats do not turn into a write and a publish each.
            let same_set = applied
                .as_ref()
                .is_some_and(|a| a.len() == now.len() && a.keys().all(|k| now.contains_key(k)));
            if same_set && last_apply.elapsed() < VERIFIED_AT_BATCH {
                continue;
            }
            match registry.apply_availability(now.clone()).await {
                Ok(()) => {
                    applied = Some(now);
                    last_apply = Instant::now();
                }
                Err(e) => warn!(error = %e, "recording availability failed; will retry"),
            }
        }
    }
}
