//! The python zygote (`python_fork`): one interpreter per pool that forks a child per
//! invocation. The python side is `zygote.py`, written to the runner's cache and run by the
//! pool's own interpreter; its header documents the protocol.
//!
//! The runner talks to the zygote over a `SOCK_SEQPACKET` socket pair (one JSON object per
//! message, file descriptors as `SCM_RIGHTS`): the zygote announces each pre-forked child with
//! the socket to hand it its job, and reports each child's exit status, since the children are
//! its own and not the runner's. A child is taken for one invocation and never reused.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::Command;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, warn};

use super::{utf8, PoolKey, Settings, Status};
use crate::contain::{self, Tree};
use crate::execute::{ExecSpec, Leader, Started};

/// The zygote's python side.
const ZYGOTE_PY: &str = include_str!("zygote.py");
/// The file descriptor of the control socket in the zygote.
const CONTROL_FD: RawFd = 3;
/// The largest message either side sends (a job: argv, environment, working directory).
const MAX_MESSAGE: usize = 256 * 1024;

/// A message from the zygote.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FromZygote {
    /// Preloading is done.
    Up,
    /// Preloading failed; the zygote exits.
    Failed { error: String },
    /// A pre-forked child, with its socket attached.
    Ready { pid: i32 },
    /// A child ended with this raw wait status.
    Exit { pid: i32, status: i32 },
}

/// A message to the zygote.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ToZygote {
    /// Keep this many children forked ahead.
    Target { n: usize },
    /// This child was given a job (it is no longer idle).
    Taken { pid: i32 },
    /// Stop: idle children exit, running ones finish.
    Quit,
}

/// The job a child runs.
#[derive(Debug, Serialize)]
struct Job<'a> {
    /// `sys.argv`: the script (a cold start has no further arguments).
    argv: Vec<&'a str>,
    /// The script, run as `__main__`.
    script: &'a str,
    /// The complete environment.
    env: &'a [(String, String)],
    /// The working directory.
    cwd: &'a str,
}

/// Where a zygote is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Starting,
    Up,
    Failed(String),
    /// It ended without being asked (crashed, killed).
    Gone,
    /// It was asked to stop.
    Stopped,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Pre-forked children waiting, with the socket to hand each its job.
    idle: VecDeque<(i32, OwnedFd)>,
    /// Exit statuses awaited, by pid.
    waiters: HashMap<i32, oneshot::Sender<i32>>,
    /// Children handed out.
    served: u64,
    /// The zygote's pid once spawned.
    pid: Option<u32>,
}

/// One zygote and its pre-forked children.
pub struct Zygote {
    key: PoolKey,
    settings: Settings,
    control: AsyncFd<OwnedFd>,
    state: Mutex<State>,
    /// Woken when a pre-forked child arrives.
    arrived: Notify,
}

impl Zygote {
    /// Starts the zygote of `key` in the background (it is `starting` until it has preloaded).
    pub fn start(key: PoolKey, settings: Settings, dir: &Path) -> io::Result<Arc<Zygote>> {
        let script = super::launcher_file(dir, "zygote.py", ZYGOTE_PY)?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(io::Error::from)?;
        // The zygote's end blocks: only ours is driven by the reactor.
        let flags = nix::fcntl::fcntl(theirs.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(io::Error::from)?;
        let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
        flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
        nix::fcntl::fcntl(theirs.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(io::Error::from)?;

        let mut cmd = Command::new(&key.program);
        cmd.args(&key.args)
            .arg(&script)
            .arg(CONTROL_FD.to_string())
            .args(&key.preload)
            .current_dir(&key.cwd)
            .env_clear()
            .envs(key.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let raw = theirs.as_raw_fd();
        // SAFETY: between fork and exec only `dup2`/`fcntl` run, both async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if raw == CONTROL_FD {
                    nix::fcntl::fcntl(
                        raw,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )?;
                } else {
                    nix::unistd::dup2(raw, CONTROL_FD)?;
                }
                Ok(())
            });
        }
        let zygote = Arc::new(Zygote {
            key,
            settings,
            // SAFETY: `ours` is an owned socket that nothing else closes or replaces while the
            // `AsyncFd` holds it.
            control: unsafe { AsyncFd::register(ours)? },
            state: Mutex::new(State {
                phase: Phase::Starting,
                idle: VecDeque::new(),
                waiters: HashMap::new(),
                served: 0,
                pid: None,
            }),
            arrived: Notify::new(),
        });
        let z = zygote.clone();
        tokio::spawn(async move {
            let spawned = contain::spawn(cmd).await;
            drop(theirs);
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => {
                    z.set_phase(Phase::Failed(format!(
                        "cannot start {}: {e}",
                        z.key.program.display()
                    )));
                    return;
                }
            };
            z.lock().pid = child.id();
            if let Some(out) = child.stdout.take() {
                tokio::spawn(log_output(out, z.key.pack.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(log_output(err, z.key.pack.clone()));
            }
            z.serve().await;
            let status = child.wait().await;
            debug!(pack = %z.key.pack, version = %z.key.version, ?status, "zygote ended");
        });
        Ok(zygote)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("never poisoned")
    }

    fn set_phase(&self, phase: Phase) {
        let mut s = self.lock();
        if !matches!(s.phase, Phase::Stopped | Phase::Failed(_)) {
            s.phase = phase;
        }
    }

    /// Reads the zygote's messages until it ends.
    async fn serve(&self) {
        loop {
            let got = match self.control.readable().await {
                Ok(mut guard) => match guard.try_io(|fd| receive(fd.get_ref().as_raw_fd())) {
                    Ok(r) => r,
                    Err(_would_block) => continue,
                },
                Err(e) => Err(e),
            };
            let (data, fd) = match got {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, pack = %self.key.pack, "reading from the zygote failed");
                    break;
                }
            };
            let msg: FromZygote = match serde_json::from_slice(&data) {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, pack = %self.key.pack, "unreadable message from the zygote");
                    break;
                }
            };
            match msg {
                FromZygote::Up => {
                    self.set_phase(Phase::Up);
                    self.send(&ToZygote::Target {
                        n: self.settings.prefork,
                    });
                }
                FromZygote::Failed { error } => {
                    warn!(pack = %self.key.pack, version = %self.key.version, %error,
                          "warm interpreter failed to start: calls run cold");
                    self.lock().phase = Phase::Failed(error);
                }
                FromZygote::Ready { pid } => {
                    let mut s = self.lock();
                    match fd {
                        Some(fd) if s.phase == Phase::Up => {
                            s.idle.push_back((pid, fd));
                            self.arrived.notify_one();
                        }
                        // Stopped meanwhile: dropping the socket makes the child exit.
                        _ => {}
                    }
                }
                FromZygote::Exit { pid, status } => {
                    let mut s = self.lock();
                    if let Some(w) = s.waiters.remove(&pid) {
                        let _ = w.send(status);
                    } else {
                        s.idle.retain(|(p, _)| *p != pid);
                    }
                }
            }
        }
        let mut s = self.lock();
        if !matches!(s.phase, Phase::Stopped | Phase::Failed(_)) {
            warn!(pack = %self.key.pack, version = %self.key.version,
                  "warm interpreter ended: calls run cold until it is restarted");
            s.phase = Phase::Gone;
        }
        s.idle.clear();
        // Its children die with it (parent-death signal): nobody will report them.
        s.waiters.clear();
    }

    /// Sends one message; a full or broken socket only means this zygote is no use any more.
    fn send(&self, msg: &ToZygote) {
        let data = serde_json::to_vec(msg).expect("plain messages serialise");
        if let Err(e) = nix::sys::socket::send(
            self.control.get_ref().as_raw_fd(),
            &data,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            debug!(error = %e, "cannot reach the zygote");
        }
    }

    /// A pre-forked child, if one is waiting; another is forked in its place.
    pub fn take(self: &Arc<Self>) -> Option<Child> {
        let (pid, sock, exit) = {
            let mut s = self.lock();
            if s.phase != Phase::Up {
                return None;
            }
            let (pid, sock) = s.idle.pop_front()?;
            let (tx, rx) = oneshot::channel();
            s.waiters.insert(pid, tx);
            s.served += 1;
            (pid, sock, rx)
        };
        // The zygote forks the replacement: at once when few children are left, else once this
        // one has finished.
        self.send(&ToZygote::Taken { pid });
        Some(Child {
            pid,
            sock,
            exit,
            zygote: self.clone(),
        })
    }

    /// Like [`Zygote::take`], but when every pre-forked child is busy, waits up to `wait` for
    /// the next one (a fork takes about a millisecond; a cold start, tens).
    pub async fn take_within(self: &Arc<Self>, wait: Duration) -> Option<Child> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(child) = self.take() {
                return Some(child);
            }
            if self.lock().phase != Phase::Up {
                return None;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Whether it is up (pre-forking), so a caller may wait for a child rather than go cold.
    pub fn is_up(&self) -> bool {
        self.lock().phase == Phase::Up
    }

    /// Whether it has served its share (`--warm-recycle`) and a fresh one should take over;
    /// it keeps serving until that one is ready.
    pub fn due(&self) -> bool {
        self.lock().served >= self.settings.recycle_after
    }

    /// Whether it has a child ready to hand out.
    pub fn ready(&self) -> bool {
        let s = self.lock();
        s.phase == Phase::Up && !s.idle.is_empty()
    }

    /// What it reports of itself.
    pub fn status(&self) -> Status {
        let s = self.lock();
        let recycled = s.served >= self.settings.recycle_after;
        let (state, alive) = match &s.phase {
            Phase::Starting => ("starting".to_string(), true),
            Phase::Up if recycled => ("recycling".to_string(), true),
            Phase::Up => ("ready".to_string(), true),
            Phase::Failed(why) => (format!("failed: {why}"), false),
            Phase::Gone => ("crashed".to_string(), false),
            Phase::Stopped => ("stopped".to_string(), false),
        };
        let waiting: Vec<u32> = s.idle.iter().map(|(p, _)| *p as u32).collect();
        Status::of(state, alive, s.pid, &waiting, s.served)
    }

    /// Stops it: idle children exit, running ones finish, then the zygote exits.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.phase = Phase::Stopped;
        s.idle.clear();
        drop(s);
        self.send(&ToZygote::Quit);
    }
}

/// Receives one message and the file descriptor it carries, if any; `None` at end of stream.
fn receive(fd: RawFd) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        (msg.bytes, fds)
    };
    // SAFETY: the kernel just installed these descriptors in this process for us alone.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if n == 0 && owned.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    let first = (!owned.is_empty()).then(|| owned.remove(0));
    Ok(Some((buf, first)))
}

/// Logs what a zygote prints (it should print nothing; a preload may), bounded.
async fn log_output(mut stream: impl AsyncRead + Unpin, pack: String) {
    let (kept, dropped) = contain::read_capped(&mut stream, 64 * 1024).await;
    let text = String::from_utf8_lossy(&kept);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        warn!(pack = %pack, line, "zygote output");
    }
    if dropped > 0 {
        warn!(pack = %pack, dropped, "zygote output truncated");
    }
}

/// A pre-forked child taken for one invocation.
pub struct Child {
    pid: i32,
    sock: OwnedFd,
    exit: oneshot::Receiver<i32>,
    zygote: Arc<Zygote>,
}

/// Reads the child's `{"exit": N}`; `None` when it closed the socket without one (a signal,
/// `os._exit`) or said something else.
async fn read_report(fd: &AsyncFd<OwnedFd>) -> Option<i32> {
    #[derive(Deserialize)]
    struct Report {
        exit: i32,
    }
    loop {
        let mut guard = fd.readable().await.ok()?;
        let mut buf = [0u8; 64];
        match guard.try_io(|fd| {
            nix::sys::socket::recv(fd.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io::Error::from)
        }) {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => {
                return serde_json::from_slice::<Report>(&buf[..n])
                    .ok()
                    .map(|r| r.exit)
            }
            Err(_would_block) => continue,
        }
    }
}

/// Puts a descriptor in non-blocking mode (for the reactor).
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// A blocking pipe `(read, write)`, both ends close-on-exec (the child's end is passed to it
/// explicitly).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl Child {
    /// Hands the child its job and returns it as a started action process.
    pub(crate) fn start(
        self,
        spec: &ExecSpec,
        mut env: Vec<(String, String)>,
        stdin_pipe: bool,
    ) -> io::Result<Started> {
        let tag = contain::new_tag();
        env.push((contain::TAG_VAR.into(), tag.clone()));
        let script = utf8(spec.args.last().map_or("".as_ref(), |a| a.as_os_str()))?;
        let cwd = utf8(spec.cwd.as_os_str())?;
        let job = serde_json::to_vec(&Job {
            argv: vec![script.as_str()],
            script: &script,
            env: &env,
            cwd: &cwd,
        })
        .map_err(io::Error::other)?;
        if job.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the environment is too large for a warm start",
            ));
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_child, stdin_ours) = if stdin_pipe {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (std::fs::File::open("/dev/null")?.into(), None)
        };
        // Tracked before it runs: its descendants are found from the first observation.
        let tree = Tree::new(self.pid as u32, tag, Some(&spec.params_dir));
        let started = Instant::now();
        let started_at = time::OffsetDateTime::now_utc();
        let fds = [
            stdin_child.as_raw_fd(),
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
        ];
        sendmsg::<()>(
            self.sock.as_fd().as_raw_fd(),
            &[IoSlice::new(&job)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        drop((stdin_child, out_w, err_w));
        // The same socket brings the child's own word on its exit status.
        set_nonblocking(&self.sock)?;
        // SAFETY: the socket is owned here and nothing else closes or replaces it.
        let report = unsafe { AsyncFd::register(self.sock)? };
        let stdin = match stdin_ours {
            Some(w) => Some(Box::pin(tokio::net::unix::pipe::Sender::from_owned_fd(w)?)
                as std::pin::Pin<Box<dyn AsyncWrite + Send>>),
            None => None,
        };
        Ok(Started {
            leader: Leader::Forked(ForkedLeader {
                exit: self.exit,
                report: Some(report),
                done: None,
                _zygote: self.zygote,
            }),
            stdin,
            stdout: Box::pin(tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?),
            stderr: Box::pin(tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?),
            tree,
            started,
            started_at,
        })
    }
}

/// The leader of a warm python invocation: the zygote's child, whose exit status the zygote
/// reports.
pub struct ForkedLeader {
    /// The zygote's report of the exit (always comes, unless the zygote died).
    exit: oneshot::Receiver<i32>,
    /// The child's own report, sent after its output is flushed and closed: earlier than the
    /// zygote's by the time the kernel takes to tear the process down. `None` once closed.
    report: Option<AsyncFd<OwnedFd>>,
    /// What the first wait found (a oneshot is read once).
    done: Option<Option<i32>>,
    /// Kept so the zygote's reader lives as long as a child it may report on.
    _zygote: Arc<Zygote>,
}

impl ForkedLeader {
    /// Waits for the exit status the zygote reports.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let got = match self.done {
            Some(got) => got,
            None => {
                let got = loop {
                    let Some(report) = &self.report else {
                        break (&mut self.exit).await.ok();
                    };
                    tokio::select! {
                        got = &mut self.exit => break got.ok(),
                        said = read_report(report) => match said {
                            // A normal exit with this code: the raw status of `exit(code)`.
                            Some(code) => break Some((code & 0xff) << 8),
                            None => self.report = None,
                        },
                    }
                };
                self.done = Some(got);
                got
            }
        };
        // No report: the zygote died, and its parent-death signal killed the child with it.
        Ok(ExitStatus::from_raw(got.unwrap_or(nix::libc::SIGKILL)))
    }
}
