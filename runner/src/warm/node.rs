//! Node's warm path (`node_spawn`): single-use node processes started ahead of invocations.
//!
//! Node cannot fork itself into a fresh process, so a pool keeps a few processes started with
//! the pool's environment, arguments and working directory, each contained exactly as a cold
//! one (the runner spawns it), each waiting on its stdin for one job (`node_launcher.js`). An
//! invocation takes one, writes the job and its parameters, and a replacement starts in the
//! background.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tracing::warn;

use super::{utf8, PoolKey, Settings, Status};
use crate::contain::{self, Tree};
use crate::execute::{ExecSpec, Leader, Started};

/// The launcher's node side.
const LAUNCHER_JS: &str = include_str!("node_launcher.js");
/// Processes that ended before being used, in a row, before the pool counts as failed.
const MAX_EARLY_EXITS: u32 = 3;

/// The job a process runs.
#[derive(Debug, Serialize)]
struct Job<'a> {
    script: &'a str,
    env: &'a [(String, String)],
    cwd: &'a str,
    stdin: bool,
}

#[derive(Debug, Default)]
struct State {
    idle: VecDeque<Spawned>,
    /// Spawns under way.
    starting: usize,
    served: u64,
    /// Processes that ended before being used, in a row (a broken preload, a missing binary).
    early_exits: u32,
    failed: Option<String>,
    stopped: bool,
}

/// A pool of node processes started ahead.
pub struct NodePool {
    key: PoolKey,
    settings: Settings,
    launcher: PathBuf,
    state: Mutex<State>,
}

impl NodePool {
    /// Starts filling the pool of `key` in the background.
    pub fn start(key: PoolKey, settings: Settings, dir: &Path) -> io::Result<Arc<NodePool>> {
        let launcher = super::launcher_file(dir, "node-launcher.js", LAUNCHER_JS)?;
        let pool = Arc::new(NodePool {
            key,
            settings,
            launcher,
            state: Mutex::new(State::default()),
        });
        pool.refill();
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("never poisoned")
    }

    /// Starts processes until the idle ones and those starting reach the pool size.
    fn refill(self: &Arc<Self>) {
        let wanted = {
            let mut s = self.lock();
            if s.stopped || s.failed.is_some() {
                return;
            }
            let wanted = self
                .settings
                .prefork
                .saturating_sub(s.idle.len() + s.starting);
            s.starting += wanted;
            wanted
        };
        for _ in 0..wanted {
            let pool = self.clone();
            tokio::spawn(async move {
                let spawned = pool.spawn_one().await;
                let mut s = pool.lock();
                s.starting -= 1;
                match spawned {
                    Ok(p) if !s.stopped => s.idle.push_back(p),
                    Ok(_) => {}
                    Err(e) => {
                        s.failed = Some(format!("cannot start {}: {e}", pool.key.program.display()))
                    }
                }
            });
        }
    }

    async fn spawn_one(&self) -> io::Result<Spawned> {
        let tag = contain::new_tag();
        let mut cmd = Command::new(&self.key.program);
        cmd.args(&self.key.args)
            .arg(&self.launcher)
            .args(&self.key.preload)
            .current_dir(&self.key.cwd)
            .env_clear()
            .envs(self.key.env.iter().map(|(k, v)| (k, v)))
            // No tag in its own environment: while it waits it is no invocation's, and a tagged
            // child of the runner would read as an orphan to every tree that ends. The job sets
            // the tag, so whatever the action starts carries it.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = contain::spawn(cmd).await?;
        Ok(Spawned { child, tag })
    }

    /// A process started ahead, if one is waiting (and still alive); another starts in its
    /// place.
    pub fn take(self: &Arc<Self>) -> Option<Spawned> {
        let taken = {
            let mut s = self.lock();
            let mut taken = None;
            while let Some(mut p) = s.idle.pop_front() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    s.early_exits += 1;
                    if s.early_exits >= MAX_EARLY_EXITS {
                        let why = format!("its processes end before being used ({status})");
                        warn!(pack = %self.key.pack, version = %self.key.version, %why,
                              "warm node pool failed: calls run cold");
                        s.failed = Some(why);
                    }
                    continue;
                }
                s.early_exits = 0;
                s.served += 1;
                taken = Some(p);
                break;
            }
            taken
        };
        self.refill();
        taken
    }

    /// What it reports of itself.
    pub fn status(&self) -> Status {
        let s = self.lock();
        let (state, alive) = match (&s.failed, s.stopped) {
            (_, true) => ("stopped".to_string(), false),
            (Some(why), _) => (format!("failed: {why}"), false),
            (None, _) if s.idle.is_empty() && s.served == 0 => ("starting".to_string(), true),
            (None, _) => ("ready".to_string(), true),
        };
        let waiting: Vec<u32> = s.idle.iter().filter_map(|p| p.child.id()).collect();
        Status::of(state, alive, None, &waiting, s.served)
    }

    /// Stops it: the waiting processes are killed (they never ran anything).
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stopped = true;
        s.idle.clear();
    }
}

/// A node process started ahead, waiting for its job.
#[derive(Debug)]
pub struct Spawned {
    child: tokio::process::Child,
    tag: String,
}

impl Spawned {
    /// Writes the job (and leaves stdin open for the parameters when they go there).
    pub(crate) async fn start(
        mut self,
        spec: &ExecSpec,
        mut env: Vec<(String, String)>,
        stdin_pipe: bool,
    ) -> io::Result<Started> {
        env.push((contain::TAG_VAR.into(), self.tag.clone()));
        let script = utf8(spec.args.last().map_or("".as_ref(), |a| a.as_os_str()))?;
        let cwd = utf8(spec.cwd.as_os_str())?;
        let job = serde_json::to_vec(&Job {
            script: &script,
            env: &env,
            cwd: &cwd,
            stdin: stdin_pipe,
        })
        .map_err(io::Error::other)?;
        let pid = self
            .child
            .id()
            .ok_or_else(|| io::Error::other("it already ended"))?;
        let tree = Tree::new(pid, self.tag, Some(&spec.params_dir));
        let started = Instant::now();
        let started_at = time::OffsetDateTime::now_utc();
        let mut stdin = self.child.stdin.take().expect("piped");
        let len = u32::try_from(job.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the job is too large"))?;
        let mut header = len.to_be_bytes().to_vec();
        header.extend_from_slice(&job);
        stdin.write_all(&header).await?;
        let stdin = if stdin_pipe {
            Some(Box::pin(stdin) as std::pin::Pin<Box<dyn AsyncWrite + Send>>)
        } else {
            drop(stdin);
            None
        };
        Ok(Started {
            stdout: Box::pin(self.child.stdout.take().expect("piped")),
            stderr: Box::pin(self.child.stderr.take().expect("piped")),
            stdin,
            leader: Leader::Child(self.child),
            tree,
            started,
            started_at,
        })
    }
}
