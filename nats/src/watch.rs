//! Following a KV bucket for as long as the process lives: the one watch helper.
//!
//! The registry follows runtimes, actions and heartbeats; runners follow runtimes, actions and
//! packs. A plain KV watch stops at the first error, and worse, a JetStream that was wiped and
//! re-created starts its revisions again at 1, so a watch resumed "after the last revision seen"
//! silently skips the first entries of the new bucket. [`KvFollower`] hides all of that:
//!
//! - [`KvFollower::snapshot`] reads the bucket's current content once;
//! - [`KvFollower::next`] then yields every change, for ever. On a watch error or end it opens the
//!   bucket again with backoff and resumes after the last revision it saw — unless the bucket is a
//!   new one (its stream was created anew, or its revisions went backwards), in which case it
//!   re-reads the whole bucket and yields the difference to what it had reported: a `Put` for
//!   every key that is new or changed, a `Delete` for every key that is gone. A wipe that happens
//!   while the watch stays silent is caught by a periodic check of the bucket's identity.
//! - The same check catches a watch that went quiet while the bucket moved on: on a cluster, the
//!   node holding the watch's consumer can die while this client stays connected to another
//!   node, and the client only notices after two missed idle heartbeats (10 s), longer than a
//!   runner's heartbeat lives. A bucket ahead of the watch at two checks in a row, with nothing
//!   delivered in between, means the watch is dead: the bucket is read again and watched anew.
//!
//! So a consumer that applies the changes in order always ends up with the bucket's current
//! content, whatever happened to the server in between; it never has to restart.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How often a follower checks that its bucket is still the one it watches, by default.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to open a bucket again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One change to a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    /// `key` now holds `value`, written at `created` (by the server's clock).
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Bytes,
        /// When the server stored it.
        created: OffsetDateTime,
    },
    /// `key` was deleted, purged, or vanished with its bucket.
    Delete {
        /// The key.
        key: String,
    },
}

impl KvChange {
    /// The key the change is about.
    pub fn key(&self) -> &str {
        match self {
            KvChange::Put { key, .. } | KvChange::Delete { key } => key,
        }
    }
}

/// Why the first read of a bucket failed.
#[derive(Debug, thiserror::Error)]
#[error("reading KV bucket \"{bucket}\"")]
pub struct WatchError {
    /// The bucket.
    pub bucket: String,
    /// The client's error.
    #[source]
    pub source: async_nats::Error,
}

/// Follows one KV bucket through errors, restarts and wipes (see the module docs).
pub struct KvFollower {
    /// Opens the bucket again after an error.
    js: jetstream::Context,
    /// The bucket's name.
    bucket: String,
    /// Every key's value as last reported, to turn a re-read into changes.
    known: HashMap<String, Bytes>,
    /// The last revision seen (the bucket stream's sequence).
    revision: u64,
    /// When the bucket's stream was created: a different time means a different bucket.
    created: Option<OffsetDateTime>,
    /// The live watch, when there is one.
    watch: Option<kv::Watch>,
    /// Changes found by a re-read, not yet handed out.
    pending: VecDeque<KvChange>,
    /// Failed attempts to open the bucket in a row, for backoff.
    failures: u32,
    /// How often the bucket's identity is checked.
    check_every: Duration,
    /// When it is checked next.
    next_check: Instant,
    /// The revision seen at the last check when the bucket was already ahead of it: the same
    /// revision at the next check means nothing was delivered meanwhile, so the watch is dead.
    behind_at: Option<u64>,
    /// When the follower last knew it had everything the bucket holds: a whole read, or a
    /// check that found the watch current.
    confirmed: Option<Instant>,
}

impl std::fmt::Debug for KvFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvFollower")
            .field("bucket", &self.bucket)
            .field("revision", &self.revision)
            .field("keys", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl KvFollower {
    /// A follower of `bucket`; nothing is read until [`snapshot`](Self::snapshot) or
    /// [`next`](Self::next).
    pub fn new(js: jetstream::Context, bucket: impl Into<String>) -> Self {
        KvFollower {
            js,
            bucket: bucket.into(),
            known: HashMap::new(),
            revision: 0,
            created: None,
            watch: None,
            pending: VecDeque::new(),
            failures: 0,
            check_every: CHECK_INTERVAL,
            next_check: Instant::now() + CHECK_INTERVAL,
            behind_at: None,
            confirmed: None,
        }
    }

    /// When the follower last knew it was up to date with the bucket (a whole read, or a
    /// periodic check that found nothing missed). A consumer that acts on what is *absent* —
    /// the registry expiring runners whose heartbeats stopped — must not act while this is old:
    /// a watch cut off from its server sees nothing, and that is not the same as nothing
    /// happening.
    pub fn confirmed_at(&self) -> Option<Instant> {
        self.confirmed
    }

    /// Checks the bucket's identity every `every` instead of [`CHECK_INTERVAL`].
    pub fn with_check_interval(mut self, every: Duration) -> Self {
        self.check_every = every;
        self.next_check = Instant::now() + every;
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Reads the bucket's current content (one `Put` per key) and starts watching after it.
    /// Fails when the bucket cannot be read now; [`next`](Self::next) would keep trying instead.
    pub async fn snapshot(&mut self) -> Result<Vec<KvChange>, WatchError> {
        self.connect().await.map_err(|source| WatchError {
            bucket: self.bucket.clone(),
            source,
        })?;
        Ok(self.pending.drain(..).collect())
    }

    /// The next change. Never ends: errors are retried with backoff (logged), so callers select
    /// on this and their shutdown signal.
    pub async fn next(&mut self) -> KvChange {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return change;
            }
            let Some(watch) = self.watch.as_mut() else {
                if let Err(e) = self.connect().await {
                    self.failures += 1;
                    let wait = backoff(self.failures);
                    debug!(bucket = %self.bucket, error = %e, ?wait, "cannot watch yet; retrying");
                    tokio::time::sleep(wait).await;
                }
                continue;
            };
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        if let Some(change) = self.observe(entry) {
                            return change;
                        }
                    }
                    Some(Err(e)) => {
                        warn!(bucket = %self.bucket, error = %e, "KV watch failed; watching again");
                        self.watch = None;
                    }
                    None => {
                        debug!(bucket = %self.bucket, "KV watch ended; watching again");
                        self.watch = None;
                    }
                },
                _ = tokio::time::sleep_until(self.next_check) => {
                    self.next_check = Instant::now() + self.check_every;
                    match check_bucket(&self.js, &self.bucket, self.created, self.revision).await {
                        Check::Other => {
                            info!(bucket = %self.bucket, "KV bucket was re-created, is gone or cannot be reached; reading it again");
                            self.watch = None;
                            self.behind_at = None;
                        }
                        Check::Behind if self.behind_at == Some(self.revision) => {
                            warn!(bucket = %self.bucket, revision = self.revision, "KV watch delivers nothing while the bucket moves on (its server may be gone); reading it again");
                            // A re-read, not a resume: it yields what the dead watch missed,
                            // and moves past revisions that expired before any watch saw them
                            // (which would otherwise look like a lag for ever).
                            self.created = None;
                            self.watch = None;
                            self.behind_at = None;
                        }
                        Check::Behind => self.behind_at = Some(self.revision),
                        Check::Current => {
                            self.behind_at = None;
                            self.confirmed = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }

    /// Takes one watched entry into account; the change to report, if it is one.
    fn observe(&mut self, entry: kv::Entry) -> Option<KvChange> {
        self.revision = self.revision.max(entry.revision);
        match entry.operation {
            kv::Operation::Put => {
                if self.known.get(&entry.key) == Some(&entry.value) {
                    // Already reported by the re-read that preceded this watch.
                    return None;
                }
                self.known.insert(entry.key.clone(), entry.value.clone());
                Some(KvChange::Put {
                    key: entry.key,
                    value: entry.value,
                    created: entry.created,
                })
            }
            kv::Operation::Delete | kv::Operation::Purge => self
                .known
                .remove(&entry.key)
                .map(|_| KvChange::Delete { key: entry.key }),
        }
    }

    /// Opens the bucket and starts a watch: after the last revision when it is the same bucket,
    /// else after a full re-read whose differences become pending changes.
    async fn connect(&mut self) -> Result<(), async_nats::Error> {
        let store = self.js.get_key_value(&self.bucket).await?;
        let status = store.status().await?;
        let created = status.info.created;
        let last = status.info.state.last_sequence;
        let same = self.created == Some(created) && last >= self.revision;
        if !same {
            self.reread(&store).await?;
            self.created = Some(created);
            // Revisions up to `last` are in the re-read; later ones come from the watch (some
            // may repeat what the re-read saw, and are skipped as already known).
            self.revision = last;
        }
        if self.revision >= last {
            self.confirmed = Some(Instant::now());
        }
        self.watch = Some(store.watch_all_from_revision(self.revision + 1).await?);
        self.failures = 0;
        self.next_check = Instant::now() + self.check_every;
        self.behind_at = None;
        Ok(())
    }

    /// Reads every key and queues the difference to what was reported before.
    async fn reread(&mut self, store: &kv::Store) -> Result<(), async_nats::Error> {
        let keys: Vec<String> = store.keys().await?.try_collect().await?;
        let mut fresh = HashMap::with_capacity(keys.len());
        for key in keys {
            let Some(entry) = store.entry(&key).await? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            if self.known.get(&key) != Some(&entry.value) {
                self.pending.push_back(KvChange::Put {
                    key: key.clone(),
                    value: entry.value.clone(),
                    created: entry.created,
                });
            }
            fresh.insert(key, entry.value);
        }
        let mut gone: Vec<&String> = self
            .known
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .collect();
        gone.sort();
        for key in gone {
            self.pending
                .push_back(KvChange::Delete { key: key.clone() });
        }
        self.known = fresh;
        Ok(())
    }
}

/// What a periodic check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The same bucket, and the watch has seen its last revision.
    Current,
    /// The same bucket, with revisions the watch has not delivered (yet).
    Behind,
    /// Another bucket (re-created, revisions gone backwards), or none, or no answer.
    Other,
}

/// Whether `bucket` is still the one being watched (the same stream, created at `created`, its
/// revisions not gone back below `revision`), and whether it is ahead of `revision`. A free
/// function so no `&KvFollower` is held across an await (the watch inside it is not `Sync`).
async fn check_bucket(
    js: &jetstream::Context,
    bucket: &str,
    created: Option<OffsetDateTime>,
    revision: u64,
) -> Check {
    let Ok(store) = js.get_key_value(bucket).await else {
        return Check::Other;
    };
    match store.status().await {
        Ok(status) if Some(status.info.created) == created => {
            let last = status.info.state.last_sequence;
            match last.cmp(&revision) {
                std::cmp::Ordering::Less => Check::Other,
                std::cmp::Ordering::Equal => Check::Current,
                std::cmp::Ordering::Greater => Check::Behind,
            }
        }
        _ => Check::Other,
    }
}

/// The wait before attempt `failures + 1` to open a bucket: 100 ms, doubling, at most
/// [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.pow(failures.min(6))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
