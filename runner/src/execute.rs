//! Running one action as a process: spawn, deliver parameters, capture, time out.
//!
//! Independent of NATS, so it can be tested and benchmarked alone. The caller (the service)
//! decides *what* to run; this module only knows *how*:
//! - the process gets a cleared environment with exactly the variables it is given (plus the
//!   containment tag), and is contained ([`crate::contain`]): its own process group, killed with
//!   the runner, and every process it starts (even one that left the group with `setsid`) is
//!   killed at timeout (TERM, a grace period, KILL) and when the invocation ends;
//! - parameters go to stdin (then stdin is closed) or to a 0400 file named in
//!   `ATTUNE_PARAMETERS_FILE`, in the runner's 0700 private directory, and removed afterwards,
//!   never to the command line or environment;
//! - stdout and stderr are read concurrently and kept up to a cap; the rest is drained and
//!   counted, and a visible marker says how much was dropped.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use attune_nats::model::ParameterDelivery;
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{debug, instrument, warn};

use crate::contain::{self, Tree};
use crate::live::Tap;
use attune_nats::executions::OutputStream;
use std::sync::Arc;

/// Environment variable naming the parameters file under file delivery.
pub const PARAMETERS_FILE_VAR: &str = "ATTUNE_PARAMETERS_FILE";

/// Everything needed to run one action.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The interpreter: the pinned binary or the environment's interpreter, absolute.
    pub program: PathBuf,
    /// Interpreter arguments (templates already applied), then the script.
    pub args: Vec<OsString>,
    /// The working directory: the pack directory.
    pub cwd: PathBuf,
    /// The complete environment of the process.
    pub env: Vec<(String, String)>,
    /// The serialised parameters.
    pub parameters: Vec<u8>,
    /// Where the parameters go.
    pub delivery: ParameterDelivery,
    /// Directory for parameter files (private to the runner).
    pub params_dir: PathBuf,
    /// File extension of a parameter file (`json`, `env`, `yaml`).
    pub params_ext: &'static str,
    /// Wall-clock limit; the group is killed when it passes.
    pub timeout: Duration,
    /// Where its lines go while it runs (`attune.output.<id>`), if anywhere.
    pub live: Option<Arc<Tap>>,
}

/// Process-handling limits, from the runner config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap per stream, in bytes.
    pub output_cap: usize,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

pub use attune_nats::reply::{Captured, ProcessOutcome as Outcome};

/// The process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Spawning failed (missing interpreter, permissions…).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The parameters file could not be written.
    #[error("cannot write the parameters file {path}: {source}")]
    ParamsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads a stream to its end, keeping at most `cap` bytes and counting the rest; every chunk
/// also goes to the live `tap`, when there is one.
async fn capture(
    stream: impl AsyncRead + Unpin,
    cap: usize,
    tap: Option<(&Tap, OutputStream)>,
) -> Captured {
    let (kept, dropped) = contain::read_capped_with(stream, cap, |chunk| {
        if let Some((tap, which)) = tap {
            tap.feed(which, chunk);
        }
    })
    .await;
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    let truncated = dropped > 0;
    if truncated {
        text.push_str(&format!("\n[... truncated: {dropped} bytes omitted]"));
    }
    Captured { text, truncated }
}

/// Removes the parameters file when the execution is over, whatever happened.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes the 0400 parameters file (created new, so nothing else can have opened it before).
fn write_params_file(dir: &Path, ext: &str, data: &[u8]) -> Result<PathBuf, ExecError> {
    let path = dir.join(format!("{}.{ext}", uuid::Uuid::new_v4()));
    let err = |source| ExecError::ParamsFile {
        path: path.clone(),
        source,
    };
    crate::private::ensure(dir).map_err(err)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    Ok(path)
}

/// A started action process, however it was started: what [`supervise`] needs.
pub(crate) struct Started {
    /// The leader, to wait for and to kill.
    pub leader: Leader,
    /// Its stdin, when parameters go there.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Its stdout.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// Its stderr.
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Its process tree, for the timeout and the final kill.
    pub tree: Tree,
    /// When it started.
    pub started: Instant,
    /// The same, as a wall-clock time.
    pub started_at: time::OffsetDateTime,
}

/// The leader of an action's process tree: a child of the runner, or a child a warm zygote
/// forked (then the zygote reports its exit status).
pub(crate) enum Leader {
    /// Spawned by the runner.
    Child(tokio::process::Child),
    /// Forked by a zygote ([`crate::warm`]).
    Forked(crate::warm::ForkedLeader),
}

impl Leader {
    /// Waits for the leader's exit.
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Leader::Child(c) => c.wait().await,
            Leader::Forked(f) => f.wait().await,
        }
    }

    /// `SIGKILL` to the leader (the tree is killed separately).
    fn start_kill(&mut self, tree: &Tree) {
        match self {
            Leader::Child(c) => {
                let _ = c.start_kill();
            }
            Leader::Forked(_) => tree.kill_leader(),
        }
    }
}

/// The parameters file of one execution, when parameters go to a file: `(variable, path)` for
/// the environment, and the guard that removes it.
fn params_file(spec: &ExecSpec) -> Result<(Option<PathBuf>, RemoveOnDrop), ExecError> {
    match spec.delivery {
        ParameterDelivery::Stdin => Ok((None, RemoveOnDrop(None))),
        ParameterDelivery::File => {
            let path = write_params_file(&spec.params_dir, spec.params_ext, &spec.parameters)?;
            Ok((Some(path.clone()), RemoveOnDrop(Some(path))))
        }
    }
}

/// Runs the process described by `spec` to completion, timeout or abort, starting a fresh
/// interpreter (the cold path).
///
/// `abort` turning `true` (the runner's drain grace ran out) kills the group like a timeout.
#[instrument(skip_all, fields(program = %spec.program.display()))]
pub async fn run(
    spec: ExecSpec,
    limits: Limits,
    abort: watch::Receiver<bool>,
) -> Result<Outcome, ExecError> {
    let tag = contain::new_tag();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(contain::TAG_VAR, &tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (file, _params_file) = params_file(&spec)?;
    match &file {
        None => cmd.stdin(Stdio::piped()),
        Some(path) => cmd.env(PARAMETERS_FILE_VAR, path).stdin(Stdio::null()),
    };
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let mut child = contain::spawn(cmd)
        .await
        .map_err(|source| ExecError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
    let pgid = child.id().expect("a just-spawned child has a pid");
    // Recorded next to the parameter files, so a restarted runner kills it if this one dies.
    let tree = Tree::new(pgid, tag, Some(&spec.params_dir));
    debug!(pgid, "spawned");
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::pin(s) as Pin<Box<dyn AsyncWrite + Send>>);
    let started = Started {
        stdout: Box::pin(child.stdout.take().expect("piped")),
        stderr: Box::pin(child.stderr.take().expect("piped")),
        stdin,
        leader: Leader::Child(child),
        tree,
        started,
        started_at,
    };
    Ok(supervise(
        started,
        spec.parameters,
        spec.timeout,
        limits,
        abort,
        spec.live,
    )
    .await)
}

/// Runs `spec` in a pre-started interpreter ([`crate::warm`]): the same environment, working
/// directory, arguments, parameters, containment, capture and timeout as [`run`]. When the
/// interpreter cannot take the job (it died a moment ago, with its zygote), nothing of the
/// action has run, and it runs cold instead; the result says which (`true`: warm).
#[instrument(skip_all, fields(program = %spec.program.display(), warm = true))]
pub async fn run_warm(
    ready: crate::warm::Ready,
    spec: ExecSpec,
    limits: Limits,
    abort: watch::Receiver<bool>,
) -> Result<(Outcome, bool), ExecError> {
    let (file, params_guard) = params_file(&spec)?;
    let mut env = spec.env.clone();
    if let Some(path) = &file {
        env.push((PARAMETERS_FILE_VAR.into(), path.display().to_string()));
    }
    match ready.start(&spec, env, file.is_none()).await {
        Ok(started) => {
            let outcome = supervise(
                started,
                spec.parameters,
                spec.timeout,
                limits,
                abort,
                spec.live,
            )
            .await;
            drop(params_guard);
            Ok((outcome, true))
        }
        Err(e) => {
            debug!(error = %e, "the warm interpreter could not take the job: running cold");
            drop(params_guard);
            Ok((run(spec, limits, abort).await?, false))
        }
    }
}

/// Feeds stdin, captures stdout and stderr, enforces the timeout and the abort, and kills
/// whatever the action left running: the part of an execution that does not depend on how the
/// process was started.
async fn supervise(
    started: Started,
    parameters: Vec<u8>,
    timeout: Duration,
    limits: Limits,
    mut abort: watch::Receiver<bool>,
    live: Option<Arc<Tap>>,
) -> Outcome {
    let Started {
        mut leader,
        stdin,
        stdout,
        stderr,
        mut tree,
        started,
        started_at,
    } = started;
    // Feeding stdin, reading both pipes and waiting all happen in this one task: no extra
    // tasks (and cross-thread wake-ups) per execution.
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A script that never reads stdin makes this fail with EPIPE: not an error.
            let _ = stdin.write_all(&parameters).await;
            let _ = stdin.shutdown().await;
        }
    };
    let out = capture(
        stdout,
        limits.output_cap,
        live.as_deref().map(|t| (t, OutputStream::Stdout)),
    );
    let err = capture(
        stderr,
        limits.output_cap,
        live.as_deref().map(|t| (t, OutputStream::Stderr)),
    );

    let deadline = tokio::time::Instant::from_std(started) + timeout;
    let waited = async {
        let (mut timed_out, mut aborted) = (false, false);
        // The first look after one interval: a process that just started has nothing below it.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + contain::OBSERVE_EVERY,
            contain::OBSERVE_EVERY,
        );
        let status = loop {
            tokio::select! {
                s = leader.wait() => break s,
                _ = tokio::time::sleep_until(deadline) => {
                    timed_out = true;
                    break terminate(&mut leader, &mut tree, limits.kill_grace).await
                }
                _ = async {
                    // A dropped sender means nobody can abort any more: never fire.
                    if abort.wait_for(|a| *a).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    aborted = true;
                    break terminate(&mut leader, &mut tree, limits.kill_grace).await
                }
                // Remember who is below the leader while it lives, so a descendant that left
                // the group is still known once the leader is gone.
                _ = tick.tick() => tree.observe(),
            }
        };
        let duration = started.elapsed();
        // Anything the action left running (a background grandchild, a `setsid` daemon) would
        // keep the pipes open and outlive the invocation: the whole tree ends with its leader.
        tree.kill_all();
        (status, duration, timed_out, aborted)
    };
    let io = async { tokio::join!(waited, out, err) };
    tokio::pin!(io);
    // stdin is fed while the rest runs, but never waited for on its own: a process outside the
    // tree that holds stdin without reading must not hold the invocation.
    let ((status, duration, timed_out, aborted), stdout, stderr) = tokio::select! {
        r = &mut io => r,
        () = feed => io.await,
    };
    let (exit_code, signal) = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            (s.code(), s.signal())
        }
        Err(e) => {
            warn!(error = %e, "waiting for the child failed");
            (None, None)
        }
    };
    Outcome {
        exit_code,
        signal,
        timed_out,
        aborted,
        stdout,
        stderr,
        started_at,
        duration,
    }
}

/// SIGTERM to the whole tree, up to `grace` for the leader to exit, then SIGKILL to all of it.
async fn terminate(
    leader: &mut Leader,
    tree: &mut Tree,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    tree.signal(Signal::SIGTERM);
    match tokio::time::timeout(grace, leader.wait()).await {
        Ok(s) => s,
        Err(_) => {
            leader.start_kill(tree);
            tree.kill_all();
            leader.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capture_keeps_the_cap_and_marks_the_rest() {
        let data = [b'x'; 100];
        let c = capture(&data[..], 10, None).await;
        assert!(c.truncated);
        assert_eq!(
            c.text,
            format!("{}\n[... truncated: 90 bytes omitted]", "x".repeat(10))
        );
        let c = capture(&data[..], 100, None).await;
        assert!(!c.truncated);
        assert_eq!(c.text.len(), 100);
    }
}
