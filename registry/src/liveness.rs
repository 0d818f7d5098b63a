//! Liveness: which runners are alive, from their heartbeats, and what versions they serve.
//!
//! Heartbeats expire by the `attune-runners` bucket's `max_age` ([`HEARTBEAT_TTL`]), and
//! JetStream removes expired entries *without* a delete marker, so a watch never says that a
//! runner vanished. [`Liveness`] therefore gives each heartbeat a deadline (its server timestamp
//! plus the TTL) and is swept on a short interval; a clean drain deletes the key, which the watch
//! does see. Pure bookkeeping: [`crate::availability`] feeds it and acts on what it says.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use attune_nats::jetstream::HEARTBEAT_TTL;
use attune_nats::watch::KvChange;
use attune_nats::{RunnerHeartbeat, VersionKey};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::store::{Availability, Report};

/// One live runner: its latest heartbeat and when it stops counting.
struct Live {
    /// The newest heartbeat.
    beat: RunnerHeartbeat,
    /// When it stops counting unless another arrives.
    expires: Instant,
}

/// The live runners, by id.
#[derive(Default)]
pub struct Liveness {
    /// Runner id → its latest heartbeat; shared by the watch task and the API.
    runners: Mutex<HashMap<String, Live>>,
}

impl Liveness {
    /// Takes one change of `attune-runners` into account. True when it may change which
    /// versions are available (a runner came, left, started draining, or serves other versions):
    /// a heartbeat that only says "still here" is not, so the registry recomputes availability
    /// on changes, not on every heartbeat.
    pub fn observe(&self, change: &KvChange) -> bool {
        let mut runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            KvChange::Delete { key } => {
                let left = runners.remove(key).is_some();
                if left {
                    info!(runner = %key, "runner left");
                }
                left
            }
            KvChange::Put {
                key,
                value,
                created,
            } => match serde_json::from_slice::<RunnerHeartbeat>(value) {
                Ok(beat) => {
                    // Age by the server's clock, so a backlog replayed at start-up counts from
                    // when each beat was written, not from when the registry read it.
                    let age = (OffsetDateTime::now_utc() - *created).clamp(
                        time::Duration::ZERO,
                        time::Duration::try_from(HEARTBEAT_TTL).unwrap_or(time::Duration::ZERO),
                    );
                    let age = Duration::try_from(age).unwrap_or_default();
                    let expires = Instant::now() + HEARTBEAT_TTL.saturating_sub(age);
                    let changed = match runners.get(key) {
                        None => {
                            info!(runner = %key, host = %beat.host, "runner seen");
                            true
                        }
                        Some(old) => {
                            old.beat.draining != beat.draining
                                || old.beat.versions.len() != beat.versions.len()
                                || old.beat.versions.iter().zip(&beat.versions).any(|(a, b)| {
                                    (&a.runtime, &a.version, &a.detected_version)
                                        != (&b.runtime, &b.version, &b.detected_version)
                                })
                        }
                    };
                    runners.insert(key.clone(), Live { beat, expires });
                    changed
                }
                Err(e) => {
                    warn!(runner = %key, error = %e, "unreadable heartbeat ignored");
                    false
                }
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

    /// Each served version → newest heartbeat time, over live runners that take work.
    pub fn availability(&self) -> Availability {
        let runners = self.runners.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Availability = HashMap::new();
        for live in runners.values().filter(|l| !l.beat.draining) {
            let at = live.beat.updated_at;
            for v in &live.beat.versions {
                let report = out
                    .entry(VersionKey::new(&v.runtime, &v.version))
                    .or_insert_with(|| Report::new(at, []));
                report.at = report.at.max(at);
                report.detected.extend(v.detected_version.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_nats::wire::VerifiedVersion;

    fn beat(id: &str, versions: &[&str], draining: bool) -> KvChange {
        let mut hb = RunnerHeartbeat::new(
            id,
            "h",
            versions
                .iter()
                .map(|v| VerifiedVersion {
                    runtime: "python".into(),
                    version: (*v).into(),
                    detected_version: Some(format!("{v}.1")),
                    binary: "/usr/bin/python3".into(),
                })
                .collect(),
            1,
        );
        hb.draining = draining;
        KvChange::Put {
            key: id.into(),
            value: serde_json::to_vec(&hb).unwrap().into(),
            created: hb.updated_at,
        }
    }

    #[test]
    fn only_heartbeats_that_change_what_is_served_count_as_changes() {
        let l = Liveness::default();
        assert!(l.observe(&beat("a", &["3.12"], false)), "a new runner");
        assert!(!l.observe(&beat("a", &["3.12"], false)), "a renewal");
        assert!(
            l.observe(&beat("a", &["3.12", "3.13"], false)),
            "a new version"
        );
        assert!(l.observe(&beat("a", &["3.12", "3.13"], true)), "draining");
        assert!(
            !l.observe(&KvChange::Delete { key: "b".into() }),
            "unknown runner"
        );
        assert!(l.observe(&KvChange::Delete { key: "a".into() }), "left");
        assert!(!l.observe(&KvChange::Put {
            key: "c".into(),
            value: "not json".into(),
            created: OffsetDateTime::now_utc(),
        }));
    }
}
