//! `attune-testkit`: the real parts tests stand on.
//!
//! Tests never mock NATS: [`NatsServer`] starts a real `nats-server` with JetStream on a free
//! loopback port and a temporary store directory (optionally with configuration of the test's
//! own, such as users and permissions), and stops it on drop; [`NatsServer::hub`] and
//! [`NatsServer::leaf_of`] make a hub and a leaf node with JetStream in separate domains, as a
//! central site and a remote host would run them. [`StubInterpreters`]
//! makes a directory of small scripts named like versioned interpreters (`python3.12`) that report
//! a chosen version and otherwise run a real interpreter, so multi-version tests do not depend on
//! what this host has installed. [`attune_bin`] finds the `attune` binary for end-to-end tests.
//! [`NatsCluster`] starts several servers routed into one JetStream cluster, for tests of node
//! loss; services and the CLI take either (or a server list) through [`ServerArg`].

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attune_nats::local::INSTALL_HINT;
pub use attune_nats::local::{find_server as find_nats_server, which};

mod cluster;
pub use cluster::{http_get_json, NatsCluster};

/// One `attune` service process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ServiceProcess {
    /// The process.
    child: Child,
    /// Its name in messages and log file names.
    name: String,
    /// Where its stdout goes.
    log: PathBuf,
    /// Where its stderr goes.
    err: PathBuf,
}

impl ServiceProcess {
    /// Starts `attune <args>` against `server` (with `PATH` = `path_env` when given), logging
    /// stdout to `dir/<name>.log` and stderr to `dir/<name>.err`.
    pub fn start(
        name: &str,
        server: &(impl ServerArg + ?Sized),
        args: &[&str],
        path_env: Option<&str>,
        dir: &Path,
    ) -> ServiceProcess {
        let log = dir.join(format!("{name}.log"));
        let err = dir.join(format!("{name}.err"));
        let mut cmd = Command::new(attune_bin());
        cmd.arg("--server").arg(server.server_arg()).args(args);
        // `ATTUNE_TEST_LOG` (a `RUST_LOG` filter) gives services more detail when a test is
        // being investigated.
        cmd.env(
            "RUST_LOG",
            std::env::var("ATTUNE_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
        );
        if let Some(p) = path_env {
            cmd.env("PATH", p);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        ServiceProcess {
            child,
            name: name.to_string(),
            log,
            err,
        }
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and wait: the process dies without draining, as on a host failure.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: a runner drains and removes its heartbeat.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log goes with the test's temp dir: say here what the process was doing.
        let stderr = self.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{} did not stop within 15 s of SIGTERM (stdout in {}); the end of its stderr:\n{}",
            self.name,
            self.log.display(),
            tail.join("\n")
        );
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_millis(200));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Tar bytes with entries written as given, unchecked, as an attacker would write them:
/// `(path, type, content, link target)`. Paths may escape, links may point anywhere.
pub fn hostile_tar(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().expect("a GNU header");
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(*kind);
        header.set_cksum();
        builder
            .append(&header, *data)
            .expect("append to an in-memory tar");
    }
    builder.into_inner().expect("finish an in-memory tar")
}

/// Archives an attacker would upload, each with what it is and a phrase the refusal must
/// contain: a symlinked or hard-linked `pack.yaml`, a device, a fifo, entries climbing out with
/// `..` or an absolute path (`escape_to`, which must not exist afterwards).
pub fn hostile_archives(escape_to: &str) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};
    let pack_yaml: &[u8] = b"ref: evil\nversion: 1.0.0\n";
    vec![
        (
            "symlinked pack.yaml",
            hostile_tar(&[("pack.yaml", Symlink, b"", "/proc/self/environ")]),
            "archive entry \"pack.yaml\" is a symlink",
        ),
        (
            "hard-linked pack.yaml",
            hostile_tar(&[("pack.yaml", Link, b"", "/etc/passwd")]),
            "is a hard link",
        ),
        (
            "character device",
            hostile_tar(&[
                ("pack.yaml", Regular, pack_yaml, ""),
                ("zero", Char, b"", ""),
            ]),
            "is a device",
        ),
        (
            "block device",
            hostile_tar(&[
                ("pack.yaml", Regular, pack_yaml, ""),
                ("disk", Block, b"", ""),
            ]),
            "is a device",
        ),
        (
            "fifo",
            hostile_tar(&[
                ("pack.yaml", Regular, pack_yaml, ""),
                ("pipe", Fifo, b"", ""),
            ]),
            "is a fifo",
        ),
        (
            "entry climbing out with ..",
            hostile_tar(&[
                ("pack.yaml", Regular, pack_yaml, ""),
                ("../../../evil", Regular, b"x", ""),
            ]),
            "escapes the pack directory",
        ),
        (
            "entry with an absolute path",
            hostile_tar(&[(escape_to, Regular, b"x", "")]),
            "escapes the pack directory",
        ),
    ]
}

/// A free loopback TCP port (bound and released, so another process can take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// What `--server` is given: one server's URL, a cluster's comma-separated list, or a list
/// written out by the test (in the order an operator would write it).
pub trait ServerArg {
    /// The value of `--server`.
    fn server_arg(&self) -> String;
}

impl ServerArg for NatsServer {
    fn server_arg(&self) -> String {
        self.url()
    }
}

impl ServerArg for NatsCluster {
    fn server_arg(&self) -> String {
        self.url_list()
    }
}

impl ServerArg for str {
    fn server_arg(&self) -> String {
        self.to_string()
    }
}

impl ServerArg for String {
    fn server_arg(&self) -> String {
        self.clone()
    }
}

/// A real `nats-server` with JetStream, on a free loopback port, storing in a temp dir.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    binary: PathBuf,
    /// The configuration the test asked for (written to `server.conf` and given with `-c`).
    extra_conf: Option<String>,
    /// The port this server accepts leaf node connections on, for a hub ([`NatsServer::hub`]).
    leaf_port: Option<u16>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections. Panics with an install hint if
    /// `nats-server` is missing: a test that needs NATS must not silently pass without it.
    pub fn start() -> Self {
        Self::start_inner(None, false)
    }

    /// Starts a server with `extra_conf` as its configuration file (nats-server's config
    /// syntax: `authorization { users = [...] }`, `accounts { ... }`, `tls { ... }`, ...). The
    /// port, address and JetStream store still come from the test kit's flags, which override the
    /// file, so `extra_conf` holds only what the test is about.
    pub fn start_with_config(extra_conf: &str) -> Self {
        Self::start_inner(Some(extra_conf), false)
    }

    /// A hub: JetStream in `domain`, and a leaf node listener on a free loopback port
    /// ([`NatsServer::leaf_port`]) that [`NatsServer::leaf_of`] servers connect to. It keeps
    /// both ports across [`NatsServer::stop`] and [`NatsServer::restart`], so stopping it cuts
    /// every leaf's link and restarting it lets them reconnect.
    pub fn hub(domain: &str) -> Self {
        Self::start_inner(Some(&format!("jetstream {{ domain: {domain} }}")), true)
    }

    /// A leaf node of `hub`, as a remote host runs one: its own JetStream in `domain` (which
    /// must differ from the hub's) and its own store, with a leaf link to the hub's
    /// [`NatsServer::leaf_port`]. Returns once it is ready; the link may come up a moment later
    /// (see [`NatsServer::leaf_link_up`]).
    pub fn leaf_of(hub: &NatsServer, domain: &str) -> Self {
        let port = hub
            .leaf_port
            .expect("leaf_of needs a hub started with NatsServer::hub");
        Self::start_inner(
            Some(&format!(
                "jetstream {{ domain: {domain} }}\nleafnodes {{ remotes = [ {{ url: \"nats-leaf://127.0.0.1:{port}\" }} ] }}"
            )),
            false,
        )
    }

    fn start_inner(extra_conf: Option<&str>, leaf_listener: bool) -> Self {
        let binary = find_nats_server()
            .unwrap_or_else(|| panic!("nats-server is not installed: {INSTALL_HINT}"));
        let store = tempfile::tempdir().expect("temp store dir");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            binary,
            extra_conf: extra_conf.map(str::to_string),
            leaf_port: leaf_listener.then(free_port),
        };
        // Another test may take a port between `free_port` and the bind: then this server
        // exits at once, and fresh ports are tried.
        for _ in 0..5 {
            if server.spawn() {
                return server;
            }
            server.port = free_port();
            server.leaf_port = server.leaf_port.map(|_| free_port());
        }
        panic!(
            "nats-server could not bind a free port in 5 tries; log: {}",
            server.log()
        );
    }

    /// Starts the server and waits until it says it is ready. Returns false when it exited
    /// instead (its port was taken); panics when it neither exits nor becomes ready in 10 s.
    ///
    /// Readiness is read from this server's own log, not from a TCP connect: a connect also
    /// succeeds when some other test's server holds the port, which made tests talk to the
    /// wrong server.
    fn spawn(&mut self) -> bool {
        let log = fs::File::create(self.store.path().join("server.log")).expect("server log");
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = self.config_file() {
            cmd.arg("-c").arg(config);
        }
        let child = cmd
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.log().contains("Server is ready") {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.child = None;
                    return false;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not become ready on port {} within 10 s; log: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the configuration file (the test's configuration, and the leaf node listener on
    /// its current port), `None` when there is nothing to configure.
    fn config_file(&self) -> Option<PathBuf> {
        let mut conf = self.extra_conf.clone().unwrap_or_default();
        if let Some(port) = self.leaf_port {
            conf.push_str(&format!("\nleafnodes {{ listen: \"127.0.0.1:{port}\" }}\n"));
        }
        if conf.is_empty() {
            return None;
        }
        let path = self.store.path().join("server.conf");
        fs::write(&path, conf).expect("write the nats-server config");
        Some(path)
    }

    /// The client URL (`nats://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port a hub ([`NatsServer::hub`]) accepts leaf node connections on.
    pub fn leaf_port(&self) -> Option<u16> {
        self.leaf_port
    }

    /// Whether this server (hub or leaf) has a leaf node link up since it last started, going
    /// by its log: nats-server logs each link it makes and logs again when one closes.
    pub fn leaf_link_up(&self) -> bool {
        let log = self.log();
        let created = log.rfind("Leafnode connection created");
        let closed = log.rfind("Leafnode connection closed");
        match (created, closed) {
            (Some(c), Some(d)) => c > d,
            (c, _) => c.is_some(),
        }
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.store.path().join("js")
    }

    /// Stops the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts on the same port with the same store, as after a crash.
    pub fn restart(&mut self) {
        self.stop();
        self.respawn();
    }

    /// Starts again on the same port; a restart must keep its address, so a taken port fails.
    fn respawn(&mut self) {
        assert!(
            self.spawn(),
            "nats-server could not start again on port {}; log: {}",
            self.port,
            self.log()
        );
    }

    /// Stops the server, deletes its JetStream store and starts it again on the same port: every
    /// bucket, stream and object store is gone, as after losing a server's disk.
    pub fn wipe_and_restart(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(self.store_dir());
        self.respawn();
    }

    /// Connects an async-nats client.
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    /// Connects with these options (credentials, TLS, ...), for servers that need them.
    pub async fn connect_with(&self, options: async_nats::ConnectOptions) -> async_nats::Client {
        options
            .connect(self.url())
            .await
            .expect("connect to the test nats-server")
    }

    /// What the server wrote to its log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory of stub interpreters, to put first on a runner's `PATH`.
pub struct StubInterpreters {
    dir: tempfile::TempDir,
}

impl Default for StubInterpreters {
    fn default() -> Self {
        Self::new()
    }
}

impl StubInterpreters {
    /// An empty stub directory.
    pub fn new() -> Self {
        StubInterpreters {
            dir: tempfile::tempdir().expect("stub dir"),
        }
    }

    /// The directory, for `PATH`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `PATH` value with only this directory and the system's basic directories (no pyenv
    /// shims), so a runner sees exactly the versions a test chose.
    pub fn isolated_path(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.dir.path().display())
    }

    /// Writes `name` that prints `version_output` for `--version` and otherwise execs `real`
    /// with all its arguments (so it really runs code).
    pub fn add(&self, name: &str, version_output: &str, real: &Path) -> io::Result<PathBuf> {
        let body = format!(
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo '{version_output}'; exit 0; fi\nexec '{}' \"$@\"\n",
            real.display()
        );
        self.write(name, &body)
    }

    /// Writes an arbitrary shell script as `name` (for failing, hanging or shim-like stubs).
    pub fn add_script(&self, name: &str, body: &str) -> io::Result<PathBuf> {
        self.write(name, &format!("#!/bin/sh\n{body}\n"))
    }

    /// Writes `body` as an executable file through a short-lived `sh`, never through a file
    /// descriptor of this process.
    ///
    /// Why: tests run on many threads, and a thread that forks (to start nats-server or a
    /// runner) while this one holds the file open for writing gives the child a copy of that
    /// descriptor until the child execs. Executing the file in that window fails with
    /// `ETXTBSY` ("Text file busy"), which made CI flaky. A descriptor opened only in the
    /// child `sh` is never inherited by anyone.
    fn write(&self, name: &str, body: &str) -> io::Result<PathBuf> {
        use std::io::Write;
        let path = self.dir.path().join(name);
        let mut sh = Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = sh.stdin.take().expect("stdin is piped");
        stdin.write_all(body.as_bytes())?;
        drop(stdin);
        let status = sh.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "writing {} failed: sh exited with {status}",
                path.display()
            )));
        }
        Ok(path)
    }
}

/// A real Python 3 interpreter's absolute path, avoiding slow or broken shims: the first of
/// `$ATTUNE_TEST_PYTHON`, `/usr/bin/python3`, or `python3` resolved through `sys.executable`.
pub fn real_python() -> PathBuf {
    if let Some(p) = std::env::var_os("ATTUNE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        return system.to_path_buf();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for runner tests");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Runs the `attune` CLI once against `server`, for end-to-end tests that drive it as a user
/// would.
pub fn attune(server: &(impl ServerArg + ?Sized), args: &[&str]) -> std::process::Output {
    Command::new(attune_bin())
        .arg("--server")
        .arg(server.server_arg())
        .args(args)
        .output()
        .expect("run attune")
}

/// A registry process serving `packs` (a pack, or a directory of packs), with its data under
/// `work/registry`.
pub fn start_registry(
    server: &(impl ServerArg + ?Sized),
    packs: &Path,
    work: &Path,
) -> ServiceProcess {
    let data = work.join("registry");
    ServiceProcess::start(
        "registry",
        server,
        &[
            "registry",
            "serve",
            "--data-dir",
            data.to_str().expect("a UTF-8 path"),
            "--packs",
            packs.to_str().expect("a UTF-8 path"),
        ],
        None,
        work,
    )
}

/// The `attune` binary built by `cargo build` (scripts/test builds it before testing), or
/// `$ATTUNE_BIN`. Panics with the command to run when it is missing.
pub fn attune_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ATTUNE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("attune");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p attune-cli` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or `None` once `timeout` has passed (for
/// callers that report the failure themselves, like the bench).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies the directory tree `from` to `to` (files and directories only), for tests that
/// register a modified copy of a pack.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A runner process named `name` on its own host, serving `runtimes` (`--runtimes`): `stubs` is
/// its whole PATH, and it has its own cache and environment directories under `work/<name>`.
pub fn start_runner(
    server: &(impl ServerArg + ?Sized),
    name: &str,
    runtimes: &str,
    stubs: &StubInterpreters,
    work: &Path,
) -> ServiceProcess {
    let base = work.join(name);
    ServiceProcess::start(
        name,
        server,
        &[
            "runner",
            "start",
            "--name",
            name,
            "--runtimes",
            runtimes,
            "--envs-dir",
            base.join("envs").to_str().expect("a UTF-8 path"),
            "--cache-dir",
            base.join("cache").to_str().expect("a UTF-8 path"),
        ],
        Some(stubs.path().to_str().expect("a UTF-8 path")),
        work,
    )
}

/// A host whose PATH holds a `python3.X` stub for each of `versions` (`3.12.4`: `python3.12`
/// reporting `Python 3.12.4`, running the real python), plus `sh`, `bash` and `cat`, and nothing
/// else from the system.
pub fn python_host(versions: &[&str]) -> StubInterpreters {
    let stubs = StubInterpreters::new();
    for v in versions {
        let minor = v.rsplit_once('.').expect("a version with a patch part").0;
        stubs
            .add(
                &format!("python{minor}"),
                &format!("Python {v}"),
                &real_python(),
            )
            .expect("write a stub interpreter");
    }
    for tool in ["sh", "bash", "cat"] {
        let real = which(tool).unwrap_or_else(|| panic!("{tool} is needed"));
        std::os::unix::fs::symlink(real, stubs.path().join(tool)).expect("link a tool");
    }
    stubs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_starts_with_jetstream_and_restarts() {
        let mut server = NatsServer::start();
        let client = server.connect().await;
        let js = async_nats::jetstream::new(client);
        let info = js.query_account().await.expect("JetStream is enabled");
        assert_eq!(info.streams, 0);
        server.restart();
        let client = server.connect().await;
        client.flush().await.expect("reconnected after restart");
    }

    #[tokio::test]
    async fn server_started_with_config_enforces_it() {
        let server = NatsServer::start_with_config(
            "authorization { users = [ { user: ada, password: lovelace } ] }",
        );
        let refused = async_nats::connect(server.url()).await;
        assert!(refused.is_err(), "a client without credentials was let in");
        let client = server
            .connect_with(async_nats::ConnectOptions::with_user_and_password(
                "ada".into(),
                "lovelace".into(),
            ))
            .await;
        let js = async_nats::jetstream::new(client);
        js.query_account()
            .await
            .expect("JetStream is still enabled");
    }

    #[tokio::test]
    async fn a_leaf_reaches_the_hubs_jetstream_through_its_domain() {
        let mut hub = NatsServer::hub("hub");
        let leaf = NatsServer::leaf_of(&hub, "leaf");
        eventually(Duration::from_secs(10), "the leaf link", || async {
            (hub.leaf_link_up() && leaf.leaf_link_up()).then_some(())
        })
        .await;
        let js = async_nats::jetstream::new(hub.connect().await);
        js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: "b".into(),
            ..Default::default()
        })
        .await
        .expect("create a bucket on the hub");
        let through_leaf = async_nats::jetstream::with_domain(leaf.connect().await, "hub");
        let kv = eventually(Duration::from_secs(10), "the hub's bucket", || async {
            through_leaf.get_key_value("b").await.ok()
        })
        .await;
        kv.put("k", "v".into())
            .await
            .expect("a put through the leaf");
        assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

        hub.stop();
        eventually(Duration::from_secs(10), "the link to go down", || async {
            (!leaf.leaf_link_up()).then_some(())
        })
        .await;
        hub.restart();
        eventually(Duration::from_secs(10), "the link to come back", || async {
            (hub.leaf_link_up() && leaf.leaf_link_up()).then_some(())
        })
        .await;
    }

    #[test]
    fn stub_reports_chosen_version_and_runs_real_code() {
        let stubs = StubInterpreters::new();
        let py = stubs
            .add("python3.12", "Python 3.12.4", &real_python())
            .unwrap();
        let out = Command::new(&py).arg("--version").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Python 3.12.4");
        let out = Command::new(&py)
            .args(["-c", "print(6*7)"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    }
}
