//! [`RunnerConfig`]: everything a runner is told at start-up, with its defaults (docs/runner.md).

use std::path::PathBuf;
use std::time::Duration;

use attune_nats::connect::JetStreamDomain;
use attune_nats::Namespace;

/// How long one verification command may run before it counts as hung (10 s).
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one environment build step (`create_command`, `install_command`) may run (600 s).
pub const DEFAULT_ENV_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// Time between SIGTERM and SIGKILL when an execution times out.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// Cap of captured stdout and of captured stderr, each.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// How long a draining runner lets in-flight work finish before killing it.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);
/// Requests that may wait for a slot beyond those running, by default.
pub const DEFAULT_MAX_PENDING: usize = 256;
/// How often every version is verified again by default (failed ones may have been installed
/// since, passed ones uninstalled): 5 minutes.
pub const DEFAULT_REVERIFY: Duration = Duration::from_secs(300);

/// The runner's settings. Build one with [`RunnerConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Subject prefix and bucket names shared with the registry.
    pub namespace: Namespace,
    /// Runtime names or aliases this runner may serve (`ATTUNE_WORKER_RUNTIMES`); empty = all.
    pub runtimes: Vec<String>,
    /// Invocations running at once.
    pub concurrency: usize,
    /// Requests allowed to wait for a slot on top of the running ones; beyond it a request is
    /// rejected at once as "runner overloaded" (503), so nothing queues without bound.
    pub max_pending: usize,
    /// Where per-pack environments live; may be shared by runners of one host (host lock).
    pub envs_dir: PathBuf,
    /// This runner's private cache (unpacked packs, parameter files); not shared.
    pub cache_dir: PathBuf,
    /// The runner id in heartbeats and replies (`<host>-<pid>` by default).
    pub name: String,
    /// The host name reported in heartbeats and endpoint metadata.
    pub host: String,
    /// `PATH` used to resolve bare binary names at verification and given to executions; a
    /// field rather than the process env so each runner (and each test) can have its own.
    pub path: String,
    /// Limit of one verification command.
    pub verify_timeout: Duration,
    /// Limit of one environment build step; past it the step is killed with everything it
    /// started and that environment (only) fails.
    pub env_build_timeout: Duration,
    /// Time between SIGTERM and SIGKILL of a timed-out process group.
    pub kill_grace: Duration,
    /// Cap of captured stdout and of stderr, in bytes, each.
    pub output_cap: usize,
    /// How long draining waits for in-flight work.
    pub drain_grace: Duration,
    /// How often every version this runner may serve is verified again (`None`: never; a
    /// change of its definition and `attune runtime verify` still verify it).
    pub reverify: Option<Duration>,
    /// Warm interpreters: on or off, pool count, size, memory and recycling.
    pub warm: crate::warm::Settings,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Record every execution in `ATTUNE_EXECUTIONS` and stream its output live (the default).
    pub record: bool,
    /// Where the registry's JetStream resources are: the account's own JetStream, or the hub's
    /// domain for a runner on a leaf node whose local server has its own (`--js-domain`).
    pub jetstream_domain: JetStreamDomain,
}

impl RunnerConfig {
    /// A config with the defaults: all runtimes, concurrency = number of CPUs, the process
    /// `PATH`, id `<host>-<pid>`.
    pub fn new(envs_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        let host = hostname();
        let concurrency = std::thread::available_parallelism().map_or(4, |n| n.get());
        RunnerConfig {
            namespace: Namespace::default(),
            runtimes: Vec::new(),
            concurrency,
            max_pending: DEFAULT_MAX_PENDING,
            envs_dir: envs_dir.into(),
            cache_dir: cache_dir.into(),
            name: format!("{host}-{}", std::process::id()),
            host,
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
            env_build_timeout: DEFAULT_ENV_BUILD_TIMEOUT,
            kill_grace: DEFAULT_KILL_GRACE,
            output_cap: DEFAULT_OUTPUT_CAP,
            drain_grace: DEFAULT_DRAIN_GRACE,
            reverify: Some(DEFAULT_REVERIFY),
            warm: crate::warm::Settings::default(),
            metrics_addr: None,
            record: true,
            jetstream_domain: JetStreamDomain::local(),
        }
    }
}

/// Splits a comma list (`python, sh`) into names, dropping blanks.
pub fn parse_runtime_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The host name, or `localhost` when the system will not say.
pub fn hostname() -> String {
    let name = nix::unistd::gethostname()
        .map(|n| n.to_string_lossy().trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_list_is_comma_separated_and_trimmed() {
        assert_eq!(
            parse_runtime_list(" python, sh ,,node"),
            ["python", "sh", "node"]
        );
        assert!(parse_runtime_list("").is_empty());
    }

    #[test]
    fn default_id_is_host_and_pid() {
        let c = RunnerConfig::new("/e", "/c");
        assert_eq!(c.name, format!("{}-{}", c.host, std::process::id()));
        assert!(c.concurrency >= 1);
    }
}
