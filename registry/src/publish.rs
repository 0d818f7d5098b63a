//! Publication: the KV buckets and the object store as an exact projection of the store.
//!
//! Every publish is a full mirror of a [`Snapshot`]: keys that differ are put, keys that no longer
//! exist are deleted, equal keys are left alone (so watchers only see real changes), and a pack
//! archive is uploaded only when its digest is not in the object store yet. Doing the full mirror
//! every time, instead of tracking deltas, means a publish after a crash, a restart or a wiped
//! JetStream is the same code path as a publish after an edit. The registry is small enough (tens
//! of keys) that this costs a few milliseconds.
//!
//! Buckets are opened through [`ensure_kv`] / [`ensure_pack_files`] on every publish, which
//! re-creates them if JetStream lost them.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::{self, kv, object_store};
use attune_nats::jetstream::{ensure_kv, ensure_pack_files, Bucket, StoreOptions};
use attune_nats::Namespace;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use tracing::{debug, instrument};

use crate::store::{Snapshot, Store, StoreError};

/// Why a publish failed. The store is unchanged by a failed publish; the next one retries it all.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A bucket or the object store could not be opened or created.
    #[error(transparent)]
    Open(#[from] attune_nats::jetstream::StoreError),
    /// Reading or writing a KV bucket failed.
    #[error("publishing to KV bucket \"{bucket}\": {source}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// The server's or client's explanation.
        #[source]
        source: async_nats::Error,
    },
    /// Uploading a pack archive failed.
    #[error("uploading pack archive {digest}: {source}")]
    Object {
        /// The archive's digest.
        digest: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The store could not provide an archive.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one publish changed, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// KV keys written.
    pub put: usize,
    /// KV keys deleted because the store no longer has them.
    pub deleted: usize,
    /// Pack archives uploaded (those already present are never re-uploaded).
    pub uploaded: usize,
}

/// Writes snapshots to JetStream.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    ns: Namespace,
    opts: StoreOptions,
}

impl Publisher {
    /// A publisher for the buckets of `ns`, created with `opts` when missing.
    pub fn new(js: jetstream::Context, ns: Namespace, opts: StoreOptions) -> Self {
        Publisher { js, ns, opts }
    }

    /// The JetStream context, for the watchers that read the same buckets.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Opens (creating if needed) one of the buckets.
    pub async fn bucket(&self, bucket: Bucket) -> Result<kv::Store, PublishError> {
        Ok(ensure_kv(&self.js, &self.ns, bucket, &self.opts).await?)
    }

    /// Opens (creating if needed) the pack archive store.
    pub async fn pack_files(&self) -> Result<object_store::ObjectStore, PublishError> {
        Ok(ensure_pack_files(&self.js, &self.ns, &self.opts).await?)
    }

    /// Whether every bucket and the object store the registry publishes to still exist. A wiped
    /// JetStream (or a server that lost its store) shows up here as `false`.
    pub async fn all_present(&self) -> bool {
        for name in [
            self.ns.kv_runtimes(),
            self.ns.kv_actions(),
            self.ns.kv_packs(),
            self.ns.kv_runners(),
        ] {
            if self.js.get_key_value(&name).await.is_err() {
                return false;
            }
        }
        self.js
            .get_object_store(&self.ns.object_pack_files())
            .await
            .is_ok()
    }

    /// Mirrors `snap` into KV and uploads missing archives (read from `store`).
    #[instrument(skip_all, fields(packs = snap.packs.len(), runtimes = snap.runtimes.len(), actions = snap.actions.len()))]
    pub async fn publish(&self, snap: &Snapshot, store: &Store) -> Result<Published, PublishError> {
        let mut done = Published::default();
        // Archives first: a runner that sees a pack's new digest in KV must find its archive.
        let files = self.pack_files().await?;
        for pack in &snap.packs {
            if pack.digest.is_empty() || files.info(&pack.digest).await.is_ok() {
                continue;
            }
            let store = store.clone();
            let digest = pack.digest.clone();
            let bytes = tokio::task::spawn_blocking(move || store.archive(&digest))
                .await
                .expect("archive read does not panic")?
                .ok_or_else(|| PublishError::Object {
                    digest: pack.digest.clone(),
                    source: "the registry database has no archive with this digest".into(),
                })?;
            files
                .put(pack.digest.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| PublishError::Object {
                    digest: pack.digest.clone(),
                    source: e.into(),
                })?;
            done.uploaded += 1;
        }

        self.mirror(
            Bucket::Runtimes,
            snap.runtimes.iter().map(|r| (r.name.clone(), json(r))),
            &mut done,
        )
        .await?;
        self.mirror(
            Bucket::Actions,
            snap.actions.iter().map(|a| (a.reference.clone(), json(a))),
            &mut done,
        )
        .await?;
        self.mirror(
            Bucket::Packs,
            snap.packs.iter().map(|p| (p.reference.clone(), json(p))),
            &mut done,
        )
        .await?;
        // The runners bucket is the runners' to write, but the registry watches it, so it must
        // exist (and come back after a wipe) even before the first runner starts.
        self.bucket(Bucket::Runners).await?;
        // Created here too so `--results-ttl` and `--replicas` apply before the first async call.
        self.bucket(Bucket::Results).await?;
        // And the jobs stream, so async calls are accepted before any runner started.
        attune_nats::jobs::ensure_jobs_stream(&self.js, &self.ns, &self.opts).await?;
        // And the store of results too large for a message: runners write it, but on a secured
        // server only the registry may create it.
        attune_nats::jobs::ensure_results_files(&self.js, &self.ns, &self.opts).await?;
        debug!(?done, "published");
        Ok(done)
    }

    async fn mirror(
        &self,
        bucket: Bucket,
        wanted: impl Iterator<Item = (String, Bytes)>,
        done: &mut Published,
    ) -> Result<(), PublishError> {
        let kv = self.bucket(bucket).await?;
        let err = |source: async_nats::Error| PublishError::Kv {
            bucket: bucket.name(&self.ns),
            source,
        };
        let wanted: BTreeMap<String, Bytes> = wanted.collect();
        let existing: BTreeSet<String> = kv
            .keys()
            .await
            .map_err(|e| err(e.into()))?
            .try_collect()
            .await
            .map_err(|e| err(e.into()))?;
        for stale in existing.iter().filter(|k| !wanted.contains_key(*k)) {
            kv.delete(stale).await.map_err(|e| err(e.into()))?;
            done.deleted += 1;
        }
        for (key, value) in wanted {
            let current = if existing.contains(&key) {
                kv.get(&key).await.map_err(|e| err(e.into()))?
            } else {
                None
            };
            if current.as_ref() != Some(&value) {
                kv.put(&key, value).await.map_err(|e| err(e.into()))?;
                done.put += 1;
            }
        }
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("model types always serialise"))
}
