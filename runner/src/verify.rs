//! Self-verification: which versions of which runtimes this host can really execute (docs/runner.md).
//!
//! Every version of every runtime the runner may serve is verified in parallel. A version's
//! verification commands run in priority order (lower first), each contained and limited by a
//! timeout ([`crate::contain::run_bounded`]) so a hung binary cannot stall start-up. A command
//! passes when all of these hold:
//! - its exit code is the expected one (127, a pyenv-style shim for a version that is not
//!   installed, never passes unless asked for);
//! - its pattern matches stdout and stderr together;
//! - the version it reports *is* the registered version: the detected version (the pattern's
//!   first capture group, else the first version-looking token of the output, mapped to semver by
//!   [`parse_reported`], pre-releases kept) satisfies the tilde of the registered one
//!   ([`reported_serves`]: `3.12` accepts 3.12.x, not 3.11.7). Only the implicit `default` version
//!   of a version-less runtime has nothing to compare.
//!
//! Without commands, `<binary> --version` is the command, held to the same rules: a binary that
//! answers but reports another version does not verify. The first command that passes pins the
//! absolute path of its binary: that path is the `{interpreter}` of every execution, and `PATH`
//! is never consulted for it again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_nats::model::{RuntimeVersion, VerificationCommand};
use attune_nats::version::{parse_reported, reported_serves, IMPLICIT_VERSION};
use attune_nats::VersionKey;
use regex::Regex;
use tokio::process::Command;
use tracing::{debug, info, instrument, warn};

use crate::contain;

/// Output of one verification command kept (stdout and stderr, each) for matching and errors.
const OUTPUT_CAP: usize = 64 * 1024;

/// The exit code shells and pyenv-style shims use for "command not found / version not installed".
const EXIT_NOT_FOUND: i32 = 127;

/// A version this runner verified and will serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The runtime (canonical name) and registered version name (`3.12`, or `default`).
    pub key: VersionKey,
    /// What the binary reported, as semver (`3.12.1`, `3.13.0-rc1`), if its output held a
    /// version. Always present for a versioned runtime: it is what proved the version.
    pub detected_version: Option<String>,
    /// Absolute path of the binary that passed, as found on `PATH` (symlinks not followed).
    pub binary: PathBuf,
}

/// Why a version is not available on this runner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{runtime} {version} is not available: {reason}")]
pub struct Unavailable {
    /// Runtime name.
    pub runtime: String,
    /// Version name.
    pub version: String,
    /// Every command tried and why it failed, joined.
    pub reason: String,
}

/// Finds a bare binary name on `path` (an absolute or relative path with a `/` is used as is,
/// made absolute). Returns the path of the file found, without resolving symlinks, so a stub or a
/// versioned symlink stays what it is.
pub fn resolve_binary(binary: &str, path: &str) -> Option<PathBuf> {
    if binary.contains('/') {
        let p = Path::new(binary);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(p)
        };
        return is_executable(&abs).then_some(abs);
    }
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(binary))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first version-looking token in a binary's output, as semver: `Python 3.12.1` → `3.12.1`,
/// `Python 3.13.0rc1` → `3.13.0-rc1`, `GNU bash, version 5.2.15(1)-release` → `5.2.15`.
pub fn detect_version(output: &str) -> Option<String> {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"\d+\.\d+(?:\.\d+)?(?:[-.]?[A-Za-z]+\.?\d*)*(?:\+[0-9A-Za-z.-]*)?")
            .expect("static regex")
    });
    re.find_iter(output)
        .find_map(|m| reported(m.as_str()).or_else(|| reported(numeric_prefix(m.as_str()))))
}

/// The numeric start of a token (`5.2.15` of `5.2.15xyz`), for a token whose suffix is not one.
fn numeric_prefix(token: &str) -> &str {
    let end = token
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(token.len());
    token[..end].trim_end_matches('.')
}

/// `text` as a semver version string, if it is a version an interpreter could report.
fn reported(text: &str) -> Option<String> {
    parse_reported(text.trim()).ok().map(|v| v.to_string())
}

/// The version a command's output reports: the pattern's first capture group when the pattern
/// has one (it must then hold a version), else the first version-looking token.
fn detected_in(pattern: Option<&Regex>, output: &str) -> Result<Option<String>, String> {
    if let Some(captured) = pattern
        .and_then(|re| re.captures(output))
        .and_then(|c| c.get(1))
    {
        let text = captured.as_str();
        return reported(text)
            .map(Some)
            .ok_or_else(|| format!("the pattern captured {text:?}, which is not a version"));
    }
    Ok(detect_version(output))
}

/// The commands that verify `version`, in the order they are tried.
pub fn commands_for(version: &RuntimeVersion) -> Vec<VerificationCommand> {
    let mut commands = version.distributions.verification.commands.clone();
    // A stable sort keeps declaration order among equal priorities.
    commands.sort_by_key(|c| c.priority);
    if commands.is_empty() {
        if let Some(cfg) = &version.execution_config {
            commands.push(VerificationCommand {
                binary: cfg.interpreter.binary.clone(),
                args: vec!["--version".into()],
                exit_code: 0,
                pattern: None,
                priority: 0,
            });
        }
    }
    commands
}

/// Verifies one version: its commands in priority order until one passes.
#[instrument(skip_all, fields(runtime = %runtime, version = %version.version))]
pub async fn verify_version(
    runtime: &str,
    version: &RuntimeVersion,
    env: &[(String, String)],
    path: &str,
    timeout: Duration,
) -> Result<Verified, Unavailable> {
    let unavailable = |reason: String| Unavailable {
        runtime: runtime.to_string(),
        version: version.version.clone(),
        reason,
    };
    if version.execution_config.is_none() {
        return Err(unavailable("the version has no execution_config".into()));
    }
    let commands = commands_for(version);
    let mut failures = Vec::new();
    for command in &commands {
        match run_check(command, &version.version, env, path, timeout).await {
            Ok((binary, detected_version)) => {
                info!(binary = %binary.display(), detected = ?detected_version, "verified");
                return Ok(Verified {
                    key: VersionKey::new(runtime, &version.version),
                    detected_version,
                    binary,
                });
            }
            Err(why) => {
                debug!(binary = %command.binary, %why, "verification command failed");
                failures.push(format!("{}: {why}", command.binary));
            }
        }
    }
    let reason = if failures.is_empty() {
        "no verification command and no interpreter binary".to_string()
    } else {
        failures.join("; ")
    };
    warn!(%reason, "not available");
    Err(unavailable(reason))
}

/// Runs one verification command for the registered version `registered`; on success the
/// pinned binary and the version it reported.
async fn run_check(
    command: &VerificationCommand,
    registered: &str,
    env: &[(String, String)],
    path: &str,
    timeout: Duration,
) -> Result<(PathBuf, Option<String>), String> {
    let binary = resolve_binary(&command.binary, path)
        .ok_or_else(|| format!("not found on PATH ({path})"))?;
    let pattern = match &command.pattern {
        Some(p) => Some(Regex::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}"))?),
        None => None,
    };
    let mut cmd = Command::new(&binary);
    cmd.args(&command.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    // Contained and bounded: a hung binary (and whatever it started) is killed at the timeout.
    let out = match contain::run_bounded(cmd, timeout, OUTPUT_CAP).await {
        Ok(out) => out,
        Err(contain::CommandError::TimedOut { .. }) => {
            return Err(format!("hung: no exit within {timeout:?}"))
        }
        Err(e) => return Err(format!("cannot run: {e}")),
    };
    let output = out.output;
    let code = out.status.code();
    if code == Some(EXIT_NOT_FOUND) && command.exit_code != EXIT_NOT_FOUND {
        return Err(format!(
            "exit 127, a shim without this version installed or a missing command: {}",
            output.trim()
        ));
    }
    if code != Some(command.exit_code) {
        return Err(format!(
            "exit {} (expected {}): {}",
            code.map_or_else(|| "by signal".into(), |c| c.to_string()),
            command.exit_code,
            output.trim()
        ));
    }
    if let Some(re) = &pattern {
        if !re.is_match(&output) {
            return Err(format!(
                "output {:?} does not match {:?}",
                output.trim(),
                re.as_str()
            ));
        }
    }
    let detected = detected_in(pattern.as_ref(), &output)?;
    proves(registered, detected.as_deref(), &output)?;
    Ok((binary, detected))
}

/// Checks that the detected version is the registered one (see the module documentation).
fn proves(registered: &str, detected: Option<&str>, output: &str) -> Result<(), String> {
    if registered == IMPLICIT_VERSION {
        return Ok(());
    }
    let Some(detected) = detected else {
        return Err(format!(
            "output {:?} holds no version to compare with {registered}",
            output.trim()
        ));
    };
    let parsed = parse_reported(detected).map_err(|e| e.to_string())?;
    if reported_serves(registered, &parsed) {
        Ok(())
    } else {
        Err(format!(
            "it reports {detected}, which is not {registered} (a {registered} interpreter \
             reports {registered}.x)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_first_dotted_version() {
        assert_eq!(detect_version("Python 3.12.1\n").as_deref(), Some("3.12.1"));
        assert_eq!(detect_version("v20.11.0").as_deref(), Some("20.11.0"));
        assert_eq!(detect_version("go1.22 linux").as_deref(), Some("1.22.0"));
        assert_eq!(
            detect_version("Python 3.13.0rc1\n").as_deref(),
            Some("3.13.0-rc1")
        );
        assert_eq!(
            detect_version("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)").as_deref(),
            Some("5.2.15")
        );
        assert_eq!(detect_version("no digits"), None);
    }

    #[test]
    fn the_pattern_capture_group_is_the_detected_version() {
        let re = Regex::new(r"Python (3\.12\.\S+)").unwrap();
        assert_eq!(
            detected_in(Some(&re), "build 2.7.1\nPython 3.12.0rc2\n")
                .unwrap()
                .as_deref(),
            Some("3.12.0-rc2")
        );
        // Without a group, the first version in the output.
        let plain = Regex::new(r"Python").unwrap();
        assert_eq!(
            detected_in(Some(&plain), "build 2.7.1\nPython 3.12.0\n")
                .unwrap()
                .as_deref(),
            Some("2.7.1")
        );
        let bad = Regex::new(r"Python (\S+)").unwrap();
        assert!(detected_in(Some(&bad), "Python banana").is_err());
    }

    #[test]
    fn only_the_registered_version_proves_itself() {
        assert!(proves("3.12", Some("3.12.4"), "").is_ok());
        assert!(proves("3.13", Some("3.13.0-rc1"), "").is_ok());
        let e = proves("3.12", Some("3.11.7"), "").unwrap_err();
        assert!(e.contains("reports 3.11.7, which is not 3.12"), "{e}");
        assert!(proves("3.13", Some("3.11.7"), "").is_err());
        assert!(proves("3.12", None, "ok")
            .unwrap_err()
            .contains("no version"));
        assert!(proves("default", None, "attune-shell-ok").is_ok());
    }

    #[test]
    fn resolves_on_the_given_path_only() {
        assert_eq!(resolve_binary("sh", "/bin"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve_binary("sh", "/nonexistent"), None);
        assert_eq!(
            resolve_binary("/bin/sh", ""),
            Some(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn commands_run_in_priority_order_with_version_fallback() {
        let v: RuntimeVersion = serde_json::from_value(serde_json::json!({
            "version": "3.12",
            "distributions": {"verification": {"commands": [
                {"binary": "b", "priority": 2}, {"binary": "a", "priority": 1}]}},
            "execution_config": {"interpreter": {"binary": "python3.12"}}
        }))
        .unwrap();
        let names: Vec<_> = commands_for(&v).into_iter().map(|c| c.binary).collect();
        assert_eq!(names, ["a", "b"]);
        let bare: RuntimeVersion = serde_json::from_value(serde_json::json!({
            "version": "3.12", "execution_config": {"interpreter": {"binary": "python3.12"}}
        }))
        .unwrap();
        let fallback = commands_for(&bare);
        assert_eq!(fallback[0].binary, "python3.12");
        assert_eq!(fallback[0].args, ["--version"]);
    }
}
