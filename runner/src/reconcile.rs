//! The reconciler: the one task that changes what the runner serves.
//!
//! KV followers ([`crate::follow`]) forward changes here. After each batch the reconciler
//! *converges* in named steps over a pure plan:
//! 1. [`plan`] decides, from the catalog alone, which versions to verify (new or changed
//!    definitions), which served versions are gone, and which packs to fetch (digest changed);
//! 2. [`Reconciler::verify`] runs the verifications and records the results;
//! 3. [`Reconciler::fetch`] fetches the packs;
//! 4. [`Reconciler::serve`] starts job pulling and endpoints for newly verified versions;
//! 5. [`environments`] decides which (pack, version) environments need building, and
//!    [`Reconciler::build`] builds them, a few at a time, publishing each pack's new files
//!    together with its environments as soon as that pack's builds are over.
//!
//! Serving comes before building so that a slow or hung build holds only the requests that need
//! that environment (they wait for the convergence, within their deadline, and are woken as each
//! pack is published), never the other versions or packs. Each build step has its own time
//! limit, and a convergence is dropped at shutdown, which kills its builds: a hung
//! `create_command` never holds a drain.
//!
//! Doing it in one place means no two environment builds of one runner ever race, and start-up
//! is simply the first convergence. The plans are pure functions of the catalog's state, so unit
//! tests cover the decisions without processes or NATS.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use attune_nats::model::RuntimeVersion;
use attune_nats::shutdown::Shutdown;
use attune_nats::{Constraint, PackMeta, VersionKey};
use tokio::sync::mpsc;
use tracing::{debug, error, info, instrument, warn};

use crate::catalog::{EnvReady, Served, State};
use crate::check::PreparedAction;
use crate::endpoints::Endpoints;
use crate::env::{self, EnvRequest};
use crate::follow::Change;
use crate::jobs::Jobs;
use crate::packs::{PackCache, PackDir};
use crate::service::Dispatcher;
use crate::verify;
use attune_nats::wire::{VerifyFinding, VerifyRequest};

/// Where a runner's answer to one `attune runtime verify` goes: the findings for the versions it
/// was asked about, or why it could verify none of them.
pub type Answer = tokio::sync::oneshot::Sender<Result<Vec<VerifyFinding>, String>>;

/// One on-demand re-verification, handed to the reconciler (the one task that changes what the
/// runner serves) by [`crate::reverify`].
#[derive(Debug)]
pub struct Ask {
    /// What to verify again.
    pub request: VerifyRequest,
    /// Where the findings go once the convergence is over.
    pub reply: Answer,
}

/// How many environments one runner builds at the same time.
const ENV_BUILDS_AT_ONCE: usize = 4;

/// A version to verify: its key, its definition, and the definition as text (to notice changes).
#[derive(Debug, Clone)]
pub struct ToVerify {
    /// The runtime and version.
    pub key: VersionKey,
    /// The version's definition from KV.
    pub version: RuntimeVersion,
    /// [`definition`] of it.
    pub definition: String,
}

/// What a convergence has to do, decided from the catalog alone.
#[derive(Debug, Default)]
pub struct Plan {
    /// Versions not verified yet, or whose definition changed since.
    pub verify: Vec<ToVerify>,
    /// Served versions no longer registered (or no longer allowed).
    pub gone: Vec<VersionKey>,
    /// Packs whose files are missing or at another digest.
    pub fetch: Vec<PackMeta>,
    /// Names the runner was told to serve that match no registered runtime.
    pub unknown: Vec<String>,
}

/// A version's definition as text, to notice when it changes (registry-kept state excluded).
pub fn definition(v: &RuntimeVersion) -> String {
    let mut v = v.clone();
    v.available = false;
    v.verified_at = None;
    v.detected_versions.clear();
    v.enabled = true;
    v.is_default = false;
    serde_json::to_string(&v).expect("a version serialises")
}

/// Decides what to verify, drop and fetch. `allowed` are the runtime names or aliases this
/// runner may serve (empty: all).
pub fn plan(s: &State, allowed: &[String]) -> Plan {
    let mut out = Plan::default();
    let mut wanted = HashSet::new();
    for rt in s.runtimes.values() {
        if !allowed.is_empty() && !allowed.iter().any(|n| rt.answers_to_any_case(n)) {
            continue;
        }
        for v in &rt.versions {
            let key = VersionKey::new(&rt.name, &v.version);
            let def = definition(v);
            let served_same = s.served.get(&key).is_some_and(|sv| sv.definition == def);
            let failed_same = s.unavailable.get(&key).is_some_and(|(d, _)| *d == def);
            if s.recheck.contains(&key) || !served_same && !failed_same {
                out.verify.push(ToVerify {
                    key: key.clone(),
                    version: v.clone(),
                    definition: def,
                });
            }
            wanted.insert(key);
        }
    }
    out.gone = s
        .served
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    out.gone.sort();
    out.verify.sort_by(|a, b| a.key.cmp(&b.key));
    out.fetch = s
        .pack_meta
        .values()
        .filter(|m| {
            s.pack_dirs
                .get(&m.reference)
                .is_none_or(|d| d.digest != m.digest)
        })
        .cloned()
        .collect();
    out.fetch.sort_by(|a, b| a.reference.cmp(&b.reference));
    out.unknown = unknown_runtimes(s, allowed);
    out
}

/// The names in `allowed` that match no registered runtime name or alias, in any case.
pub fn unknown_runtimes(s: &State, allowed: &[String]) -> Vec<String> {
    allowed
        .iter()
        .filter(|n| !s.runtimes.values().any(|rt| rt.answers_to_any_case(n)))
        .cloned()
        .collect()
}

/// The environments to build: for every (pack, served version) some action or enabled sensor
/// of the pack can use and whose runtime wants an environment, unless one is ready for the same
/// pack digest and pinned binary. `fresh` are pack files just fetched (they replace the
/// catalog's).
pub fn environments(
    s: &State,
    fresh: &HashMap<String, Arc<PackDir>>,
) -> Vec<(Arc<PackDir>, Arc<Served>)> {
    let mut builds = Vec::new();
    let mut seen = HashSet::new();
    // (pack, runtime, constraint) of everything that runs: actions, then sensors.
    let sensor_constraints: Vec<(&str, &str, Constraint)> = s
        .pack_meta
        .values()
        .flat_map(|m| m.sensor_specs.iter().filter(|x| x.enabled))
        .filter_map(|x| {
            let c = Constraint::parse_optional(x.runtime_version.as_deref()).ok()?;
            Some((x.pack.as_str(), x.runtime.as_str(), c))
        })
        .collect();
    let users = s
        .actions
        .values()
        .map(|p| {
            (
                p.action.pack.as_str(),
                p.action.runtime.as_str(),
                &p.constraint,
            )
        })
        .chain(sensor_constraints.iter().map(|(p, r, c)| (*p, *r, c)));
    for (pack, runtime, constraint) in users {
        let Some(dir) = fresh.get(pack).or_else(|| s.pack_dirs.get(pack)) else {
            continue;
        };
        for (key, served) in &s.served {
            if key.runtime != runtime
                || !env::wants_env(&served.config)
                || !constraint.accepts(&key.version)
                || !seen.insert((pack.to_string(), key.clone()))
            {
                continue;
            }
            let current = s.envs.get(pack).and_then(|m| m.get(key));
            // Same files, binary and definition, and still usable (one `stat`): nothing to do.
            // Anything else goes to `env::ensure`, which decides between nothing, reinstalling
            // and rebuilding from the fingerprints recorded in the environment.
            if current.is_some_and(|e| {
                e.digest == dir.digest
                    && e.binary == served.verified.binary
                    && e.definition == served.definition
                    && env::is_usable_interpreter(&e.interpreter)
            }) {
                continue;
            }
            builds.push((dir.clone(), served.clone()));
        }
    }
    builds.sort_by(|a, b| (&a.0.pack, &a.1.verified.key).cmp(&(&b.0.pack, &b.1.verified.key)));
    builds
}

/// Applies KV changes and converges the runner's state on them.
pub struct Reconciler {
    /// Shared invocation state (config, catalog).
    pub dispatcher: Arc<Dispatcher>,
    /// Where new endpoints are added.
    pub endpoints: Arc<Endpoints>,
    /// Where pull loops of newly served versions are started.
    pub jobs: Arc<Jobs>,
    /// Pack fetching.
    pub packs: PackCache,
}

impl Reconciler {
    /// Applies changes as they come and converges after each batch, until shutdown. Also
    /// verifies again: every `reverify` (all versions it may serve, passed or failed), and when
    /// asked through `asks` (`attune runtime verify`), answering each ask once its convergence
    /// is over.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Change>,
        mut asks: mpsc::Receiver<Ask>,
        mut shutdown: Shutdown,
    ) {
        let reverify = self.dispatcher.config.reverify;
        let mut schedule = reverify.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        let mut asks_open = true;
        loop {
            let mut answers = Vec::new();
            tokio::select! {
                _ = shutdown.recv() => break,
                c = rx.recv() => match c {
                    Some(c) => self.apply(c),
                    None => break,
                },
                ask = asks.recv(), if asks_open => match ask {
                    Some(ask) => self.take_ask(ask, &mut answers),
                    None => asks_open = false,
                },
                () = self.dispatcher.catalog.rebuild_wanted() => {
                    debug!("an environment was found broken: rebuilding");
                }
                _ = async { schedule.as_mut().expect("guarded").tick().await }, if schedule.is_some() => {
                    let keys = self.mark_recheck(&VerifyRequest::default()).unwrap_or_default();
                    debug!(versions = keys.len(), "scheduled re-verification");
                }
            }
            self.dispatcher.catalog.begin_converging();
            // Take everything already queued, so a burst of registrations converges once.
            while let Ok(more) = rx.try_recv() {
                self.apply(more);
            }
            while let Ok(ask) = asks.try_recv() {
                self.take_ask(ask, &mut answers);
            }
            // Shutdown drops the convergence, and with it the builds' processes.
            let stopped = tokio::select! {
                _ = shutdown.recv() => true,
                () = self.converge() => false,
            };
            self.dispatcher.catalog.end_converging();
            for (keys, reply) in answers {
                let _ = reply.send(Ok(self.findings(&keys)));
            }
            if stopped {
                break;
            }
        }
        // Requests waiting for a convergence that will not end get their answer now.
        self.dispatcher.catalog.end_converging();
        debug!("reconciler stopped");
    }

    /// Marks what `ask` names for re-verification; an ask naming nothing this runner may
    /// verify is answered at once with why.
    fn take_ask(&self, ask: Ask, answers: &mut Vec<(Vec<VersionKey>, Answer)>) {
        match self.mark_recheck(&ask.request) {
            Ok(keys) => answers.push((keys, ask.reply)),
            Err(why) => {
                let _ = ask.reply.send(Err(why));
            }
        }
    }

    /// Puts the versions `request` names (runtime and version filters; the runner filter is the
    /// caller's) among those this runner may serve into [`State::recheck`]. Errors name what
    /// matched nothing.
    pub fn mark_recheck(&self, request: &VerifyRequest) -> Result<Vec<VersionKey>, String> {
        let allowed = &self.dispatcher.config.runtimes;
        self.dispatcher.catalog.write(|s| {
            let mut keys = Vec::new();
            let mut runtime_seen = false;
            for rt in s.runtimes.values() {
                if !allowed.is_empty() && !allowed.iter().any(|n| rt.answers_to_any_case(n)) {
                    continue;
                }
                if request
                    .runtime
                    .as_deref()
                    .is_some_and(|r| !rt.answers_to_any_case(r))
                {
                    continue;
                }
                runtime_seen = true;
                for v in &rt.versions {
                    if request.version.as_deref().is_none_or(|w| w == v.version) {
                        keys.push(VersionKey::new(&rt.name, &v.version));
                    }
                }
            }
            if keys.is_empty() {
                return Err(match (&request.runtime, &request.version) {
                    (Some(r), Some(v)) if runtime_seen => {
                        format!("runtime {r} has no version {v:?} registered")
                    }
                    (Some(r), _) => {
                        format!("runtime {r:?} is not registered, or this runner may not serve it")
                    }
                    _ => "this runner may serve no registered runtime".to_string(),
                });
            }
            keys.sort();
            s.recheck.extend(keys.iter().cloned());
            Ok(keys)
        })
    }

    /// What the catalog says now about each of `keys`: served (detected version, binary) or
    /// unavailable (why).
    pub fn findings(&self, keys: &[VersionKey]) -> Vec<VerifyFinding> {
        self.dispatcher.catalog.read(|s| {
            keys.iter()
                .map(|key| {
                    let served = s.served.get(key);
                    VerifyFinding {
                        runtime: key.runtime.clone(),
                        version: key.version.clone(),
                        verified: served.is_some(),
                        detected_version: served
                            .and_then(|sv| sv.verified.detected_version.clone()),
                        binary: served.map(|sv| sv.verified.binary.display().to_string()),
                        reason: match served {
                            Some(_) => None,
                            None => Some(s.unavailable.get(key).map_or_else(
                                || "not verified (no longer registered?)".to_string(),
                                |(_, why)| why.clone(),
                            )),
                        },
                    }
                })
                .collect()
        })
    }

    /// Records one KV change in the catalog.
    pub fn apply(&mut self, change: Change) {
        debug!(?change, "KV change");
        self.dispatcher.catalog.write(|s| match change {
            Change::Runtime(name, Some(rt)) => {
                s.runtimes.insert(name, rt);
            }
            Change::Runtime(name, None) => {
                s.runtimes.remove(&name);
            }
            Change::Action(key, Some(a)) => match PreparedAction::new(a) {
                Ok(p) => {
                    s.actions.insert(key, Arc::new(p));
                }
                Err(e) => {
                    error!(error = %e, "action cannot be served");
                    s.actions.remove(&key);
                }
            },
            Change::Action(key, None) => {
                s.actions.remove(&key);
            }
            Change::Pack(key, Some(meta)) => {
                s.pack_meta.insert(key, meta);
            }
            Change::Pack(key, None) => {
                s.pack_meta.remove(&key);
                if let Some(old) = s.pack_dirs.remove(&key) {
                    old.supersede();
                }
                s.envs.remove(&key);
            }
        });
    }

    /// Brings verification, pack files, environments and endpoints in line with the catalog.
    #[instrument(skip_all)]
    pub async fn converge(&mut self) {
        let catalog = self.dispatcher.catalog.clone();
        let plan = catalog.read(|s| plan(s, &self.dispatcher.config.runtimes));
        self.note_unknown(plan.unknown);
        let (newly_served, removed) = self.verify(plan.verify, plan.gone).await;
        self.unserve(removed);
        let fresh = self.fetch(plan.fetch).await;
        self.serve(newly_served).await;
        let builds = catalog.read(|s| environments(s, &fresh));
        self.build(builds, fresh).await;
    }

    /// Records the names of `--runtimes` that match no registered runtime (heartbeats carry them
    /// to `attune runner list`) and warns when that set changes, naming what is registered.
    fn note_unknown(&self, unknown: Vec<String>) {
        let changed = self.dispatcher.catalog.write(|s| {
            let changed = s.unknown_runtimes != unknown;
            s.unknown_runtimes = unknown.clone();
            changed.then(|| {
                let mut known: Vec<String> = s
                    .runtimes
                    .values()
                    .flat_map(|rt| std::iter::once(rt.name.clone()).chain(rt.aliases.clone()))
                    .collect();
                known.sort();
                (known, s.served.is_empty())
            })
        });
        let Some((known, serves_nothing)) = changed else {
            return;
        };
        if unknown.is_empty() {
            info!("every runtime this runner was told to serve is registered");
        } else if serves_nothing && unknown.len() == self.dispatcher.config.runtimes.len() {
            error!(
                unknown = ?unknown, registered = ?known,
                "none of the runtimes this runner was told to serve (--runtimes / \
                 ATTUNE_WORKER_RUNTIMES) is registered: it serves nothing until one is"
            );
        } else {
            warn!(
                unknown = ?unknown, registered = ?known,
                "runtimes this runner was told to serve are not registered (a typo?)"
            );
        }
    }

    /// Verifies `todo` in parallel and records the outcome; forgets `gone`. Returns the
    /// versions verified now (to serve) and the served versions that no longer are (to
    /// unsubscribe): gone, or failed their re-verification.
    async fn verify(
        &self,
        todo: Vec<ToVerify>,
        gone: Vec<VersionKey>,
    ) -> (Vec<Arc<Served>>, Vec<VersionKey>) {
        let config = &self.dispatcher.config;
        let base_env = &self.dispatcher.base_env;
        let results = futures::future::join_all(todo.iter().map(|t| {
            verify::verify_version(
                &t.key.runtime,
                &t.version,
                base_env,
                &config.path,
                config.verify_timeout,
            )
        }))
        .await;
        let mut newly_served = Vec::new();
        let mut removed = Vec::new();
        self.dispatcher.catalog.write(|s| {
            for key in &gone {
                info!(%key, "no longer registered: not served");
                s.served.remove(key);
                removed.push(key.clone());
            }
            for (t, result) in todo.into_iter().zip(results) {
                s.recheck.remove(&t.key);
                let previous = s.served.get(&t.key).cloned();
                match result {
                    Ok(verified) => {
                        s.unavailable.remove(&t.key);
                        // Verified again as it was: nothing changes, not even for an instant.
                        if previous.as_ref().is_some_and(|p| {
                            p.definition == t.definition && p.verified == verified
                        }) {
                            continue;
                        }
                        // An endpoint already up stays up (and advertised) while it changes.
                        let live = previous
                            .as_ref()
                            .is_some_and(|p| p.live.load(Ordering::Acquire));
                        let served = Arc::new(Served {
                            verified,
                            config: t
                                .version
                                .execution_config
                                .clone()
                                .expect("verified versions have a config"),
                            definition: t.definition,
                            live: AtomicBool::new(live),
                        });
                        newly_served.push(served.clone());
                        s.served.insert(t.key, served);
                    }
                    Err(why) => {
                        if s.served.remove(&t.key).is_some() {
                            warn!(key = %t.key, reason = %why.reason, "failed re-verification: no longer served");
                            removed.push(t.key.clone());
                        }
                        s.unavailable.insert(t.key, (t.definition, why.reason));
                    }
                }
            }
        });
        (newly_served, removed)
    }

    /// Unsubscribes the endpoints and stops the job pulling of versions no longer served.
    fn unserve(&self, removed: Vec<VersionKey>) {
        for key in removed {
            self.endpoints.remove(&self.dispatcher, &key);
            self.jobs.remove(&key);
        }
    }

    /// Fetches the files of `packs`; the ones that arrived, by pack ref.
    async fn fetch(&self, packs: Vec<PackMeta>) -> HashMap<String, Arc<PackDir>> {
        let mut fresh = HashMap::new();
        for meta in packs {
            match self.packs.fetch(&meta).await {
                Ok(dir) => {
                    fresh.insert(meta.reference.clone(), Arc::new(dir));
                }
                Err(e) => error!(error = %e, "pack not fetched"),
            }
        }
        fresh
    }

    /// Builds environments, a few at a time (mostly waiting on child processes: venv, pip).
    /// Each pack's fresh files and environments are published together once that pack's builds
    /// are over (a failed build leaves that environment unready), so one slow pack holds no
    /// other.
    async fn build(
        &self,
        builds: Vec<(Arc<PackDir>, Arc<Served>)>,
        mut fresh: HashMap<String, Arc<PackDir>>,
    ) {
        let mut by_pack: HashMap<String, Vec<Arc<Served>>> = HashMap::new();
        for (dir, served) in builds {
            by_pack.entry(dir.pack.clone()).or_default().push(served);
        }
        // Packs with nothing to build are published at once.
        let idle: Vec<String> = fresh
            .keys()
            .filter(|p| !by_pack.contains_key(*p))
            .cloned()
            .collect();
        let ready_now = idle
            .into_iter()
            .filter_map(|p| fresh.remove_entry(&p))
            .collect();
        self.publish(Vec::new(), ready_now);

        let slots = tokio::sync::Semaphore::new(ENV_BUILDS_AT_ONCE);
        let slots = &slots;
        let dirs: HashMap<String, Arc<PackDir>> = self
            .dispatcher
            .catalog
            .read(|s| s.pack_dirs.clone())
            .into_iter()
            .chain(fresh.clone())
            .collect();
        let packs = by_pack.into_iter().map(|(pack, versions)| {
            let dir = dirs.get(&pack).cloned();
            let new_files = fresh.remove_entry(&pack);
            async move {
                let Some(dir) = dir else { return };
                let built = futures::future::join_all(versions.iter().map(|served| {
                    let dir = dir.clone();
                    async move {
                        let _slot = slots.acquire().await.expect("never closed");
                        self.build_one(&dir, served).await
                    }
                }))
                .await;
                self.publish(
                    built.into_iter().flatten().collect(),
                    new_files.into_iter().collect(),
                );
            }
        });
        futures::future::join_all(packs).await;
    }

    /// Builds one environment; what to publish when it is ready.
    async fn build_one(
        &self,
        dir: &PackDir,
        served: &Served,
    ) -> Option<(String, VersionKey, EnvReady)> {
        let config = &self.dispatcher.config;
        let v = &served.verified;
        let req = EnvRequest {
            envs_dir: &config.envs_dir,
            pack: &dir.pack,
            key: &v.key,
            config: &served.config,
            interpreter: &v.binary,
            pack_dir: &dir.path,
            env: &self.dispatcher.base_env,
            timeout: config.env_build_timeout,
        };
        match env::ensure(&req).await {
            Ok(Some(interpreter)) => Some((
                dir.pack.clone(),
                v.key.clone(),
                EnvReady {
                    interpreter,
                    digest: dir.digest.clone(),
                    binary: v.binary.clone(),
                    definition: served.definition.clone(),
                },
            )),
            Ok(None) => None,
            Err(e) => {
                error!(error = %e, "environment not ready");
                None
            }
        }
    }

    /// Puts built environments and fresh pack files in the catalog (old files go when unused),
    /// and wakes the requests waiting for them.
    fn publish(
        &self,
        built: Vec<(String, VersionKey, EnvReady)>,
        fresh: HashMap<String, Arc<PackDir>>,
    ) {
        if built.is_empty() && fresh.is_empty() {
            return;
        }
        self.dispatcher.catalog.write(|s| {
            for (pack, key, ready) in built {
                s.envs.entry(pack).or_default().insert(key, ready);
            }
            for (pack, dir) in fresh {
                if let Some(old) = s.pack_dirs.insert(pack, dir) {
                    old.supersede();
                }
            }
        });
        self.dispatcher.catalog.progressed();
    }

    /// Starts job pulling and the endpoint of each newly verified version.
    async fn serve(&self, newly_served: Vec<Arc<Served>>) {
        for served in newly_served {
            let key = &served.verified.key;
            // Jobs first: once the endpoint is live the version is advertised as available.
            if let Err(e) = self.jobs.add(&self.dispatcher, &served).await {
                error!(error = %e, %key, "not pulling jobs");
            }
            match self.endpoints.add(&self.dispatcher, &served).await {
                Ok(()) => served.live.store(true, Ordering::Release),
                Err(e) => error!(error = %e, %key, "endpoint not started"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Verified;
    use attune_nats::{Action, Runtime};
    use serde_json::json;
    use std::path::PathBuf;

    fn runtime(name: &str, versions: &[&str], venv: bool) -> Runtime {
        let env = if venv {
            json!({"env_type": "virtualenv", "create_command": ["{interpreter}", "-m", "venv", "{env_dir}"]})
        } else {
            json!(null)
        };
        let mut rt: Runtime = serde_json::from_value(json!({
            "ref": format!("core.{name}"), "name": name, "pack": "core",
            "execution_config": {"interpreter": {"binary": name}},
            "versions": versions.iter().map(|v| json!({
                "version": v,
                "execution_config": {"interpreter": {"binary": name}, "environment": env},
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        rt.normalize();
        rt
    }

    fn served(rt: &Runtime, version: &str) -> Arc<Served> {
        let v = rt.version(version).unwrap();
        Arc::new(Served {
            verified: Verified {
                key: VersionKey::new(&rt.name, version),
                detected_version: None,
                binary: PathBuf::from(format!("/usr/bin/{}{version}", rt.name)),
            },
            config: v.execution_config.clone().unwrap(),
            definition: definition(v),
            live: AtomicBool::new(true),
        })
    }

    fn action(pack: &str, runtime: &str, constraint: Option<&str>) -> Arc<PreparedAction> {
        let a: Action = serde_json::from_value(json!({
            "ref": format!("{pack}.a"), "pack": pack, "name": "a", "runner_type": runtime,
            "runtime": runtime, "entry_point": "a.py", "runtime_version": constraint,
        }))
        .unwrap();
        Arc::new(PreparedAction::new(a).unwrap())
    }

    fn meta(pack: &str, digest: &str) -> PackMeta {
        serde_json::from_value(json!({"ref": pack, "version": "1.0.0", "digest": digest})).unwrap()
    }

    fn keys(plan: &Plan) -> Vec<String> {
        plan.verify.iter().map(|t| t.key.to_string()).collect()
    }

    #[test]
    fn new_versions_are_verified_and_known_ones_are_not_again() {
        let python = runtime("python", &["3.12", "3.13"], true);
        let mut s = State::default();
        s.runtimes.insert("python".into(), python.clone());
        assert_eq!(keys(&plan(&s, &[])), ["python 3.12", "python 3.13"]);

        s.served
            .insert(VersionKey::new("python", "3.12"), served(&python, "3.12"));
        let failed = definition(python.version("3.13").unwrap());
        s.unavailable.insert(
            VersionKey::new("python", "3.13"),
            (failed, "not installed".into()),
        );
        assert!(
            plan(&s, &[]).verify.is_empty(),
            "same definitions: nothing to do"
        );

        // A changed definition is verified again, whether it passed or failed before.
        let mut changed = python.clone();
        for v in &mut changed.versions {
            v.execution_config.as_mut().unwrap().interpreter.args = vec!["-u".into()];
        }
        s.runtimes.insert("python".into(), changed);
        assert_eq!(keys(&plan(&s, &[])), ["python 3.12", "python 3.13"]);
    }

    #[test]
    fn only_allowed_runtimes_are_verified_and_others_are_dropped() {
        let python = runtime("python", &["3.12"], true);
        let shell = runtime("shell", &[], false);
        let mut s = State::default();
        s.runtimes.insert("python".into(), python.clone());
        s.runtimes.insert("shell".into(), shell);
        s.served
            .insert(VersionKey::new("python", "3.12"), served(&python, "3.12"));
        let p = plan(&s, &["shell".to_string()]);
        assert_eq!(keys(&p), ["shell default"]);
        assert_eq!(p.gone, [VersionKey::new("python", "3.12")]);

        // A runtime removed from KV takes its served versions with it.
        s.runtimes.remove("python");
        assert_eq!(plan(&s, &[]).gone, [VersionKey::new("python", "3.12")]);
    }

    #[test]
    fn the_runtimes_list_matches_names_and_aliases_in_any_case_and_reports_unknown_ones() {
        let python = runtime("python", &["3.12"], true);
        let mut s = State::default();
        s.runtimes.insert("python".into(), python);
        s.runtimes
            .insert("shell".into(), runtime("shell", &[], false));
        let allowed = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let p = plan(&s, &allowed(&["PYTHON", "Shell"]));
        assert_eq!(keys(&p), ["python 3.12", "shell default"]);
        assert!(p.unknown.is_empty());
        s.runtimes.get_mut("shell").unwrap().aliases = vec!["sh".into()];
        assert_eq!(keys(&plan(&s, &allowed(&["SH"]))), ["shell default"]);
        let p = plan(&s, &allowed(&["pyton", "SHELL"]));
        assert_eq!(keys(&p), ["shell default"]);
        assert_eq!(p.unknown, ["pyton"]);
    }

    #[test]
    fn packs_are_fetched_when_missing_or_at_another_digest() {
        let mut s = State::default();
        s.pack_meta.insert("core".into(), meta("core", "sha256-a"));
        s.pack_meta.insert("ex".into(), meta("ex", "sha256-b"));
        s.pack_dirs.insert(
            "core".into(),
            Arc::new(PackDir::new(
                "core",
                "sha256-a",
                PathBuf::from("/nowhere/core"),
            )),
        );
        let fetch: Vec<_> = plan(&s, &[])
            .fetch
            .into_iter()
            .map(|m| m.reference)
            .collect();
        assert_eq!(fetch, ["ex"]);
        s.pack_meta
            .insert("core".into(), meta("core", "sha256-new"));
        assert_eq!(plan(&s, &[]).fetch.len(), 2);
    }

    #[test]
    fn environments_are_built_per_pack_and_usable_version_once() {
        let python = runtime("python", &["3.11", "3.12", "3.13"], true);
        let shell = runtime("shell", &[], false);
        let mut s = State::default();
        for v in ["3.11", "3.12", "3.13"] {
            s.served
                .insert(VersionKey::new("python", v), served(&python, v));
        }
        s.served.insert(
            VersionKey::new("shell", "default"),
            served(&shell, "default"),
        );
        s.actions
            .insert("p.a".into(), action("p", "python", Some(">=3.12")));
        s.actions.insert("q.a".into(), action("q", "shell", None));
        let dir = Arc::new(PackDir::new("p", "sha256-1", PathBuf::from("/nowhere/p")));
        s.pack_dirs.insert("p".into(), dir.clone());
        s.pack_dirs.insert(
            "q".into(),
            Arc::new(PackDir::new("q", "sha256-2", PathBuf::from("/nowhere/q"))),
        );
        let names = |b: &[(Arc<PackDir>, Arc<Served>)]| -> Vec<String> {
            b.iter()
                .map(|(d, sv)| format!("{} {}", d.pack, sv.verified.key))
                .collect()
        };
        // Only versions the constraint accepts, and no environment for a runtime without one.
        let builds = environments(&s, &HashMap::new());
        assert_eq!(names(&builds), ["p python 3.12", "p python 3.13"]);

        // A ready environment for the same digest, binary and definition is not rebuilt...
        let key = VersionKey::new("python", "3.12");
        let binary = s.served[&key].verified.binary.clone();
        let ready = EnvReady {
            // Any executable file: what matters is that the interpreter is there.
            interpreter: PathBuf::from("/bin/sh"),
            digest: "sha256-1".into(),
            binary,
            definition: s.served[&key].definition.clone(),
        };
        s.envs
            .entry("p".into())
            .or_default()
            .insert(key.clone(), ready.clone());
        assert_eq!(names(&environments(&s, &HashMap::new())), ["p python 3.13"]);
        // ...unless its version's definition changed (create or install commands)...
        let mut changed = ready.clone();
        changed.definition = "another definition".into();
        s.envs.get_mut("p").unwrap().insert(key.clone(), changed);
        assert_eq!(
            names(&environments(&s, &HashMap::new())),
            ["p python 3.12", "p python 3.13"]
        );
        // ...or its interpreter is gone (a broken environment is rebuilt)...
        let mut broken = ready.clone();
        broken.interpreter = PathBuf::from("/nowhere/bin/python3");
        s.envs.get_mut("p").unwrap().insert(key.clone(), broken);
        assert_eq!(
            names(&environments(&s, &HashMap::new())),
            ["p python 3.12", "p python 3.13"]
        );
        s.envs.get_mut("p").unwrap().insert(key, ready);
        // ...but new pack files are.
        let fresh = HashMap::from([(
            "p".to_string(),
            Arc::new(PackDir::new("p", "sha256-9", PathBuf::from("/nowhere/p9"))),
        )]);
        assert_eq!(
            names(&environments(&s, &fresh)),
            ["p python 3.12", "p python 3.13"]
        );
    }

    /// A pack `s` with sensors: `hot` (python >=3.12), `old` (python <3.12), `off` (disabled).
    fn sensor_pack(digest: &str) -> PackMeta {
        let mut m = meta("s", digest);
        let sensor = |name: &str, constraint: &str, enabled: bool| -> attune_nats::Sensor {
            serde_json::from_value(json!({
                "ref": format!("s.{name}"), "pack": "s", "name": name, "runner_type": "python",
                "runtime": "python", "entry_point": "x.py", "runtime_version": constraint,
                "triggers": ["t"], "enabled": enabled,
            }))
            .unwrap()
        };
        m.sensor_specs = vec![
            sensor("hot", ">=3.12", true),
            sensor("old", "<3.12", true),
            sensor("off", ">=3.12", false),
        ];
        m
    }

    #[test]
    fn sensors_run_where_their_resolved_version_is_served_with_the_current_files() {
        let mut python = runtime("python", &["3.11", "3.12", "3.13"], false);
        for v in &mut python.versions {
            v.available = v.version != "3.13";
        }
        let mut s = State::default();
        s.runtimes.insert("python".into(), python.clone());
        s.pack_meta.insert("s".into(), sensor_pack("sha256-1"));
        let wanted = |s: &State| {
            let mut w: Vec<String> = crate::sensors::wanted(s)
                .values()
                .map(|p| format!("{} {}", p.sensor.reference, p.key))
                .collect();
            w.sort();
            w
        };
        // No files yet, nothing served: nothing to run.
        assert!(wanted(&s).is_empty());
        s.pack_dirs.insert(
            "s".into(),
            Arc::new(PackDir::new("s", "sha256-1", PathBuf::from("/nowhere/s"))),
        );
        assert!(wanted(&s).is_empty());
        // This runner serves 3.12 (the version ">=3.12" resolves to: 3.13 has no runner) and 3.11.
        s.served
            .insert(VersionKey::new("python", "3.12"), served(&python, "3.12"));
        s.served
            .insert(VersionKey::new("python", "3.11"), served(&python, "3.11"));
        assert_eq!(wanted(&s), ["s.hot python 3.12", "s.old python 3.11"]);
        // Once 3.13 is live somewhere, ">=3.12" resolves to it: not this runner's to run.
        s.runtimes.get_mut("python").unwrap().versions[2].available = true;
        assert_eq!(wanted(&s), ["s.old python 3.11"]);
        // A newer pack digest whose files have not arrived: wait for them.
        s.pack_meta.insert("s".into(), sensor_pack("sha256-2"));
        assert!(wanted(&s).is_empty());
        // Enabled sensors need environments like actions do.
        let mut venv = runtime("python", &["3.11", "3.12", "3.13"], true);
        for v in &mut venv.versions {
            v.available = v.version == "3.12";
        }
        s.runtimes.insert("python".into(), venv.clone());
        s.served.clear();
        s.served
            .insert(VersionKey::new("python", "3.12"), served(&venv, "3.12"));
        s.pack_meta.insert("s".into(), sensor_pack("sha256-1"));
        let builds: Vec<String> = environments(&s, &HashMap::new())
            .iter()
            .map(|(d, sv)| format!("{} {}", d.pack, sv.verified.key))
            .collect();
        assert_eq!(builds, ["s python 3.12"]);
        // ...and do not run until theirs is ready, then run its interpreter.
        assert!(wanted(&s).is_empty());
        let key = VersionKey::new("python", "3.12");
        s.envs.entry("s".into()).or_default().insert(
            key.clone(),
            EnvReady {
                interpreter: PathBuf::from("/envs/s/bin/python"),
                digest: "sha256-1".into(),
                binary: s.served[&key].verified.binary.clone(),
                definition: s.served[&key].definition.clone(),
            },
        );
        assert_eq!(wanted(&s), ["s.hot python 3.12"]);
        let placed = &crate::sensors::wanted(&s)["s.hot"];
        assert_eq!(placed.program, PathBuf::from("/envs/s/bin/python"));
    }
}
