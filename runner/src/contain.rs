//! Containment: no process the runner starts outlives its invocation, its build, or the runner.
//!
//! Cgroups would make this simple, but many hosts and containers have none delegated, so nothing
//! here depends on them. Instead, for every process the runner starts (actions, environment
//! builds, verification commands):
//! - **One spawning thread.** Processes are forked by a dedicated thread that lives as long as
//!   the runner ([`spawn`]), because `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//!   child exits, not the process: a tokio worker thread may come and go.
//! - **In the child, before `exec`** (a minimal `pre_exec`): its own process group, parent-death
//!   signal `SIGKILL` (a SIGKILLed runner takes its leaders along; if the runner already died
//!   between `fork` and `prctl`, the child refuses to start), and the child is made a *child
//!   subreaper* itself. That last one is the key: an orphan anywhere below the leader (a
//!   double-forked daemon, a `setsid` child whose parent exited) is re-parented to the leader,
//!   not to init, so while the leader lives, walking `/proc/*/stat` parent links from it finds
//!   every descendant, whatever session or group it moved to.
//! - **The runner is a child subreaper too** ([`become_subreaper`]): what is left when a leader
//!   exits is re-parented to the runner, not to init. To tell *which* invocation such an orphan
//!   came from (concurrent invocations share the runner as parent), each tree carries a unique
//!   tag in its environment ([`TAG_VAR`]), and the tree is observed periodically while it runs
//!   ([`Tree::observe`]): every pid seen below the leader is remembered with its start time.
//! - **At timeout and at the end** ([`Tree::kill_all`]): the group, everything below the leader,
//!   every remembered pid that still has its start time, and every orphan adopted by the runner
//!   that carries the tag, then everything below those, get `SIGKILL`, in rounds until none is
//!   left. A start time is checked before every signal so a recycled pid is never hit.
//! - **Reaping without stealing** ([`reap_adopted`]): tokio waits for the processes it spawned
//!   by pid, so a blanket `waitpid(-1)` would steal their exit status. Only pids the runner
//!   killed as descendants (never a leader) are reaped, one by one with
//!   `waitid(P_PID, pid, WNOHANG)`, once they are zombies whose parent is the runner.
//! - **Records** ([`Record`]): the group and every pid seen of a running action are written to a
//!   file in the runner's private directory and removed when it is over; a restarted runner
//!   kills what a crashed one left listed ([`kill_recorded`]), when the pid still has the
//!   recorded start time.
//!
//! Known limit without cgroups: a process that leaves the tree *and* clears its environment
//! *and* does so between two observations after its leader exited is not found; it is still
//! killed when it stays in the action's process group.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{getpid, getppid, Pid};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Environment variable holding the unique tag of one process tree.
pub const TAG_VAR: &str = "ATTUNE_PROCESS_TAG";
/// File suffix of a running tree's record.
const RECORD_SUFFIX: &str = ".running";
/// How often a running tree is observed for new descendants.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(200);
/// Rounds of `SIGKILL` before giving up on processes that will not die (uninterruptible).
const KILL_ROUNDS: usize = 50;

/// One line of `/proc/<pid>/stat`, the fields containment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// `R`, `S`, `Z`…
    pub state: char,
    /// Its parent.
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Start time in clock ticks after boot: with the pid, identifies one process for good.
    pub start: u64,
}

impl ProcStat {
    /// Whether the process is gone apart from its exit status (nothing left to signal).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses one `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (head, rest) = line.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) … starttime(22), numbered from 1 with pid = 1.
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of one process, `None` when it is gone.
pub fn stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process of the host (a process that ends during the scan is simply missing).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The children of `pid`, from `/proc/<pid>/task/*/children` (a child is listed under the thread
/// that is its parent). `None` when the kernel does not offer those files.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// Every live process below `root`, found by following children lists down from it: a few reads
/// for a small tree, instead of a scan of every process on the host. `None` when children lists
/// are not available (then callers scan `/proc`).
fn below(root: i32) -> Option<Vec<ProcStat>> {
    let mut out = Vec::new();
    let mut stack = children_of(root)?;
    let mut visited = HashSet::new();
    while let Some(pid) = stack.pop() {
        if !visited.insert(pid) {
            continue;
        }
        let Some(s) = stat(pid) else { continue };
        if let Some(kids) = children_of(pid) {
            stack.extend(kids);
        }
        if !s.is_dead() {
            out.push(s);
        }
    }
    Some(out)
}

/// The leaders of the trees alive now: a child of the runner that is none of them (and carries a
/// tag) is an orphan some tree left behind.
fn leaders() -> &'static Mutex<HashSet<i32>> {
    static LEADERS: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    LEADERS.get_or_init(Default::default)
}

/// Whether the runner has a child that is no live tree's leader and carries a tree's tag: an
/// orphan left behind. Orphans are re-parented to the runner's main thread (the kernel picks the
/// first live thread of the reaper, and the main thread lives as long as the process), while
/// leaders are children of the spawning thread, so one children list says it. `true` when that
/// cannot be told (no children lists).
fn has_tagged_orphans() -> bool {
    let me = getpid().as_raw();
    let Ok(text) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
        return true;
    };
    let leaders = leaders().lock().expect("never poisoned");
    text.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| !leaders.contains(pid))
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|kv| {
                    kv.starts_with(TAG_VAR.as_bytes()) && kv.get(TAG_VAR.len()) == Some(&b'=')
                })
            })
        })
}

/// `roots` and everything below them, following parent links.
fn with_descendants(procs: &[ProcStat], roots: &HashSet<i32>) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = HashSet::new();
    let mut stack: Vec<i32> = roots.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        if out.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    out
}

/// Whether `pid`'s initial environment holds `TAG_VAR=tag`.
fn carries_tag(pid: i32, tag: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{TAG_VAR}={tag}");
    env.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes())
}

/// Makes the runner a child subreaper, so orphans of its processes come back to it instead of
/// init. Idempotent; a failure is logged (containment then relies on groups and tags alone).
pub fn become_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            warn!(error = %e, "cannot become a child subreaper: orphans go to init");
        }
    });
}

/// A spawn request for the spawning thread.
struct SpawnRequest {
    /// What to spawn (containment already applied).
    command: Command,
    /// The runtime whose reactor the child's pipes and wait register with.
    runtime: tokio::runtime::Handle,
    /// Where the child goes.
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// The channel to the spawning thread, started on first use; the thread never exits.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("attune-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _entered = req.runtime.enter();
                    let child = req.command.spawn();
                    // Nobody waiting any more: dropping the child kills it (kill_on_drop).
                    let _ = req.reply.send(child);
                }
            })
            .expect("the spawning thread starts");
        Mutex::new(tx)
    })
}

/// Spawns `command` contained: own process group, killed on drop, parent-death `SIGKILL`,
/// itself a child subreaper, forked by the long-lived spawning thread. Call from a tokio runtime.
pub async fn spawn(mut command: Command) -> std::io::Result<Child> {
    let parent = getpid();
    command.process_group(0).kill_on_drop(true);
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls are
    // allowed: three raw syscalls (prctl twice, getppid), no allocation (the errors are built
    // from raw errno values), no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The runner died between fork and prctl: the signal will never come, so go now.
            if getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            nix::sys::prctl::set_child_subreaper(true)?;
            Ok(())
        });
    }
    let (tx, rx) = oneshot::channel();
    let req = SpawnRequest {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply: tx,
    };
    let sent = spawner()
        .lock()
        .expect("the spawner lock is never poisoned")
        .send(req);
    if sent.is_err() {
        return Err(std::io::Error::other("the spawning thread is gone"));
    }
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread is gone")))
}

/// Pids killed as descendants, with their start times, until they are reaped or gone.
fn adopted() -> &'static Mutex<HashMap<i32, u64>> {
    static ADOPTED: OnceLock<Mutex<HashMap<i32, u64>>> = OnceLock::new();
    ADOPTED.get_or_init(Default::default)
}

/// Reaps the killed descendants that have become zombie children of the runner, by pid, never
/// touching a process tokio waits for; forgets the ones that are gone or were reaped elsewhere.
pub fn reap_adopted() {
    let me = getpid().as_raw();
    let mut adopted = adopted().lock().expect("never poisoned");
    adopted.retain(|&pid, &mut start| {
        let Some(s) = stat(pid) else { return false };
        if s.start != start {
            return false; // the pid was recycled: not ours to reap
        }
        if s.ppid != me || s.state != 'Z' {
            return true; // still dying, or its own parent will reap it
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        !matches!(
            waitid(Id::Pid(Pid::from_raw(pid)), flags),
            Ok(_) | Err(nix::errno::Errno::ECHILD)
        )
    });
}

/// Reaps adopted orphans on every `SIGCHLD` (and every few seconds, in case a signal was merged)
/// until `stop` resolves.
pub async fn reaper(stop: impl std::future::Future<Output = ()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "no SIGCHLD stream: reaping on a timer only");
            None
        }
    };
    tokio::pin!(stop);
    loop {
        let chld = async {
            match sigchld.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => break,
            () = chld => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        reap_adopted();
    }
}

/// The on-disk record of one running tree: its group and the pids seen, each with its start
/// time, so a restarted runner can kill what a crashed one left.
#[derive(Debug)]
pub struct Record {
    /// The record file.
    path: PathBuf,
}

impl Record {
    /// Writes the record of the group led by `leader` in `dir`.
    pub fn create(dir: &Path, leader: &ProcStat) -> std::io::Result<Record> {
        let path = dir.join(format!("{}{RECORD_SUFFIX}", leader.pid));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        writeln!(f, "group {} {}", leader.pid, leader.start)?;
        Ok(Record { path })
    }

    /// Adds pids seen in the tree.
    fn add(&self, seen: &[(i32, u64)]) {
        let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.path) else {
            return;
        };
        for (pid, start) in seen {
            let _ = writeln!(f, "pid {pid} {start}");
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Kills what the records in `dir` list (a group, or a pid, that still has the recorded start
/// time), then removes the records. Returns how many groups and pids were signalled.
pub fn kill_recorded(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(RECORD_SUFFIX) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(kind), Some(pid), Some(start)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
                continue;
            };
            if pid <= 1 {
                continue;
            }
            let now = stat(pid);
            let alive = now.is_some_and(|s| s.start == start && !s.is_dead());
            // The leader may be gone (or a zombie nobody reaps) while its group lives on: the
            // group is killed unless another process took the pid (a pid still used as a group
            // id is never handed out again, so then the old group is empty).
            let signalled = match kind {
                "group" if now.is_none_or(|s| s.start == start) => {
                    killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
                }
                "pid" if alive => kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok(),
                _ => false,
            };
            killed += usize::from(signalled);
        }
        let _ = std::fs::remove_file(&path);
    }
    if killed > 0 {
        warn!(dir = %dir.display(), killed, "killed processes left by a previous runner");
    }
    killed
}

/// One contained process tree: its leader, everything seen below it, its tag. Dropping it kills
/// whatever is left of the tree.
#[derive(Debug)]
pub struct Tree {
    /// The leader (also the process group id).
    leader: ProcStat,
    /// The tag in the environment of every process of the tree.
    tag: String,
    /// Every pid seen below the leader, with its start time.
    seen: HashMap<i32, u64>,
    /// The on-disk record, if the tree is recorded.
    record: Option<Record>,
}

/// A new unique tag, to put in a tree's environment under [`TAG_VAR`].
pub fn new_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Tree {
    /// Starts tracking the tree of `leader` (just spawned with `tag` in its environment),
    /// recorded in `record_dir` when given.
    pub fn new(leader: u32, tag: String, record_dir: Option<&Path>) -> Tree {
        let pid = leader as i32;
        let leader = stat(pid).unwrap_or(ProcStat {
            pid,
            state: 'X',
            ppid: getpid().as_raw(),
            pgid: pid,
            start: 0,
        });
        let record = record_dir.and_then(|dir| match Record::create(dir, &leader) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, dir = %dir.display(), "cannot record the process group");
                None
            }
        });
        leaders().lock().expect("never poisoned").insert(leader.pid);
        Tree {
            leader,
            tag,
            seen: HashMap::new(),
            record,
        }
    }

    /// The live processes of the tree now (leader excluded): below the leader, remembered pids
    /// with their start time, tagged orphans adopted by the runner, and everything below those.
    fn members(&self, procs: &[ProcStat]) -> Vec<ProcStat> {
        let me = getpid().as_raw();
        let by_pid: HashMap<i32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
        let mut roots: HashSet<i32> = HashSet::new();
        if by_pid
            .get(&self.leader.pid)
            .is_some_and(|p| p.start == self.leader.start)
        {
            roots.insert(self.leader.pid);
        }
        for (pid, start) in &self.seen {
            if by_pid.get(pid).is_some_and(|p| p.start == *start) {
                roots.insert(*pid);
            }
        }
        for p in procs {
            if p.ppid == me
                && p.pid != self.leader.pid
                && !p.is_dead()
                && carries_tag(p.pid, &self.tag)
            {
                roots.insert(p.pid);
            }
        }
        with_descendants(procs, &roots)
            .into_iter()
            .filter(|pid| *pid != self.leader.pid && *pid != me)
            .filter_map(|pid| by_pid.get(&pid).copied().copied())
            .filter(|p| !p.is_dead())
            .collect()
    }

    /// Remembers every process now below the leader (they stay attributable after the leader
    /// exits and they are re-parented to the runner).
    pub fn observe(&mut self) {
        let alive =
            stat(self.leader.pid).is_some_and(|s| s.start == self.leader.start && !s.is_dead());
        let found = match below(self.leader.pid).filter(|_| alive) {
            Some(found) => found,
            None => self.members(&all_processes()),
        };
        let new: Vec<(i32, u64)> = found
            .into_iter()
            .filter(|p| !self.seen.contains_key(&p.pid))
            .map(|p| (p.pid, p.start))
            .collect();
        if new.is_empty() {
            return;
        }
        debug!(
            leader = self.leader.pid,
            new = new.len(),
            "new processes in the tree"
        );
        if let Some(r) = &self.record {
            r.add(&new);
        }
        self.seen.extend(new);
    }

    /// Sends `signal` to the group and to every process of the tree (the leader included).
    pub fn signal(&mut self, signal: Signal) {
        self.observe();
        let _ = killpg(Pid::from_raw(self.leader.pid), signal);
        for p in self.members(&all_processes()) {
            let _ = kill(Pid::from_raw(p.pid), signal);
        }
    }

    /// `SIGKILL` to the leader, unless it is gone (then its pid may already belong to another).
    pub fn kill_leader(&self) {
        if stat(self.leader.pid).is_some_and(|s| s.start == self.leader.start && !s.is_dead()) {
            let _ = kill(Pid::from_raw(self.leader.pid), Signal::SIGKILL);
        }
    }

    /// `SIGKILL` to the group and every process of the tree except the leader (the caller waits
    /// for that one), in rounds until none is left; the killed ones are reaped once they are
    /// zombie children of the runner. Returns how many processes were killed.
    pub fn kill_all(&mut self) -> usize {
        // The common case, checked without scanning every process: the group is empty, nothing
        // seen below the leader lives, and no orphan carrying a tag came back to the runner.
        let _ = killpg(Pid::from_raw(self.leader.pid), Signal::SIGKILL);
        let group_empty =
            killpg(Pid::from_raw(self.leader.pid), None::<Signal>) == Err(nix::errno::Errno::ESRCH);
        let seen_gone = self
            .seen
            .iter()
            .all(|(pid, start)| stat(*pid).is_none_or(|s| s.start != *start || s.is_dead()));
        let leader = stat(self.leader.pid).filter(|s| s.start == self.leader.start);
        let nothing_below = || below(self.leader.pid).is_some_and(|b| b.is_empty());
        let quiet = seen_gone
            && match leader {
                // Reaped: its group is empty and no tagged orphan came back to the runner.
                None => group_empty && !has_tagged_orphans(),
                // Alive (a timeout, a drop): as a subreaper it holds everything of its tree.
                Some(s) if !s.is_dead() => nothing_below(),
                // Exiting, not reaped yet (a zygote's child that reported its own exit): its
                // children went to the runner, tagged; the group already had its SIGKILL.
                Some(_) => nothing_below() && !has_tagged_orphans(),
            };
        if quiet {
            return 0;
        }
        let mut killed: HashMap<i32, u64> = HashMap::new();
        for round in 0..KILL_ROUNDS {
            let _ = killpg(Pid::from_raw(self.leader.pid), Signal::SIGKILL);
            let members = self.members(&all_processes());
            if members.is_empty() {
                break;
            }
            for p in &members {
                // Recheck the start time right before the signal: the pid may have been reused.
                if stat(p.pid).is_some_and(|s| s.start == p.start) {
                    let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                }
                killed.insert(p.pid, p.start);
                self.seen.insert(p.pid, p.start);
            }
            if round > 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let n = killed.len();
        if n > 0 {
            debug!(
                leader = self.leader.pid,
                killed = n,
                "killed what the tree left"
            );
            adopted().lock().expect("never poisoned").extend(killed);
            reap_adopted();
        }
        n
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill_leader();
        self.kill_all();
        leaders()
            .lock()
            .expect("never poisoned")
            .remove(&self.leader.pid);
    }
}

/// Reads a stream to its end, keeping at most `cap` bytes; returns them and how many were
/// dropped.
pub async fn read_capped(stream: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, u64) {
    read_capped_with(stream, cap, |_| {}).await
}

/// [`read_capped`], showing `on_chunk` every chunk as it is read (all of it, kept or not):
/// live output taps the capture this way.
pub async fn read_capped_with(
    mut stream: impl AsyncRead + Unpin,
    cap: usize,
    mut on_chunk: impl FnMut(&[u8]),
) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut dropped: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                on_chunk(&buf[..n]);
                let take = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..take]);
                dropped += (n - take) as u64;
            }
        }
    }
    (kept, dropped)
}

/// What a bounded command printed and how it ended.
#[derive(Debug)]
pub struct Bounded {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// stdout then stderr, at most the cap each, with a marker when some was dropped.
    pub output: String,
}

/// Why a bounded command did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its time limit and was killed with everything it started.
    #[error("{program} hung: no exit within {timeout:?}, killed")]
    TimedOut {
        /// The program.
        program: PathBuf,
        /// The limit.
        timeout: Duration,
    },
}

/// Runs a command for its output (environment builds, verification): contained, stdin closed,
/// at most `cap` bytes of stdout and of stderr kept, killed with its whole tree after `timeout`
/// or when the returned future is dropped (a cancelled build).
pub async fn run_bounded(
    mut command: Command,
    timeout: Duration,
    cap: usize,
) -> Result<Bounded, CommandError> {
    let program = PathBuf::from(command.as_std().get_program());
    let tag = new_tag();
    command
        .env(TAG_VAR, &tag)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = spawn(command).await.map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut tree = Tree::new(child.id().unwrap_or(0), tag, None);
    let out = read_capped(child.stdout.take().expect("piped"), cap);
    let err = read_capped(child.stderr.take().expect("piped"), cap);
    let waited = async {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + OBSERVE_EVERY, OBSERVE_EVERY);
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                _ = tick.tick() => tree.observe(),
            }
        };
        // What the command left running would hold the pipes open: it ends with the command.
        tree.kill_all();
        status
    };
    let all = async { tokio::join!(waited, out, err) };
    let Ok((status, (out, out_dropped), (err, err_dropped))) =
        tokio::time::timeout(timeout, all).await
    else {
        // Dropping the child and the tree (when this returns) kills everything.
        return Err(CommandError::TimedOut { program, timeout });
    };
    let status = status.map_err(|source| CommandError::Wait {
        program: program.clone(),
        source,
    })?;
    let mut output = String::new();
    for (bytes, dropped) in [(out, out_dropped), (err, err_dropped)] {
        output.push_str(&String::from_utf8_lossy(&bytes));
        if dropped > 0 {
            output.push_str(&format!("\n[... truncated: {dropped} bytes omitted]\n"));
        }
    }
    Ok(Bounded { status, output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                pgid: 4242,
                start: 987654
            }
        );
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.start > 0);
    }

    #[test]
    fn descendants_follow_parent_links() {
        let p = |pid, ppid| ProcStat {
            pid,
            state: 'S',
            ppid,
            pgid: pid,
            start: 1,
        };
        let procs = [p(10, 1), p(11, 10), p(12, 11), p(13, 1), p(14, 12)];
        let got = with_descendants(&procs, &HashSet::from([11]));
        assert_eq!(got, HashSet::from([11, 12, 14]));
    }

    #[tokio::test]
    async fn a_bounded_command_keeps_the_cap_and_times_out() {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", "head -c 100000 /dev/zero | tr '\\0' x; echo done >&2"]);
        let b = run_bounded(c, Duration::from_secs(20), 1000).await.unwrap();
        assert!(b.status.success());
        assert!(b.output.starts_with(&"x".repeat(1000)));
        assert!(b.output.contains("truncated: 99000 bytes omitted"));
        assert!(b.output.contains("done"));

        let mut c = Command::new("/bin/sh");
        c.args(["-c", "sleep 1000"]);
        let e = run_bounded(c, Duration::from_millis(300), 1000)
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
    }
}
