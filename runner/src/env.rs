//! Per-pack environments (virtualenv, node_modules) as docs/runner.md lays them out.
//!
//! - Layout: `<envs_dir>/<pack>/<runtime>-<version>` per (pack, version) that an action of the
//!   pack can use; the implicit `default` version of a version-less runtime uses the base
//!   `<envs_dir>/<pack>/<runtime>`.
//! - A new environment is built in a temporary sibling, gets its ready marker, and is renamed into
//!   place, so a directory with a marker is always complete.
//! - Dependencies are installed only when the manifest's checksum differs from the one recorded
//!   in the environment (and recorded only after a successful install).
//! - An environment whose interpreter is missing is broken and rebuilt.
//! - A lock file per environment, taken with `flock`, means two runners on one host never build
//!   the same environment at once; the second finds it ready when it gets the lock.
//!
//! - Each create or install command is contained ([`crate::contain::run_bounded`]): its own
//!   process group, a time limit ([`EnvRequest::timeout`]), at most [`OUTPUT_CAP`] of output kept
//!   for the error, and everything it started killed when it ends, times out, or the build is
//!   cancelled (the future dropped: the runner is shutting down). A cancelled or failed build
//!   leaves no temporary directory behind.
//!
//! This runs when packs or runtimes change, never on the invocation path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_nats::model::{EnvType, ExecutionConfig};
use attune_nats::VersionKey;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tracing::{info, instrument};

use crate::template::Vars;

/// Output of a create or install command kept (stdout and stderr, each) for the error message.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How often a build waiting for another builder's host lock tries again.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Marker file: the environment is complete.
pub const READY_MARKER: &str = ".attune-ready";
/// Marker file: checksum of the manifest whose dependencies are installed.
pub const MANIFEST_MARKER: &str = ".attune-manifest-sha256";

/// Why an environment could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A file operation failed.
    #[error("environment {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The create or install command exited unsuccessfully.
    #[error("environment {env}: `{command}` failed: {detail}")]
    Command {
        /// The environment directory.
        env: PathBuf,
        /// The command line.
        command: String,
        /// Exit status and (bounded) output.
        detail: String,
    },
    /// The create or install command could not run to its end (not started, or hung).
    #[error("environment {env}: `{command}`: {source}")]
    Run {
        /// The environment directory.
        env: PathBuf,
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: crate::contain::CommandError,
    },
    /// The environment was built but its interpreter is not there.
    #[error("environment {env}: interpreter {interpreter} missing after creation")]
    NoInterpreter {
        /// The environment directory.
        env: PathBuf,
        /// The expected interpreter.
        interpreter: PathBuf,
    },
}

/// One environment to set up.
#[derive(Debug, Clone)]
pub struct EnvRequest<'a> {
    /// `<envs_dir>`.
    pub envs_dir: &'a Path,
    /// Pack ref.
    pub pack: &'a str,
    /// The runtime version it is for.
    pub key: &'a VersionKey,
    /// The version's config.
    pub config: &'a ExecutionConfig,
    /// The pinned, verified interpreter.
    pub interpreter: &'a Path,
    /// The pack's current files.
    pub pack_dir: &'a Path,
    /// Environment for create/install commands (the runner's minimal one).
    pub env: &'a [(String, String)],
    /// Limit of each create or install command.
    pub timeout: Duration,
}

/// The directory of an environment.
pub fn env_dir(envs_dir: &Path, pack: &str, key: &VersionKey) -> PathBuf {
    envs_dir.join(pack).join(key.env_dir_name())
}

/// Whether a config asks for an environment at all.
pub fn wants_env(config: &ExecutionConfig) -> bool {
    config
        .environment
        .as_ref()
        .is_some_and(|e| e.env_type != EnvType::None)
}

/// An exclusive host-wide lock on a file (an environment, a cache dir), released on drop.
#[derive(Debug)]
pub struct HostLock {
    /// Keeps the locked descriptor open; unlocks when dropped.
    _lock: Flock<File>,
}

impl HostLock {
    /// Blocks until the lock on `path` is held. Call from a blocking thread.
    pub fn acquire(path: &Path) -> std::io::Result<HostLock> {
        Self::lock(path, FlockArg::LockExclusive)
    }

    /// Takes the lock on `path` if nobody holds it; `WouldBlock` if somebody does.
    pub fn try_acquire(path: &Path) -> std::io::Result<HostLock> {
        Self::lock(path, FlockArg::LockExclusiveNonblock)
    }

    fn lock(path: &Path, how: FlockArg) -> std::io::Result<HostLock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            match Flock::lock(file, how) {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(std::io::Error::from(errno)),
            }
        }
    }
}

/// SHA-256 of a manifest, or `none` when the pack has none.
fn manifest_checksum(path: Option<&Path>) -> String {
    match path.and_then(|p| std::fs::read(p).ok()) {
        Some(bytes) => hex::encode(Sha256::digest(bytes)),
        None => "none".into(),
    }
}

/// Makes the environment ready and returns the interpreter executions must use (the
/// environment's `interpreter_path`, or the pinned binary when it names none). `None` when the
/// config wants no environment.
#[instrument(skip_all, fields(pack = req.pack, runtime = %req.key.runtime, version = %req.key.version))]
pub async fn ensure(req: &EnvRequest<'_>) -> Result<Option<PathBuf>, EnvError> {
    let Some(env_cfg) = req
        .config
        .environment
        .as_ref()
        .filter(|_| wants_env(req.config))
    else {
        return Ok(None);
    };
    let dir = env_dir(req.envs_dir, req.pack, req.key);
    let parent = dir.parent().expect("has a parent").to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EnvError::Io { path, source }
    };
    let lock_path = parent.join(format!(
        ".{}.lock",
        dir.file_name().expect("named").to_string_lossy()
    ));
    // Polled rather than blocked on in a thread: a build waiting for another builder stays
    // cancellable.
    let lock = loop {
        match HostLock::try_acquire(&lock_path) {
            Ok(lock) => break lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(LOCK_RETRY).await;
            }
            Err(e) => return Err(io(&lock_path)(e)),
        }
    };

    let manifest = req
        .config
        .dependencies
        .as_ref()
        .map(|d| req.pack_dir.join(&d.manifest_file))
        .filter(|p| p.is_file());
    let checksum = manifest_checksum(manifest.as_deref());
    let interpreter_for = |env: &Path| -> PathBuf {
        env_cfg
            .interpreter_path
            .as_deref()
            .map(|t| PathBuf::from(Vars::new(req.pack_dir, env, req.interpreter, None).render(t)))
            .unwrap_or_else(|| req.interpreter.to_path_buf())
    };
    let final_interpreter = interpreter_for(&dir);
    let ready = dir.join(READY_MARKER).is_file() && final_interpreter.exists();

    if !ready {
        info!(env = %dir.display(), "building environment");
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            dir.file_name().expect("named").to_string_lossy(),
            uuid::Uuid::new_v4()
        ));
        // Removed on every way out but success, including cancellation.
        let mut tmp_guard = RemoveDirOnDrop(Some(tmp.clone()));
        build(
            req,
            env_cfg,
            &tmp,
            manifest.as_deref(),
            &checksum,
            &interpreter_for(&tmp),
        )
        .await?;
        if dir.exists() {
            // Broken or half-built: replace it. Running processes keep their open files.
            tokio::fs::remove_dir_all(&dir).await.map_err(io(&dir))?;
        }
        tokio::fs::rename(&tmp, &dir).await.map_err(io(&dir))?;
        tmp_guard.0 = None;
    } else {
        let recorded = std::fs::read_to_string(dir.join(MANIFEST_MARKER)).unwrap_or_default();
        if recorded.trim() != checksum {
            info!(env = %dir.display(), "manifest changed: installing dependencies");
            install(req, &dir, manifest.as_deref(), &final_interpreter).await?;
            write_marker(&dir.join(MANIFEST_MARKER), &checksum)?;
        }
    }
    drop(lock);
    Ok(Some(final_interpreter))
}

async fn build(
    req: &EnvRequest<'_>,
    env_cfg: &attune_nats::model::EnvironmentConfig,
    tmp: &Path,
    manifest: Option<&Path>,
    checksum: &str,
    tmp_interpreter: &Path,
) -> Result<(), EnvError> {
    if !env_cfg.create_command.is_empty() {
        let vars = Vars::new(req.pack_dir, tmp, req.interpreter, manifest);
        run_command(req, tmp, &vars.render_all(&env_cfg.create_command)).await?;
    }
    // Also when the command made nothing (or there is none): the directory must exist.
    tokio::fs::create_dir_all(tmp)
        .await
        .map_err(|source| EnvError::Io {
            path: tmp.to_path_buf(),
            source,
        })?;
    if env_cfg.interpreter_path.is_some() && !tmp_interpreter.exists() {
        return Err(EnvError::NoInterpreter {
            env: tmp.to_path_buf(),
            interpreter: tmp_interpreter.to_path_buf(),
        });
    }
    install(req, tmp, manifest, tmp_interpreter).await?;
    write_marker(&tmp.join(MANIFEST_MARKER), checksum)?;
    write_marker(&tmp.join(READY_MARKER), &attune_nats::time::now_rfc3339())
}

/// Runs the install command when there is a manifest and a command.
async fn install(
    req: &EnvRequest<'_>,
    env: &Path,
    manifest: Option<&Path>,
    interpreter: &Path,
) -> Result<(), EnvError> {
    let (Some(deps), Some(manifest)) = (req.config.dependencies.as_ref(), manifest) else {
        return Ok(());
    };
    if deps.install_command.is_empty() {
        return Ok(());
    }
    // `{interpreter}` is the environment's own interpreter once the environment exists.
    let vars = Vars::new(req.pack_dir, env, interpreter, Some(manifest));
    run_command(req, env, &vars.render_all(&deps.install_command)).await
}

/// Runs one create or install command, contained and bounded.
async fn run_command(req: &EnvRequest<'_>, env: &Path, argv: &[String]) -> Result<(), EnvError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(req.pack_dir)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)));
    let out = crate::contain::run_bounded(cmd, req.timeout, OUTPUT_CAP)
        .await
        .map_err(|source| EnvError::Run {
            env: env.to_path_buf(),
            command: argv.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(EnvError::Command {
            env: env.to_path_buf(),
            command: argv.join(" "),
            detail: format!("{}: {}", out.status, out.output),
        });
    }
    Ok(())
}

/// Removes a half-built environment directory when dropped (unless disarmed).
struct RemoveDirOnDrop(Option<PathBuf>);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write_marker(path: &Path, content: &str) -> Result<(), EnvError> {
    std::fs::write(path, content).map_err(|source| EnvError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_per_pack_and_version_with_a_base_for_default() {
        let root = Path::new("/envs");
        assert_eq!(
            env_dir(root, "core", &VersionKey::new("python", "3.12")),
            Path::new("/envs/core/python-3.12")
        );
        assert_eq!(
            env_dir(root, "core", &VersionKey::new("shell", "default")),
            Path::new("/envs/core/shell")
        );
    }
}
