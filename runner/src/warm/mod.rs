//! Warm interpreters: the start-up of python and node taken off the invocation's critical path,
//! with a fresh process per invocation all the same (docs/runner.md, "Warm interpreters").
//!
//! A runtime version opts in with `execution_config.warm.launcher` in its YAML; the runner has
//! one built-in launcher per kind of interpreter, and knows no runtime by name:
//! - [`zygote`] (`python_fork`): one interpreter per pool, started with the pool's environment,
//!   arguments and working directory, with the pack's `preload` modules imported; it pre-forks a
//!   few children, and each invocation takes one, hands it its stdin, stdout, stderr, argv,
//!   environment and working directory, and lets it run the script as `__main__`;
//! - [`node`] (`node_spawn`): a few single-use node processes started ahead, each waiting on its
//!   stdin for the script to run.
//!
//! A *pool* serves one (pack files, runtime version, environment): its key ([`PoolKey`]) holds
//! everything an interpreter reads when it starts — binary, interpreter arguments, working
//! directory, the environment without the per-invocation `ATTUNE_*` variables, the preload list,
//! and the environment's build stamp — so a warm child sees exactly what a cold start would, and
//! a pack update or an environment rebuild is a new key that replaces the old pool.
//!
//! Pools start lazily: the first invocation of a key runs cold while its pool starts, so a
//! runner serves at once. Their number and memory are capped per runner (the least recently
//! used pool makes room); a pool that failed is retried after a pause, and calls run cold
//! meanwhile. Nothing here ever makes an invocation wait: with no warm interpreter ready, it
//! runs cold.

pub mod node;
pub mod zygote;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attune_nats::model::WarmLauncher;
use attune_nats::wire::WarmPool;
use attune_nats::VersionKey;
use tracing::{info, warn};

use crate::execute::{ExecSpec, Started};

/// Pools a runner keeps at most, by default.
pub const DEFAULT_MAX_POOLS: usize = 16;
/// Interpreters each pool keeps started and waiting, by default.
pub const DEFAULT_PREFORK: usize = 4;
/// Resident memory all pools of a runner may use together, by default (MiB).
pub const DEFAULT_MEMORY_MB: u64 = 2048;
/// Children one zygote forks before it is replaced by a fresh one (with a fresh hash seed).
pub const DEFAULT_RECYCLE: u64 = 1000;
/// A pool unused this long is stopped.
const IDLE_STOP: Duration = Duration::from_secs(600);
/// A pool that failed is tried again after this pause; calls run cold meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long an invocation waits for a zygote's next child when all are busy, before it runs
/// cold: a fork costs about a millisecond, a cold start tens of them.
const WAIT_FOR_CHILD: Duration = Duration::from_millis(50);

/// How a runner keeps interpreters warm (`--no-warm`, `--warm-pools`, `--warm-prefork`,
/// `--warm-memory`, `--warm-recycle`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Whether any pool is started at all.
    pub enabled: bool,
    /// Most pools at once.
    pub max_pools: usize,
    /// Interpreters kept waiting per pool.
    pub prefork: usize,
    /// Resident memory of all pools together, in bytes; a new pool is not started past it.
    pub memory_limit: u64,
    /// Children a zygote forks before a fresh zygote replaces it.
    pub recycle_after: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            max_pools: DEFAULT_MAX_POOLS,
            prefork: DEFAULT_PREFORK,
            memory_limit: DEFAULT_MEMORY_MB * 1024 * 1024,
            recycle_after: DEFAULT_RECYCLE,
        }
    }
}

/// Everything an interpreter of one pool reads when it starts: two invocations with the same
/// key may share a warm interpreter, and a cold start of either would see the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The launcher.
    pub launcher: WarmLauncher,
    /// The pack.
    pub pack: String,
    /// The runtime version.
    pub version: VersionKey,
    /// The interpreter, absolute.
    pub program: PathBuf,
    /// Interpreter arguments before the script.
    pub args: Vec<OsString>,
    /// The working directory (the pack's files of one digest).
    pub cwd: PathBuf,
    /// The environment without the per-invocation `ATTUNE_*` variables.
    pub env: Vec<(String, String)>,
    /// Modules imported once per interpreter.
    pub preload: Vec<String>,
    /// When the pack's environment was last built or had its dependencies installed.
    pub env_stamp: Option<std::time::SystemTime>,
}

impl PoolKey {
    /// The key of the interpreter `spec` would start cold (its last argument is the script).
    pub fn of(
        launcher: WarmLauncher,
        pack: &str,
        version: &VersionKey,
        spec: &ExecSpec,
        preload: Vec<String>,
        env_dir: Option<&Path>,
    ) -> PoolKey {
        let args = spec.args[..spec.args.len().saturating_sub(1)].to_vec();
        PoolKey {
            launcher,
            pack: pack.to_string(),
            version: version.clone(),
            program: spec.program.clone(),
            args,
            cwd: spec.cwd.clone(),
            env: startup_env(&spec.env),
            preload,
            env_stamp: env_dir.and_then(env_stamp),
        }
    }

    /// The pool this key replaces when they differ: same pack, version and launcher.
    fn slot(&self) -> (&str, &VersionKey, WarmLauncher) {
        (&self.pack, &self.version, self.launcher)
    }
}

/// The environment an interpreter starts with: the invocation's, without the `ATTUNE_*`
/// variables that differ per invocation (no interpreter reads them when it starts).
pub fn startup_env(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !k.starts_with("ATTUNE_"))
        .cloned()
        .collect()
}

/// The latest build or install time of an environment, from its markers (two `stat`s).
fn env_stamp(dir: &Path) -> Option<std::time::SystemTime> {
    [crate::env::READY_MARKER, crate::env::DEPS_MARKER]
        .iter()
        .filter_map(|m| std::fs::metadata(dir.join(m)).ok()?.modified().ok())
        .max()
}

/// A warm interpreter taken for one invocation.
pub enum Ready {
    /// A child forked by a zygote, waiting for its job.
    Forked(zygote::Child),
    /// A node process started ahead, waiting on its stdin.
    Spawned(node::Spawned),
}

impl Ready {
    /// Hands the invocation to the interpreter: from here on it is the action's process.
    /// `env` is the complete environment (with the parameters file variable, if any);
    /// `stdin_pipe`: parameters go to stdin (else stdin is `/dev/null`).
    pub(crate) async fn start(
        self,
        spec: &ExecSpec,
        env: Vec<(String, String)>,
        stdin_pipe: bool,
    ) -> io::Result<Started> {
        match self {
            Ready::Forked(child) => child.start(spec, env, stdin_pipe),
            Ready::Spawned(proc) => proc.start(spec, env, stdin_pipe).await,
        }
    }
}

pub use zygote::ForkedLeader;

/// What [`Pools::take`] found.
enum Take {
    /// A warm interpreter, ready.
    Ready(Box<Ready>),
    /// A zygote that is up but has no idle child this instant.
    Soon(Arc<zygote::Zygote>),
    /// Nothing warm: run cold.
    Cold,
}

/// One pool, whichever launcher.
enum Pool {
    /// A python zygote.
    Zygote(Arc<zygote::Zygote>),
    /// Pre-spawned node processes.
    Node(Arc<node::NodePool>),
}

impl Pool {
    fn take(&self) -> Option<Ready> {
        match self {
            Pool::Zygote(z) => z.take().map(Ready::Forked),
            Pool::Node(n) => n.take().map(Ready::Spawned),
        }
    }

    fn status(&self) -> Status {
        match self {
            Pool::Zygote(z) => z.status(),
            Pool::Node(n) => n.status(),
        }
    }

    fn stop(&self) {
        match self {
            Pool::Zygote(z) => z.stop(),
            Pool::Node(n) => n.stop(),
        }
    }
}

/// What a pool reports of itself.
#[derive(Debug, Clone)]
pub struct Status {
    /// `starting`, `ready`, `failed: …`, `stopped`.
    pub state: String,
    /// Whether it can still serve (or will once started).
    pub alive: bool,
    /// Interpreters waiting.
    pub idle: usize,
    /// Invocations handed out.
    pub served: u64,
    /// Resident memory, bytes.
    pub memory: u64,
}

impl Status {
    /// A pool's status from its state and its processes: `own` (the zygote, if any) and
    /// the interpreters waiting; memory is their proportional share, so shared pages of a
    /// zygote and its children are not counted twice.
    fn of(state: String, alive: bool, own: Option<u32>, waiting: &[u32], served: u64) -> Status {
        let memory = own.iter().chain(waiting).map(|&pid| pss(pid)).sum();
        Status {
            state,
            alive,
            idle: waiting.len(),
            served,
            memory,
        }
    }
}

impl Entry {
    /// Stops the pool and its successor, if one is starting.
    fn stop(&self) {
        self.pool.stop();
        if let Some(next) = &self.next {
            next.stop();
        }
    }
}

/// A pool with its bookkeeping.
struct Entry {
    pool: Pool,
    /// A fresh zygote starting to take over from one that has served its share.
    next: Option<Pool>,
    last_used: Instant,
    /// When it was found dead; it is retried after [`RETRY_AFTER`].
    dead_since: Option<Instant>,
}

/// Every warm pool of a runner.
pub struct Pools {
    settings: Settings,
    /// Where the launcher scripts are written (the runner's private cache).
    launchers: PathBuf,
    pools: Mutex<HashMap<PoolKey, Entry>>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Pools {
    /// Pools with `settings`, writing launcher scripts under `dir`.
    pub fn new(settings: Settings, dir: &Path) -> Pools {
        Pools {
            settings,
            launchers: dir.join("launchers"),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// Whether pools are on at all.
    pub fn enabled(&self) -> bool {
        self.settings.enabled && self.settings.max_pools > 0 && self.settings.prefork > 0
    }

    /// A warm interpreter for `key`: one that is ready, or a zygote's next child when all
    /// are busy (waited for briefly); `None`: run cold.
    pub async fn get(&self, key: &PoolKey) -> Option<Ready> {
        match self.take(key) {
            Take::Ready(r) => Some(*r),
            Take::Soon(z) => z.take_within(WAIT_FOR_CHILD).await.map(Ready::Forked),
            Take::Cold => None,
        }
    }

    /// A warm interpreter for `key` if one is ready; never waits. The first call for a key
    /// starts its pool (the caller runs cold meanwhile), replacing the pool of the same pack,
    /// version and launcher whose key differs (a pack update, an environment rebuild).
    fn take(&self, key: &PoolKey) -> Take {
        if !self.enabled() {
            return Take::Cold;
        }
        let mut pools = self.pools.lock().expect("never poisoned");
        let now = Instant::now();
        if let Some(entry) = pools.get_mut(key) {
            entry.last_used = now;
            self.recycle(key, entry);
            if let Some(ready) = entry.pool.take() {
                return Take::Ready(Box::new(ready));
            }
            if let Pool::Zygote(z) = &entry.pool {
                if z.is_up() {
                    return Take::Soon(z.clone());
                }
            }
            let status = entry.pool.status();
            if status.alive {
                return Take::Cold;
            }
            match entry.dead_since {
                None => {
                    warn!(pack = %key.pack, version = %key.version, state = %status.state,
                          "warm pool is down: calls run cold until it is started again");
                    entry.dead_since = Some(now);
                    return Take::Cold;
                }
                Some(t) if now.duration_since(t) < RETRY_AFTER => return Take::Cold,
                Some(_) => {
                    pools.remove(key);
                }
            }
        }
        // Replaced: same pack, version and launcher, another key.
        let stale: Vec<PoolKey> = pools
            .keys()
            .filter(|k| k.slot() == key.slot() && *k != key)
            .cloned()
            .collect();
        for k in stale {
            if let Some(e) = pools.remove(&k) {
                info!(pack = %k.pack, version = %k.version, "warm pool replaced");
                e.stop();
            }
        }
        self.make_room(&mut pools, now);
        if pools.len() >= self.settings.max_pools
            || self.memory(&pools) >= self.settings.memory_limit
        {
            return Take::Cold;
        }
        match self.start(key) {
            Ok(pool) => {
                info!(pack = %key.pack, version = %key.version, launcher = key.launcher.as_str(),
                      "warm pool starting");
                pools.insert(
                    key.clone(),
                    Entry {
                        pool,
                        next: None,
                        last_used: now,
                        dead_since: None,
                    },
                );
            }
            Err(e) => warn!(error = %e, pack = %key.pack, version = %key.version,
                            "cannot start a warm pool: calls run cold"),
        }
        Take::Cold
    }

    /// Starts the pool of `key`.
    fn start(&self, key: &PoolKey) -> io::Result<Pool> {
        match key.launcher {
            WarmLauncher::PythonFork => {
                zygote::Zygote::start(key.clone(), self.settings, &self.launchers).map(Pool::Zygote)
            }
            WarmLauncher::NodeSpawn => {
                node::NodePool::start(key.clone(), self.settings, &self.launchers).map(Pool::Node)
            }
        }
    }

    /// A zygote that has served its share (`--warm-recycle`) keeps serving while a fresh one
    /// starts, and hands over once that one has a child ready: no invocation runs cold for it.
    fn recycle(&self, key: &PoolKey, entry: &mut Entry) {
        let Pool::Zygote(current) = &entry.pool else {
            return;
        };
        if !current.due() {
            return;
        }
        match &entry.next {
            None => match self.start(key) {
                Ok(next) => entry.next = Some(next),
                Err(e) => warn!(error = %e, pack = %key.pack, "cannot start a fresh zygote"),
            },
            Some(Pool::Zygote(next)) if next.ready() => {
                let next = entry.next.take().expect("just matched");
                std::mem::replace(&mut entry.pool, next).stop();
                info!(pack = %key.pack, version = %key.version, "zygote recycled");
            }
            Some(_) => {}
        }
    }

    /// Stops idle pools, and the least recently used ones while the pools are at their cap.
    fn make_room(&self, pools: &mut HashMap<PoolKey, Entry>, now: Instant) {
        pools.retain(|k, e| {
            let keep = now.duration_since(e.last_used) < IDLE_STOP;
            if !keep {
                info!(pack = %k.pack, version = %k.version, "warm pool unused: stopped");
                e.stop();
            }
            keep
        });
        while !pools.is_empty()
            && (pools.len() >= self.settings.max_pools
                || self.memory(pools) >= self.settings.memory_limit)
        {
            let Some(oldest) = pools
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = pools.remove(&oldest) {
                info!(pack = %oldest.pack, version = %oldest.version, "warm pool stopped to make room");
                e.stop();
            }
        }
    }

    fn memory(&self, pools: &HashMap<PoolKey, Entry>) -> u64 {
        pools.values().map(|e| e.pool.status().memory).sum()
    }

    /// Every pool as the heartbeat reports it.
    pub fn report(&self) -> Vec<WarmPool> {
        let pools = self.pools.lock().expect("never poisoned");
        let mut out: Vec<WarmPool> = pools
            .iter()
            .map(|(k, e)| {
                let s = e.pool.status();
                WarmPool {
                    pack: k.pack.clone(),
                    runtime: k.version.runtime.clone(),
                    version: k.version.version.clone(),
                    launcher: k.launcher.as_str().into(),
                    state: s.state,
                    idle: s.idle,
                    served: s.served,
                    memory_bytes: s.memory,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.pack, &a.runtime, &a.version).cmp(&(&b.pack, &b.runtime, &b.version))
        });
        out
    }

    /// Stops every pool (the runner is draining or stopping).
    pub fn stop_all(&self) {
        for (_, e) in self.pools.lock().expect("never poisoned").drain() {
            e.stop();
        }
    }

    /// Stops the pools of one runtime version (it is no longer served).
    pub fn stop_version(&self, version: &VersionKey) {
        self.pools.lock().expect("never poisoned").retain(|k, e| {
            let keep = &k.version != version;
            if !keep {
                e.stop();
            }
            keep
        });
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A path or argument as the text a warm interpreter's job message carries; a warm
/// interpreter takes its job as JSON, so what is not UTF-8 goes the cold way.
fn utf8(s: &std::ffi::OsStr) -> std::io::Result<String> {
    s.to_str().map(str::to_owned).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a path or argument is not UTF-8",
        )
    })
}

/// The memory a process accounts for, in bytes: its proportional set size (`Pss`), which
/// shares the pages a zygote and its children have in common among them instead of counting
/// them in each; 0 when it is gone.
pub fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Writes a launcher script under `dir` (once per content) and returns its path.
fn launcher_file(dir: &Path, name: &str, content: &str) -> io::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    let path = dir.join(format!("{:016x}-{name}", h.finish()));
    if !path.is_file() {
        crate::private::ensure(dir)?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}
