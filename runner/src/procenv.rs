//! The environment of an action's process: minimal, built from scratch, never inherited.
//!
//! A process gets `PATH`, `HOME`, `LANG`, `LC_ALL` and `TMPDIR` from the runner ([`base_env`]),
//! then its runtime's `env_vars` (set, prepend or append; [`apply_env_vars`]), then the
//! `ATTUNE_*` variables that say what runs ([`process_env`]). Names starting `ATTUNE_` are
//! reserved: a runtime cannot set them.

use attune_nats::model::{EnvOp, EnvVar, ExecutionConfig};
use attune_nats::VersionKey;

use crate::template::Vars;

/// The minimal environment of every execution and verification, from this process's own.
pub fn base_env(path: &str) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), path.to_string())];
    for key in ["HOME", "LANG", "LC_ALL", "TMPDIR"] {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_string(), v));
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), "/".into()));
    }
    env
}

/// The arguments of a process of a runtime version with `config`: its interpreter arguments
/// (templates rendered with `vars`), then `script`. Actions and sensors start alike.
pub fn command_args(
    config: &ExecutionConfig,
    vars: &Vars,
    script: std::path::PathBuf,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = config
        .interpreter
        .args
        .iter()
        .map(|a| vars.render(a).into())
        .collect();
    args.push(script.into_os_string());
    args
}

/// The complete environment of one execution of `action` (ref `action`, pack `pack`) with id
/// `id` on `key`: the base, the runtime's `env_vars`, and the `ATTUNE_*` variables.
pub fn process_env(
    base: &[(String, String)],
    config: &ExecutionConfig,
    vars: &Vars,
    id: &str,
    action: &str,
    pack: &str,
    key: &VersionKey,
) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    apply_env_vars(&mut env, &config.env_vars, vars);
    for (k, v) in [
        ("ATTUNE_EXEC_ID", id),
        ("ATTUNE_ACTION", action),
        ("ATTUNE_PACK_REF", pack),
        ("ATTUNE_RUNTIME", key.runtime.as_str()),
        ("ATTUNE_RUNTIME_VERSION", key.version.as_str()),
    ] {
        set_env(&mut env, k, v.to_string());
    }
    env
}

/// Sets `key` to `value` in `env`, replacing an earlier value.
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_string(), value)),
    }
}

/// Applies a runtime's `env_vars` (set / prepend / append) on top of `env`. Names starting
/// `ATTUNE_` are reserved and skipped.
pub fn apply_env_vars(
    env: &mut Vec<(String, String)>,
    vars: &std::collections::BTreeMap<String, EnvVar>,
    templates: &Vars,
) {
    for (name, var) in vars {
        if name.starts_with("ATTUNE_") {
            continue;
        }
        let (value, op, sep) = match var {
            EnvVar::Value(v) => (templates.render(v), EnvOp::Set, ":".to_string()),
            EnvVar::Op {
                value,
                operation,
                separator,
            } => (
                templates.render(value),
                *operation,
                separator.clone().unwrap_or_else(|| ":".into()),
            ),
        };
        let old = env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let new = match (op, old) {
            (EnvOp::Prepend, Some(old)) if !old.is_empty() => format!("{value}{sep}{old}"),
            (EnvOp::Append, Some(old)) if !old.is_empty() => format!("{old}{sep}{value}"),
            _ => value,
        };
        set_env(env, name, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn env_vars_set_prepend_append_and_skip_reserved() {
        let mut env = vec![("PATH".to_string(), "/bin".to_string())];
        let vars: BTreeMap<String, EnvVar> = serde_json::from_value(serde_json::json!({
            "PATH": {"value": "{pack_dir}/bin", "operation": "prepend"},
            "PYTHONPATH": {"value": "{pack_dir}/lib", "operation": "append", "separator": ":"},
            "MODE": "fast",
            "ATTUNE_ACTION": "spoofed"
        }))
        .unwrap();
        let t = Vars::new(Path::new("/p"), Path::new("/e"), Path::new("/i"), None);
        apply_env_vars(&mut env, &vars, &t);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/p/bin:/bin"));
        assert_eq!(get("PYTHONPATH"), Some("/p/lib"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("ATTUNE_ACTION"), None);
    }

    #[test]
    fn the_attune_variables_say_what_runs_and_cannot_be_spoofed() {
        let config: ExecutionConfig = serde_json::from_value(serde_json::json!({
            "interpreter": {"binary": "sh"},
            "env_vars": {"ATTUNE_EXEC_ID": "spoofed", "MODE": "fast"}
        }))
        .unwrap();
        let t = Vars::new(Path::new("/p"), Path::new("/e"), Path::new("/i"), None);
        let base = vec![("PATH".to_string(), "/bin".to_string())];
        let env = process_env(
            &base,
            &config,
            &t,
            "id-1",
            "p.a",
            "p",
            &VersionKey::new("shell", "default"),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ATTUNE_EXEC_ID"), Some("id-1"));
        assert_eq!(get("ATTUNE_ACTION"), Some("p.a"));
        assert_eq!(get("ATTUNE_RUNTIME_VERSION"), Some("default"));
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("PATH"), Some("/bin"));
    }
}
