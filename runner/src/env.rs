//! Per-pack environments (virtualenv, node_modules) as docs/runner.md lays them out.
//!
//! - Layout: `<envs_dir>/<pack>/<runtime>-<version>` per (pack, version) that an action of the
//!   pack can use; the implicit `default` version of a version-less runtime uses the base
//!   `<envs_dir>/<pack>/<runtime>`.
//! - **Built where it lives.** A new environment is created at its final path (a virtualenv
//!   writes its own path into `bin/pip` and every console script, so a rename would break them)
//!   under the host lock, and the ready marker is written last: a directory without it is
//!   half-built, and is wiped and built again.
//! - **It follows its definition.** Two fingerprints are recorded in the environment: the
//!   *build* fingerprint (the pinned binary's path, size and modification time, the rendered
//!   create command, `env_type`, `interpreter_path`) and the *dependencies* fingerprint (the build
//!   fingerprint, the rendered install command, the manifest's and the lock file's bytes). A
//!   different build fingerprint rebuilds the environment from scratch; a different dependencies
//!   fingerprint only runs the install command again. So editing a runtime's create or install
//!   command, upgrading the interpreter, or changing `requirements.txt` / `package.json` /
//!   `package-lock.json` each does what it must, and nothing else does anything.
//! - An environment whose interpreter is missing or not executable is broken and rebuilt.
//! - A lock file per environment, taken with `flock`, means two runners on one host never build
//!   the same environment at once; the second finds it ready when it gets the lock.
//! - Each create or install command is contained ([`crate::contain::run_bounded`]): its own
//!   process group, a time limit ([`EnvRequest::timeout`]), at most [`OUTPUT_CAP`] of output kept
//!   for the error, and everything it started killed when it ends, times out, or the build is
//!   cancelled (the future dropped: the runner is shutting down). A cancelled or failed build
//!   leaves no half-built directory behind.
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
/// Marker file: the build fingerprint the environment was created with.
pub const BUILD_MARKER: &str = ".attune-build-sha256";
/// Marker file: the dependencies fingerprint of what is installed.
pub const DEPS_MARKER: &str = ".attune-deps-sha256";

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

/// Whether `path` is an executable regular file: the cheap check (one `stat`) that tells a
/// usable environment from a broken one, at invocation time too.
pub fn is_usable_interpreter(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A SHA-256 over labelled parts, each length-prefixed so no two lists collide.
fn fingerprint<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (label, bytes) in parts {
        for piece in [label.as_bytes(), bytes] {
            h.update((piece.len() as u64).to_le_bytes());
            h.update(piece);
        }
    }
    hex::encode(h.finalize())
}

/// The pinned binary's identity: its path, and its size and modification time (an upgrade in
/// place changes them).
fn binary_identity(binary: &Path) -> String {
    let meta = std::fs::metadata(binary);
    let (len, mtime) = meta.map_or((0, 0), |m| {
        use std::os::unix::fs::MetadataExt;
        (
            m.len(),
            m.mtime_nsec() as i128 + m.mtime() as i128 * 1_000_000_000,
        )
    });
    format!("{} {len} {mtime}", binary.display())
}

/// The build and dependencies fingerprints of the environment `req` asks for (see the module
/// documentation). Commands enter as written, templates unexpanded: the pack's files move to a
/// new directory with every new pack digest, and that alone must not reinstall anything.
fn fingerprints(
    req: &EnvRequest<'_>,
    env_cfg: &attune_nats::model::EnvironmentConfig,
    manifest: Option<&Path>,
    lock: Option<&Path>,
) -> (String, String) {
    let build = fingerprint([
        ("binary", binary_identity(req.interpreter).as_bytes()),
        ("create", env_cfg.create_command.join("\0").as_bytes()),
        ("env_type", format!("{:?}", env_cfg.env_type).as_bytes()),
        (
            "interpreter_path",
            env_cfg.interpreter_path.as_deref().unwrap_or("").as_bytes(),
        ),
    ]);
    let install = req
        .config
        .dependencies
        .as_ref()
        .map(|d| d.install_command.join("\0"))
        .unwrap_or_default();
    let read = |p: Option<&Path>| p.and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
    let deps = fingerprint([
        ("build", build.as_bytes()),
        ("install", install.as_bytes()),
        ("manifest", &read(manifest)[..]),
        ("lock", &read(lock)[..]),
    ]);
    (build, deps)
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

    let in_pack =
        |name: Option<&String>| name.map(|n| req.pack_dir.join(n)).filter(|p| p.is_file());
    let deps_cfg = req.config.dependencies.as_ref();
    let manifest = in_pack(deps_cfg.map(|d| &d.manifest_file));
    let lock_file = in_pack(deps_cfg.and_then(|d| d.lock_file.as_ref()));
    let interpreter = env_cfg
        .interpreter_path
        .as_deref()
        .map(|t| PathBuf::from(Vars::new(req.pack_dir, &dir, req.interpreter, None).render(t)))
        .unwrap_or_else(|| req.interpreter.to_path_buf());
    let (build_fp, deps_fp) = fingerprints(req, env_cfg, manifest.as_deref(), lock_file.as_deref());
    let recorded = |marker: &str| {
        std::fs::read_to_string(dir.join(marker))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let intact = dir.join(READY_MARKER).is_file() && is_usable_interpreter(&interpreter);

    if !intact || recorded(BUILD_MARKER) != build_fp {
        info!(env = %dir.display(), intact, "building environment");
        if dir.exists() {
            // Half-built, broken or built from another definition. Running processes keep
            // their open files.
            tokio::fs::remove_dir_all(&dir).await.map_err(io(&dir))?;
        }
        // Removed on every way out but success, including cancellation.
        let mut guard = RemoveDirOnDrop(Some(dir.clone()));
        build(req, env_cfg, &dir, manifest.as_deref(), &interpreter).await?;
        write_marker(&dir.join(BUILD_MARKER), &build_fp)?;
        write_marker(&dir.join(DEPS_MARKER), &deps_fp)?;
        // Last: only now is the directory a complete environment.
        write_marker(&dir.join(READY_MARKER), &attune_nats::time::now_rfc3339())?;
        guard.0 = None;
    } else if recorded(DEPS_MARKER) != deps_fp {
        info!(env = %dir.display(), "dependencies changed: installing them");
        install(req, &dir, manifest.as_deref(), &interpreter).await?;
        write_marker(&dir.join(DEPS_MARKER), &deps_fp)?;
    }
    drop(lock);
    Ok(Some(interpreter))
}

/// Creates the environment at `dir` (its final place) and installs the dependencies.
async fn build(
    req: &EnvRequest<'_>,
    env_cfg: &attune_nats::model::EnvironmentConfig,
    dir: &Path,
    manifest: Option<&Path>,
    interpreter: &Path,
) -> Result<(), EnvError> {
    if !env_cfg.create_command.is_empty() {
        let vars = Vars::new(req.pack_dir, dir, req.interpreter, manifest);
        run_command(req, dir, &vars.render_all(&env_cfg.create_command)).await?;
    }
    // Also when the command made nothing (or there is none): the directory must exist.
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| EnvError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    if env_cfg.interpreter_path.is_some() && !is_usable_interpreter(interpreter) {
        return Err(EnvError::NoInterpreter {
            env: dir.to_path_buf(),
            interpreter: interpreter.to_path_buf(),
        });
    }
    install(req, dir, manifest, interpreter).await
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
