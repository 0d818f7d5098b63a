//! The runner's in-memory view of what it serves, kept current by the KV watches.
//!
//! The invocation path reads only this: one short read lock to clone a few `Arc`s, no KV, no
//! files, no `PATH`. Writers are the reconciler in [`crate::server`], which is the only task that
//! changes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::Notify;

use attune_nats::model::ExecutionConfig;
use attune_nats::wire::VerifiedVersion;
use attune_nats::{PackMeta, Runtime, VersionKey};

use crate::check::PreparedAction;
use crate::packs::PackDir;
use crate::verify::Verified;

/// A verified version this runner serves.
#[derive(Debug)]
pub struct Served {
    /// What verification found, with the pinned binary.
    pub verified: Verified,
    /// The version's own execution config (never the base config of a versioned runtime).
    pub config: ExecutionConfig,
    /// The version definition it was verified from, to notice changes.
    pub definition: String,
    /// Set once its endpoint is subscribed. Only live versions go into heartbeats: a version
    /// is verified before it is served, and advertising it in between would send requesters to
    /// a subject nobody listens on. (Its environments are built after: requests that need one
    /// wait for the convergence.)
    pub live: std::sync::atomic::AtomicBool,
}

/// A ready environment for one (pack, runtime, version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvReady {
    /// The interpreter inside the environment (or the pinned binary).
    pub interpreter: PathBuf,
    /// The pack digest it was set up for.
    pub digest: String,
    /// The pinned binary it was created with.
    pub binary: PathBuf,
    /// The version definition it was built from ([`Served::definition`]): a changed create or
    /// install command makes the reconciler look at it again.
    pub definition: String,
}

/// The state behind the lock.
#[derive(Debug, Default)]
pub struct State {
    /// Runtime definitions from KV (all of them; the filter applies when verifying).
    pub runtimes: HashMap<String, Runtime>,
    /// Actions by ref, compiled.
    pub actions: HashMap<String, Arc<PreparedAction>>,
    /// Pack metadata from KV.
    pub pack_meta: HashMap<String, PackMeta>,
    /// The current files of each pack.
    pub pack_dirs: HashMap<String, Arc<PackDir>>,
    /// Served versions.
    pub served: HashMap<VersionKey, Arc<Served>>,
    /// Versions that failed verification, with the definition that failed and why.
    pub unavailable: HashMap<VersionKey, (String, String)>,
    /// Environments: pack → version → ready environment.
    pub envs: HashMap<String, HashMap<VersionKey, EnvReady>>,
    /// Names of `--runtimes` that match no registered runtime (see [`crate::reconcile::plan`]).
    pub unknown_runtimes: Vec<String>,
    /// Versions to verify again at the next convergence even though their definition did not
    /// change: the re-verification schedule and `attune runtime verify` put them here.
    pub recheck: std::collections::HashSet<VersionKey>,
}

/// What one invocation needs, looked up in one go.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The action, if registered.
    pub action: Option<Arc<PreparedAction>>,
    /// The served version, if this runner serves it.
    pub served: Option<Arc<Served>>,
}

/// The shared catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The state; held only for map operations, never across an await.
    state: RwLock<State>,
    /// True while the reconciler applies KV changes and converges (fetches packs, builds
    /// environments): what a request finds missing may appear when it ends.
    converging: AtomicBool,
    /// Woken each time a convergence ends.
    converged: Notify,
    /// Wakes the reconciler when an invocation found an environment broken.
    rebuild: Notify,
}

impl Catalog {
    /// Runs `f` with read access.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().expect("catalog lock is never poisoned"))
    }

    /// Runs `f` with write access.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.write().expect("catalog lock is never poisoned"))
    }

    /// The action and served version of one request.
    pub fn lookup(&self, action: &str, key: &VersionKey) -> Lookup {
        self.read(|s| Lookup {
            action: s.actions.get(action).cloned(),
            served: s.served.get(key).cloned(),
        })
    }

    /// The pack's current files and the environment interpreter for a version.
    pub fn pack_and_env(
        &self,
        pack: &str,
        key: &VersionKey,
    ) -> (Option<Arc<PackDir>>, Option<PathBuf>) {
        self.read(|s| {
            let dir = s.pack_dirs.get(pack).cloned();
            let env = s
                .envs
                .get(pack)
                .and_then(|m| m.get(key))
                .map(|e| e.interpreter.clone());
            (dir, env)
        })
    }

    /// Forgets a broken environment (its interpreter is gone) and wakes the reconciler, which
    /// rebuilds it in the background; until then its version refuses that pack's actions (503).
    pub fn env_broken(&self, pack: &str, key: &VersionKey) {
        self.write(|s| {
            if let Some(m) = s.envs.get_mut(pack) {
                m.remove(key);
            }
        });
        self.rebuild.notify_one();
    }

    /// Resolves when an environment was reported broken since the last call.
    pub async fn rebuild_wanted(&self) {
        self.rebuild.notified().await;
    }

    /// Marks the start of a convergence (before KV changes are applied).
    pub fn begin_converging(&self) {
        self.converging.store(true, Ordering::Release);
    }

    /// Marks its end and wakes the requests waiting for it.
    pub fn end_converging(&self) {
        self.converging.store(false, Ordering::Release);
        self.converged.notify_waiters();
    }

    /// Wakes the requests waiting for the convergence, which goes on: some pack files or
    /// environments they may need were just published.
    pub fn progressed(&self) {
        self.converged.notify_waiters();
    }

    /// Like [`Catalog::pack_and_env`], but when the pack's files (or, if `wants_env`, its
    /// environment for this version) are missing while a convergence is under way, waits for it
    /// to end, until `deadline`. A pack registered a moment ago is then served as soon as it is
    /// ready instead of being rejected; when nothing is in progress the answer is immediate.
    pub async fn wait_prepared(
        &self,
        pack: &str,
        key: &VersionKey,
        wants_env: bool,
        deadline: Instant,
    ) -> (Option<Arc<PackDir>>, Option<PathBuf>) {
        let ready = |(dir, env): &(Option<Arc<PackDir>>, Option<PathBuf>)| {
            dir.is_some() && (!wants_env || env.is_some())
        };
        let found = self.pack_and_env(pack, key);
        if ready(&found) {
            return found;
        }
        loop {
            // Register for the wake-up before looking, so an end in between is not missed.
            let notified = self.converged.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self.pack_and_env(pack, key);
            if ready(&found) || !self.converging.load(Ordering::Acquire) {
                return found;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return self.pack_and_env(pack, key);
            }
        }
    }

    /// The modules `pack` asks warm interpreters of `runtime` to import once.
    pub fn preload(&self, pack: &str, runtime: &str) -> Vec<String> {
        self.read(|s| {
            s.pack_meta
                .get(pack)
                .and_then(|m| m.preload.get(runtime))
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The versions whose endpoints are live, for heartbeats.
    pub fn verified_versions(&self) -> Vec<VerifiedVersion> {
        self.read(|s| {
            let mut out: Vec<VerifiedVersion> = s
                .served
                .values()
                .filter(|sv| sv.live.load(std::sync::atomic::Ordering::Acquire))
                .map(|sv| VerifiedVersion {
                    runtime: sv.verified.key.runtime.clone(),
                    version: sv.verified.key.version.clone(),
                    detected_version: sv.verified.detected_version.clone(),
                    binary: sv.verified.binary.display().to_string(),
                })
                .collect();
            out.sort_by(|a, b| (&a.runtime, &a.version).cmp(&(&b.runtime, &b.version)));
            out
        })
    }
}
