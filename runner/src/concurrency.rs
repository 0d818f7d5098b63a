//! Cluster-wide concurrency limits, the runner's side: taking, renewing and releasing the slots of
//! limited actions in KV `attune-slots` (the rules are in `attune_nats::concurrency`).
//!
//! One follower per runner watches the bucket and keeps a view of the slots taken, so a runner
//! tries only the slots that look free, and wakes the invocations waiting for an action's slot as
//! soon as one is deleted or expires. The view may lag behind KV: the *create* of the key decides
//! who gets a slot, and waiters try again every [`RETRY_EVERY`] in case a change went unseen.
//!
//! A taken slot is a [`SlotLease`]: a task renews it by revision every
//! [`SLOT_LEASE_RENEW`](attune_nats::concurrency::SLOT_LEASE_RENEW) and deletes it (by revision
//! again, so a slot someone else took after an expiry is never freed by mistake) once the lease
//! is dropped. A runner that dies stops renewing, and the bucket expires its slots.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::Context;
use attune_nats::concurrency::{
    parse_slot_key, slot_key, Concurrency, SlotHolder, SLOT_LEASE_RENEW,
};
use attune_nats::watch::{KvChange, KvFollower};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tracing::{debug, warn};

/// How often a waiter tries the slots again without having heard that one came free.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Why no slot could be taken.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// Every slot is taken (and, for a wait, stayed taken until the deadline).
    #[error("all {limit} slots are taken")]
    Full {
        /// The action's limit.
        limit: u32,
    },
    /// KV did not answer: the limit cannot be checked, so nothing runs.
    #[error("the concurrency slots in KV cannot be reached: {0}")]
    Unreachable(String),
    /// The wait was given up (the runner is stopping).
    #[error("the wait for a concurrency slot was given up")]
    GivenUp,
}

/// What a runner knows of one limited action's slots.
#[derive(Debug, Default)]
struct ActionSlots {
    /// Slot indices taken, as last seen in KV (by anyone).
    taken: BTreeSet<u32>,
    /// Woken when one of the action's slots is deleted or expires.
    freed: Arc<Notify>,
    /// Invocations of this runner waiting for a slot.
    waiting: usize,
    /// Slots this runner holds.
    held: usize,
}

/// The slots of every limited action, as one runner sees and takes them.
#[derive(Debug)]
pub struct ClusterSlots {
    /// KV `attune-slots`.
    kv: kv::Store,
    /// This runner's id, written into the slots it takes.
    runner: String,
    /// Per action ref.
    actions: Mutex<HashMap<String, ActionSlots>>,
}

/// One slot taken: renewed while held, released when dropped.
#[derive(Debug)]
pub struct SlotLease {
    /// Dropped (with the lease) to tell the renewing task to release the slot.
    _release: oneshot::Sender<()>,
    /// To count the slot as no longer held.
    slots: Arc<ClusterSlots>,
    /// The action ref.
    action: String,
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        self.slots
            .with(&self.action, |a| a.held = a.held.saturating_sub(1));
    }
}

/// One action's numbers for the metrics: slots held here, invocations waiting here, slots taken
/// cluster-wide as this runner last saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStats {
    /// The action ref.
    pub action: String,
    /// Slots held by this runner.
    pub held: usize,
    /// Invocations on this runner waiting for a slot.
    pub waiting: usize,
    /// Slots taken by any runner.
    pub taken: usize,
}

impl ClusterSlots {
    /// The slots side of runner `runner`, over KV `kv`; starts following the bucket.
    pub fn start(js: Context, kv: kv::Store, runner: String) -> Arc<Self> {
        let bucket = kv.name.clone();
        let this = Arc::new(ClusterSlots {
            kv,
            runner,
            actions: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut follower = KvFollower::new(js, bucket);
            // The first read may fail while the server starts: the follower's `next` retries,
            // and meanwhile takers rely on KV alone.
            let mut changes = follower.snapshot().await.unwrap_or_default();
            loop {
                let Some(this) = weak.upgrade() else { return };
                for change in changes.drain(..) {
                    this.seen(&change);
                }
                drop(this);
                changes.push(follower.next().await);
            }
        });
        this
    }

    /// Applies one change of the bucket to the view, waking waiters when a slot came free.
    fn seen(&self, change: &KvChange) {
        let Some((action, index)) = parse_slot_key(change.key()) else {
            return;
        };
        self.with(action, |a| match change {
            KvChange::Put { .. } => {
                a.taken.insert(index);
            }
            KvChange::Delete { .. } => {
                a.taken.remove(&index);
                a.freed.notify_waiters();
            }
        });
    }

    /// Runs `f` on the state of `action`, created empty if new.
    fn with<T>(&self, action: &str, f: impl FnOnce(&mut ActionSlots) -> T) -> T {
        let mut actions = self.actions.lock().expect("never poisoned");
        f(actions.entry(action.to_string()).or_default())
    }

    /// The slots of `action` not taken as far as this runner has seen.
    fn looks_free(&self, action: &str, limit: Concurrency) -> Vec<u32> {
        self.with(action, |a| {
            (0..limit.limit).filter(|i| !a.taken.contains(i)).collect()
        })
    }

    /// Takes a free slot of `action` for execution `execution` if one is free now.
    pub async fn try_take(
        self: &Arc<Self>,
        action: &str,
        limit: Concurrency,
        execution: &str,
    ) -> Result<SlotLease, SlotError> {
        let candidates = self.looks_free(action, limit);
        self.take_among(action, candidates, limit, execution).await
    }

    /// Takes a slot of `action`, waiting for one until `deadline` (`None`: as long as it takes)
    /// or until `give_up` resolves.
    pub async fn take(
        self: &Arc<Self>,
        action: &str,
        limit: Concurrency,
        execution: &str,
        deadline: Option<Instant>,
        give_up: impl std::future::Future<Output = ()>,
    ) -> Result<SlotLease, SlotError> {
        self.with(action, |a| a.waiting += 1);
        let _waiting = Waiting(self.clone(), action.to_string());
        tokio::pin!(give_up);
        let mut all = false;
        loop {
            let freed = self.with(action, |a| a.freed.clone());
            let notified = freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Every so often every slot is tried, not just those the view says are free.
            let candidates = if all {
                (0..limit.limit).collect()
            } else {
                self.looks_free(action, limit)
            };
            match self.take_among(action, candidates, limit, execution).await {
                Ok(lease) => return Ok(lease),
                Err(SlotError::Full { .. }) => {}
                Err(e) => debug!(action, error = %e, "could not take a slot; trying again"),
            }
            let retry = Instant::now() + RETRY_EVERY;
            let until = deadline.map_or(retry, |d| d.min(retry));
            tokio::select! {
                _ = &mut notified => all = false,
                _ = tokio::time::sleep_until(until) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(SlotError::Full { limit: limit.limit });
                    }
                    all = true;
                }
                _ = &mut give_up => return Err(SlotError::GivenUp),
            }
        }
    }

    /// Tries to create the key of each slot in `candidates`, in order; the first created is
    /// the lease.
    async fn take_among(
        self: &Arc<Self>,
        action: &str,
        candidates: Vec<u32>,
        limit: Concurrency,
        execution: &str,
    ) -> Result<SlotLease, SlotError> {
        let holder = SlotHolder {
            action: action.to_string(),
            runner: self.runner.clone(),
            execution: execution.to_string(),
            since: time::OffsetDateTime::now_utc(),
        };
        let value: bytes::Bytes = serde_json::to_vec(&holder)
            .expect("a slot holder serialises")
            .into();
        let mut unreachable = None;
        for index in candidates {
            let key = slot_key(action, index);
            match self.kv.create(&key, value.clone()).await {
                Ok(revision) => {
                    self.with(action, |a| {
                        a.taken.insert(index);
                        a.held += 1;
                    });
                    return Ok(self.hold(action, key, value, revision));
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    self.with(action, |a| a.taken.insert(index));
                }
                Err(e) => unreachable = Some(e.to_string()),
            }
        }
        match unreachable {
            Some(e) => Err(SlotError::Unreachable(e)),
            None => Err(SlotError::Full { limit: limit.limit }),
        }
    }

    /// Starts renewing the slot at `key`, and returns the lease that releases it.
    fn hold(
        self: &Arc<Self>,
        action: &str,
        key: String,
        value: bytes::Bytes,
        mut revision: u64,
    ) -> SlotLease {
        let (release, mut released) = oneshot::channel::<()>();
        let kv = self.kv.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(Instant::now() + SLOT_LEASE_RENEW, SLOT_LEASE_RENEW);
            loop {
                tokio::select! {
                    _ = &mut released => break,
                    _ = tick.tick() => match kv.update(&key, value.clone(), revision).await {
                        Ok(r) => revision = r,
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                            // Expired (this runner was cut off for longer than the lease) and
                            // perhaps taken by another: not ours to renew or delete any more.
                            warn!(slot = %key, "a concurrency slot expired while its execution ran: the limit may be exceeded until it ends");
                            return;
                        }
                        Err(e) => debug!(slot = %key, error = %e, "could not renew a concurrency slot; retrying"),
                    }
                }
            }
            if let Err(e) = kv.delete_expect_revision(&key, Some(revision)).await {
                debug!(slot = %key, error = %e, "could not release a concurrency slot; it expires");
            }
        });
        SlotLease {
            _release: release,
            slots: self.clone(),
            action: action.to_string(),
        }
    }

    /// Every limited action this runner has seen or used, with its numbers.
    pub fn stats(&self) -> Vec<SlotStats> {
        let actions = self.actions.lock().expect("never poisoned");
        let mut out: Vec<SlotStats> = actions
            .iter()
            .map(|(action, a)| SlotStats {
                action: action.clone(),
                held: a.held,
                waiting: a.waiting,
                taken: a.taken.len(),
            })
            .collect();
        out.sort_by(|a, b| a.action.cmp(&b.action));
        out
    }
}

/// Counts one waiter for as long as it waits, however the wait ends.
struct Waiting(Arc<ClusterSlots>, String);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0
            .with(&self.1, |a| a.waiting = a.waiting.saturating_sub(1));
    }
}
