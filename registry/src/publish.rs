//! Publication: the KV buckets and the object store as an exact projection of the store.
//!
//! Every publish is a full mirror of a [`Snapshot`]: keys that differ are put, keys that no longer
//! exist are deleted, equal keys are left alone (so watchers only see real changes), and a pack
//! archive is uploaded only when its digest is not in the object store yet. Doing the full mirror
//! every time, instead of tracking deltas, means a publish after a crash, a restart or a wiped
//! JetStream is the same code path as a publish after an edit. The registry is small enough (tens
//! of keys) that this costs a few milliseconds.
//!
//! Every publish starts with the registry's set-up step ([`provision`]), which creates or
//! updates every bucket, object store and stream with the operator's settings: so a publish after
//! a wiped JetStream re-creates them, and the registry is the only component that ever does.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::{self, kv, object_store};
use attune_nats::jetstream::{provision_pack_files, Bucket, StoreOptions};
use attune_nats::Namespace;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use tracing::{debug, instrument};

use crate::provision::{provision, Provisioned};
use crate::store::{Snapshot, Store, StoreError};

/// Why a publish failed. The store is unchanged by a failed publish; the next one retries it all.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A bucket, object store or stream could not be created or updated.
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
    /// A publisher for the buckets of `ns`, which it provisions with `opts`.
    pub fn new(js: jetstream::Context, ns: Namespace, opts: StoreOptions) -> Self {
        Publisher { js, ns, opts }
    }

    /// The JetStream context, for the watchers that read the same buckets.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates or updates every JetStream resource with the operator's settings, and opens them.
    pub async fn provision(&self) -> Result<Provisioned, PublishError> {
        // Boxed: eight provisioning futures inline would make every caller's future (and the
        // stack of whoever polls it, a `block_on` included) several times larger.
        Ok(Box::pin(provision(&self.js, &self.ns, &self.opts)).await?)
    }

    /// Opens (creating if needed) the pack archive store.
    pub async fn pack_files(&self) -> Result<object_store::ObjectStore, PublishError> {
        Ok(provision_pack_files(&self.js, &self.ns, &self.opts).await?)
    }

    /// Whether every bucket, object store, stream and consumer the registry provisions still
    /// exists. A
    /// wiped JetStream (or a server that lost its store) shows up here as `false`.
    pub async fn all_present(&self) -> bool {
        for bucket in Bucket::ALL {
            if self.js.get_key_value(bucket.name(&self.ns)).await.is_err() {
                return false;
            }
        }
        for store in [self.ns.object_pack_files(), self.ns.object_results_files()] {
            if self.js.get_object_store(&store).await.is_err() {
                return false;
            }
        }
        for stream in [self.ns.stream_jobs(), self.ns.stream_executions()] {
            if self.js.get_stream(stream).await.is_err() {
                return false;
            }
        }
        // The events stream and the rules consumer: without the consumer no event is evaluated.
        match self.js.get_stream(self.ns.stream_events()).await {
            Ok(events) => events.consumer_info(self.ns.rules_consumer()).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Mirrors `snap` into KV and uploads missing archives (read from `store`).
    #[instrument(skip_all, fields(packs = snap.packs.len(), runtimes = snap.runtimes.len(), actions = snap.actions.len()))]
    pub async fn publish(&self, snap: &Snapshot, store: &Store) -> Result<Published, PublishError> {
        let mut done = Published::default();
        // Every resource, with the operator's settings, before anything is written to them.
        // Boxed: provisioning holds every opened resource, a large future to poll inline at the
        // bottom of an API call (it overflowed a 2 MiB stack in debug builds).
        let all = Box::pin(self.provision()).await?;
        // Archives first: a runner that sees a pack's new digest in KV must find its archive.
        let files = &all.pack_files;
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
            all.bucket(Bucket::Runtimes),
            Bucket::Runtimes,
            snap.runtimes.iter().map(|r| (r.name.clone(), json(r))),
            &mut done,
        )
        .await?;
        self.mirror(
            all.bucket(Bucket::Actions),
            Bucket::Actions,
            snap.actions.iter().map(|a| (a.reference.clone(), json(a))),
            &mut done,
        )
        .await?;
        self.mirror(
            all.bucket(Bucket::Packs),
            Bucket::Packs,
            snap.packs.iter().map(|p| (p.reference.clone(), json(p))),
            &mut done,
        )
        .await?;
        debug!(?done, "published");
        Ok(done)
    }

    async fn mirror(
        &self,
        kv: &kv::Store,
        bucket: Bucket,
        wanted: impl Iterator<Item = (String, Bytes)>,
        done: &mut Published,
    ) -> Result<(), PublishError> {
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
