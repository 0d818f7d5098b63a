//! Pack loading, rule by rule: each test builds a small pack in a temp dir and checks the exact
//! `file:line: message` a user would see.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

/// The packs shipped in the repository.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packs")
        .join(name)
}

fn core_runtimes() -> Vec<Runtime> {
    load_pack(&shipped("core"), &[])
        .expect("core loads")
        .runtimes
}

/// Writes `files` (path, content) under a fresh temp dir; scripts named in them get created by the
/// caller or listed too.
fn pack(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    dir
}

const PACK_YAML: (&str, &str) = ("pack.yaml", "ref: demo\nversion: 1.0.0\n");
const SCRIPT: (&str, &str) = ("actions/run.py", "print(1)\n");

/// Loads a pack that must be rejected and returns its messages without the temp dir prefix.
fn rejected(dir: &Path, registered: &[Runtime]) -> Vec<String> {
    let err = load_pack(dir, registered).expect_err("pack should be rejected");
    let prefix = format!("{}/", dir.display());
    err.problems
        .iter()
        .map(|p| p.to_string().replacen(&prefix, "", 1))
        .collect()
}

fn action(body: &str) -> tempfile::TempDir {
    pack(&[PACK_YAML, SCRIPT, ("actions/run.yaml", body)])
}

#[test]
fn loads_the_shipped_core_pack() {
    let core = load_pack(&shipped("core"), &[]).unwrap();
    assert_eq!(core.meta.reference, "core");
    let mut names: Vec<&str> = core.runtimes.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["node", "python", "shell"]);
    let python = core.runtimes.iter().find(|r| r.name == "python").unwrap();
    let versions: Vec<&str> = python.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["3.11", "3.12", "3.13"]);
    assert!(python.version("3.12").unwrap().is_default);
    assert!(python.versions.iter().all(|v| v.execution_config.is_some()));
    let shell = core.runtimes.iter().find(|r| r.name == "shell").unwrap();
    assert!(shell.is_versionless());
    assert_eq!(shell.versions[0].version, "default");
    let mut actions: Vec<&str> = core.actions.iter().map(|a| a.reference.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "core.echo",
            "core.node_echo",
            "core.noop",
            "core.py_echo",
            "core.py_info"
        ]
    );
    let info = core
        .actions
        .iter()
        .find(|a| a.reference == "core.py_info")
        .unwrap();
    assert_eq!(info.runtime_version.as_deref(), Some(">=3.12"));
    assert!(core.warnings.is_empty(), "{:?}", core.warnings);
}

#[test]
fn loads_the_shipped_examples_pack_on_top_of_core() {
    let examples = load_pack(&shipped("examples"), &core_runtimes()).unwrap();
    assert!(examples.runtimes.is_empty());
    let legacy = examples
        .actions
        .iter()
        .find(|a| a.name == "legacy_report")
        .unwrap();
    assert_eq!(legacy.runtime, "python", "alias python3 resolves to python");
    assert_eq!(legacy.runtime_version.as_deref(), Some("~3.11"));
    let notify = examples
        .actions
        .iter()
        .find(|a| a.name == "notify")
        .unwrap();
    assert_eq!(notify.runtime, "shell");
    assert_eq!(notify.secret_parameters(), ["api_token"]);
    assert_eq!(examples.sensors.len(), 1);
    assert_eq!(examples.sensors[0].triggers, ["tick"]);
    assert_eq!(examples.meta.rules, ["examples.stats_on_tick"]);
    let stats = crate::rule::CompiledRule::new(examples.rules[0].clone()).unwrap();
    let tick = serde_json::json!({"at": 1764800000.5});
    assert!(stats.matches(&tick));
    assert_eq!(
        serde_json::Value::Object(stats.parameters(&tick).unwrap()),
        serde_json::json!({"numbers": [1764800000.5]})
    );
    assert!(examples.warnings.is_empty(), "{:?}", examples.warnings);
}

#[test]
fn examples_pack_needs_core_runtimes() {
    let msgs = rejected(&shipped("examples"), &[]);
    assert!(
        msgs.iter().all(|m| m.contains("unknown runtime")),
        "{msgs:?}"
    );
    assert!(msgs
        .iter()
        .any(|m| m.contains("register the core pack first")));
}

#[test]
fn discover_puts_core_first() {
    let found = discover(&[shipped("")]).unwrap();
    let names: Vec<String> = found
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "core");
    assert!(names.contains(&"examples".to_string()));
}

#[test]
fn discover_rejects_a_directory_without_packs() {
    let empty = tempfile::tempdir().unwrap();
    let err = discover(&[empty.path().to_path_buf()]).unwrap_err();
    assert!(err.message.contains("no pack.yaml"), "{err}");
}

#[test]
fn rejects_missing_pack_yaml() {
    let dir = pack(&[SCRIPT]);
    assert_eq!(
        rejected(dir.path(), &[]),
        ["pack.yaml: missing: every pack needs a pack.yaml with ref and version"]
    );
}

#[test]
fn rejects_malformed_yaml_with_its_line() {
    let dir = action("runner_type: python\nentry_point: run.py\nparameters: [unclosed\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].starts_with("actions/run.yaml:"), "{msgs:?}");
    assert!(msgs[0].contains("malformed YAML"), "{msgs:?}");
}

#[test]
fn rejects_unknown_runtime() {
    let dir = action("name: run\nrunner_type: cobol\nentry_point: run.py\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("actions/run.yaml:2: unknown runtime \"cobol\" (known: bash, node, nodejs, python, python3, sh, shell)"),
        "{msgs:?}"
    );
}

#[test]
fn accepts_every_alias() {
    for alias in ["python", "python3", "node", "nodejs", "shell", "bash", "sh"] {
        let dir = action(&format!(
            "name: run\nrunner_type: {alias}\nentry_point: run.py\n"
        ));
        let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
        assert!(["python", "node", "shell"].contains(&loaded.actions[0].runtime.as_str()));
    }
}

#[test]
fn rejects_invalid_constraint_with_line() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nruntime_version: \">=banana\"\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with(
            "actions/run.yaml:4: runtime_version \">=banana\" is not a valid constraint: at column 3"
        ),
        "{msgs:?}"
    );
}

#[test]
fn a_bad_constraint_is_answered_with_the_spelling_meant_and_the_accepted_forms() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nruntime_version: \"=>3.12\"\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1);
    for part in [
        "actions/run.yaml:4: runtime_version \"=>3.12\"",
        "(did you mean \">=3.12\"?)",
        "accepted forms: >=3.12 <4",
        "~=3.11, ==3.12.*, !=3.12.1",
        "the table is in docs/pack-format.md",
    ] {
        assert!(msgs[0].contains(part), "{part:?} missing from {msgs:?}");
    }
}

#[test]
fn npm_ranges_and_pep_440_specifiers_load() {
    for constraint in [
        ">=3.11 <4",
        "~=3.11,!=3.12.1",
        "3.11 - 3.12",
        "==3.12.*",
        "3.x || ",
    ] {
        let dir = action(&format!(
            "name: run\nrunner_type: python\nentry_point: run.py\nruntime_version: \"{constraint}\"\n"
        ));
        let loaded = load_pack(dir.path(), &core_runtimes())
            .unwrap_or_else(|e| panic!("{constraint:?} was refused: {e}"));
        assert_eq!(
            loaded.actions[0].runtime_version.as_deref(),
            Some(constraint)
        );
    }
}

#[test]
fn unquoted_numeric_constraint_keeps_its_text() {
    let dir =
        action("name: run\nrunner_type: python\nentry_point: run.py\nruntime_version: 3.10\n");
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.actions[0].runtime_version.as_deref(), Some("3.10"));
    // 3.10 is not registered in core: a warning, not an error.
    assert!(
        loaded.warnings[0].message.contains("matches none"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn rejects_constraint_on_versionless_runtime() {
    let dir =
        action("name: run\nrunner_type: shell\nentry_point: run.py\nruntime_version: \">=5\"\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:4: runtime \"shell\" has no versions"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_entry_point_escaping_pack() {
    let dir = action("name: run\nrunner_type: python\nentry_point: ../../etc/passwd\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["actions/run.yaml:3: entry_point \"../../etc/passwd\" escapes the pack (\"..\" is not allowed)"]
    );
}

#[test]
fn rejects_absolute_entry_point() {
    let dir = action("name: run\nrunner_type: python\nentry_point: /etc/passwd\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(msgs[0].contains("is absolute"), "{msgs:?}");
}

#[test]
fn rejects_missing_entry_point() {
    let dir = action("name: run\nrunner_type: python\nentry_point: nope.py\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:3: entry_point \"nope.py\" does not exist"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_entry_point_symlink_out_of_pack() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("evil.py"), "print('x')").unwrap();
    let dir = action("name: run\nrunner_type: python\nentry_point: link.py\n");
    std::os::unix::fs::symlink(
        outside.path().join("evil.py"),
        dir.path().join("actions/link.py"),
    )
    .unwrap();
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].contains("escapes the pack through a symlink"),
        "{msgs:?}"
    );
}

#[test]
fn accepts_entry_point_in_subdirectory() {
    let dir = pack(&[
        PACK_YAML,
        ("actions/lib/run.py", "print(1)"),
        (
            "actions/run.yaml",
            "name: run\nrunner_type: python\nentry_point: lib/run.py\n",
        ),
    ]);
    assert!(load_pack(dir.path(), &core_runtimes()).is_ok());
}

#[test]
fn rejects_duplicate_action_refs() {
    let dir = pack(&[
        PACK_YAML,
        SCRIPT,
        (
            "actions/a.yaml",
            "ref: demo.run\nrunner_type: python\nentry_point: run.py\n",
        ),
        (
            "actions/b.yaml",
            "name: run\nrunner_type: python\nentry_point: run.py\n",
        ),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("actions/b.yaml:1: duplicate action ref \"demo.run\" (also defined in"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_ref_of_another_pack() {
    let dir = action("ref: other.run\nrunner_type: python\nentry_point: run.py\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["actions/run.yaml:1: ref \"other.run\" must be \"demo.<name>\""]
    );
}

#[test]
fn rejects_missing_name_and_runner_type() {
    let dir = action("entry_point: run.py\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("needs a ref or a name")));
    assert!(msgs.iter().any(|m| m.contains("runner_type is missing")));
}

#[test]
fn flat_parameters_become_json_schema() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  n:\n    type: integer\n    required: true\n    default: 2\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    let schema = &loaded.actions[0].parameters;
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["required"], serde_json::json!(["n"]));
    assert_eq!(schema["properties"]["n"]["default"], 2);
}

#[test]
fn full_json_schema_parameters_are_accepted() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  type: object\n  properties:\n    n: { type: integer }\n  required: [n]\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(
        loaded.actions[0].parameters["required"],
        serde_json::json!(["n"])
    );
}

#[test]
fn rejects_invalid_parameter_schema_at_the_parameter() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  ok:\n    type: string\n  n:\n    type: integr\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("actions/run.yaml:7: invalid parameter schema"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_default_outside_enum() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  level:\n    type: string\n    enum: [a, b]\n    default: c\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0]
            .starts_with("actions/run.yaml:5: parameter \"level\": default \"c\" does not match"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_bad_enum_values_with_line() {
    let dir = action("name: run\nrunner_type: python\nentry_point: run.py\noutput_format: xml\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:4: output_format: unknown variant `xml`"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_non_positive_timeout() {
    let dir = action("name: run\nrunner_type: python\nentry_point: run.py\ntimeout_seconds: 0\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:4: timeout_seconds must be a positive"),
        "{msgs:?}"
    );
}

#[test]
fn retry_policy_is_loaded() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nretry:\n  max_attempts: 3\n  delay_seconds: 0.5\n  backoff: exponential\n  on: [failed]\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    let retry = loaded.actions[0].retry.clone().expect("retry loaded");
    assert_eq!(retry.max_attempts, 3);
    assert_eq!(retry.backoff, attune_nats::jobs::Backoff::Exponential);
    assert_eq!(retry.on, vec![attune_nats::Status::Failed]);
}

#[test]
fn rejects_bad_retry_values_at_their_line() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nretry:\n  max_attempts: 0\n  delay_seconds: -2\n  on: [rejected]\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("actions/run.yaml:5: max_attempts must be between 1 and 100")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("actions/run.yaml:6: delay_seconds must be between 0")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("actions/run.yaml:7: retry on \"rejected\"")),
        "{msgs:?}"
    );
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nretry:\n  max_attempts: 2\n  backoff: linear\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:6: retry.backoff: unknown variant `linear`"),
        "{msgs:?}"
    );
}

#[test]
fn concurrency_is_loaded_and_bad_values_are_reported_at_their_line() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nconcurrency:\n  limit: 2\n  policy: reject\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    let c = loaded.actions[0].concurrency.expect("concurrency loaded");
    assert_eq!(c.limit, 2);
    assert_eq!(
        c.policy,
        attune_nats::concurrency::ConcurrencyPolicy::Reject
    );
    let dir =
        action("name: run\nrunner_type: python\nentry_point: run.py\nconcurrency:\n  limit: 0\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:5: limit must be between 1 and 1000, not 0"),
        "{msgs:?}"
    );
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nconcurrency:\n  limit: 2\n  policy: queue\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml:6: concurrency.policy: unknown variant `queue`"),
        "{msgs:?}"
    );
}

#[test]
fn unknown_fields_are_warnings() {
    let dir =
        action("name: run\nrunner_type: python\nentry_point: run.py\nruntime_versoin: \">=3\"\n");
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0]
        .to_string()
        .contains("run.yaml:4: unknown field \"runtime_versoin\""));
}

// ---- runtimes ----

fn runtime_pack(runtime: &str) -> tempfile::TempDir {
    pack(&[PACK_YAML, ("runtimes/ruby.yaml", runtime)])
}

const VERSION_CFG: &str = "    execution_config:\n      interpreter: { binary: ruby }\n";

#[test]
fn a_pack_can_define_its_own_runtime() {
    let dir = pack(&[
        PACK_YAML,
        SCRIPT,
        (
            "runtimes/ruby.yaml",
            &format!("ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.3\"\n    is_default: true\n{VERSION_CFG}"),
        ),
        ("actions/run.yaml", "name: run\nrunner_type: ruby\nentry_point: run.py\nruntime_version: \"~3.3\"\n"),
    ]);
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.runtimes[0].pack, "demo");
    assert_eq!(loaded.actions[0].runtime, "ruby");
}

#[test]
fn rejects_two_defaults() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.2\"\n    is_default: true\n{VERSION_CFG}  - version: \"3.3\"\n    is_default: true\n{VERSION_CFG}"
    ));
    let msgs = rejected(dir.path(), &[]);
    assert_eq!(
        msgs,
        ["runtimes/ruby.yaml:9: two defaults in runtime \"ruby\": 3.2 and 3.3 (at most one version may have is_default: true)"]
    );
}

#[test]
fn rejects_invalid_version_string() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"three\"\n{VERSION_CFG}"
    ));
    let msgs = rejected(dir.path(), &[]);
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:4: invalid version string: \"three\""),
        "{msgs:?}"
    );
}

#[test]
fn unquoted_version_keeps_trailing_zero() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: 3.10\n{VERSION_CFG}"
    ));
    let loaded = load_pack(dir.path(), &[]).unwrap();
    assert_eq!(loaded.runtimes[0].versions[0].version, "3.10");
}

#[test]
fn unquoted_version_in_flow_style_keeps_trailing_zero() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\nversions:\n  - { version: 3.10, is_default: true, execution_config: { interpreter: { binary: ruby } } }\n  - {version: 3.20}\n",
    );
    let msgs = rejected(dir.path(), &[]);
    // The second entry has no config; what matters is how both versions were read.
    assert!(
        msgs.iter()
            .all(|m| !m.contains("\"3.1\"") && !m.contains("\"3.2\"")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("version \"3.20\" has no execution_config")),
        "{msgs:?}"
    );
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\nversions: [ { version: 3.10, execution_config: { interpreter: { binary: ruby } } } ]\n",
    );
    let loaded = load_pack(dir.path(), &[]).unwrap();
    assert_eq!(loaded.runtimes[0].versions[0].version, "3.10");
    // An action's constraint written as a number in a flow mapping is kept as written too.
    assert_eq!(
        crate::pack::yaml::scalar_as_written(
            "{runtime_version: 3.10}",
            &[crate::pack::locate::Seg::key("runtime_version")]
        )
        .as_deref(),
        Some("3.10")
    );
}

#[test]
fn rejects_one_version_written_two_ways() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.3\"\n{VERSION_CFG}  - version: \"3.3.0\"\n{VERSION_CFG}"
    ));
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with(
            "runtimes/ruby.yaml:7: version \"3.3.0\" is the same version as \"3.3\" (versions[0])"
        ),
        "{msgs:?}"
    );
}

#[test]
fn rejects_duplicate_versions() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.3\"\n{VERSION_CFG}  - version: \"3.3\"\n{VERSION_CFG}"
    ));
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:7: version \"3.3\" is declared twice"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_version_without_its_own_config() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\nexecution_config:\n  interpreter: { binary: ruby }\nversions:\n  - version: \"3.3\"\n",
    );
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:6: version \"3.3\" has no execution_config"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_invalid_verification_pattern() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\ndistributions:\n  verification:\n    commands:\n      - binary: ruby\n        pattern: 'ruby ('\nexecution_config:\n  interpreter: { binary: ruby }\n",
    );
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:7: invalid verification pattern"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_invalid_verification_pattern_of_a_version() {
    let dir = runtime_pack(&format!(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.3\"\n    distributions:\n      verification:\n        commands:\n          - binary: ruby\n            pattern: 'ruby ('\n{VERSION_CFG}"
    ));
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:9: invalid verification pattern"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_dependency_manifest_outside_the_pack() {
    for manifest in ["../Gemfile", "/etc/Gemfile"] {
        let dir = runtime_pack(&format!(
            "ref: demo.ruby\nname: ruby\nexecution_config:\n  interpreter: {{ binary: ruby }}\n  dependencies:\n    manifest_file: {manifest}\n    install_command: [bundle, install]\n"
        ));
        let msgs = rejected(dir.path(), &[]);
        assert_eq!(
            msgs,
            [format!(
                "runtimes/ruby.yaml:6: manifest_file \"{manifest}\" must be a path inside the pack"
            )]
        );
    }
}

#[test]
fn rejects_reserved_env_var() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\nexecution_config:\n  interpreter: { binary: ruby }\n  env_vars:\n    ATTUNE_ACTION: x\n",
    );
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:6: env var \"ATTUNE_ACTION\" is reserved"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_runtime_name_taken_by_another_pack() {
    let dir = pack(&[
        PACK_YAML,
        ("runtimes/py.yaml", "ref: demo.py\nname: py\naliases: [python3]\nexecution_config:\n  interpreter: { binary: python3 }\n"),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].contains("\"python3\" of demo.py is already used by core.python"),
        "{msgs:?}"
    );
}

#[test]
fn re_registering_a_pack_may_keep_its_runtime_names() {
    let core = core_runtimes();
    assert!(load_pack(&shipped("core"), &core).is_ok());
}

#[test]
fn rejects_type_errors_with_field_path() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\nversions:\n  - version: \"3.3\"\n    is_default: maybe\n",
    );
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("runtimes/ruby.yaml:5: versions[0].is_default: invalid type"),
        "{msgs:?}"
    );
}

#[test]
fn reports_every_problem_at_once() {
    let dir = pack(&[
        ("pack.yaml", "ref: demo\nversion: one\n"),
        SCRIPT,
        ("actions/a.yaml", "name: a\nrunner_type: cobol\nentry_point: run.py\n"),
        ("actions/b.yaml", "name: b\nrunner_type: python\nentry_point: gone.py\nruntime_version: \"~~3\"\n"),
        ("runtimes/r.yaml", "ref: demo.r\nname: r\nversions:\n  - version: \"1\"\n    is_default: true\n    execution_config: { interpreter: { binary: r } }\n  - version: \"2\"\n    is_default: true\n    execution_config: { interpreter: { binary: r } }\n"),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    assert!(msgs[0].starts_with("actions/a.yaml:2: unknown runtime"));
    assert!(msgs[1].starts_with("actions/b.yaml:3: entry_point \"gone.py\" does not exist"));
    assert!(
        msgs[2].starts_with("actions/b.yaml:4: runtime_version \"~~3\" is not a valid constraint")
    );
    assert!(msgs[3].starts_with("pack.yaml:2: invalid pack version"));
    assert!(msgs[4].starts_with("runtimes/r.yaml:8: two defaults"));
}

#[test]
fn error_display_lists_problems_under_the_pack() {
    let dir = pack(&[SCRIPT]);
    let err = load_pack(dir.path(), &[]).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "pack {} rejected: 1 problem\n  ",
            dir.path().display()
        )),
        "{err}"
    );
}

// ---- hostile packs: names, files, YAML ----

/// The YAML of a runtime `name` with one version, for name tests.
fn runtime_named(name: &str, version: &str) -> String {
    format!("ref: demo.ruby\nname: {name}\nversions:\n  - version: {version}\n{VERSION_CFG}")
}

#[test]
fn rejects_unsafe_action_names() {
    for bad in ["a/b", "..", ".", "a b", "a*", "a>", "é", "/tmp/x", "a.b"] {
        let dir = action(&format!(
            "name: \"{bad}\"\nrunner_type: python\nentry_point: run.py\n"
        ));
        let msgs = rejected(dir.path(), &core_runtimes());
        assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
        let first = bad.chars().find(|c| !c.is_ascii_alphanumeric()).unwrap();
        assert_eq!(
            msgs[0],
            format!(
                "actions/run.yaml:1: action name: \"{bad}\" has the character {first:?}, which is \
                 not allowed (letters, digits, '_' and '-')"
            ),
            "{bad}"
        );
    }
}

#[test]
fn rejects_an_action_ref_whose_name_is_unsafe() {
    let dir = action("ref: demo.a/../b\nrunner_type: python\nentry_point: run.py\n");
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["actions/run.yaml:1: action name: \"a/../b\" has the character '/', which is not allowed (letters, digits, '_' and '-')"]
    );
}

#[test]
fn rejects_an_overlong_name() {
    let long = "a".repeat(65);
    let dir = action(&format!(
        "name: {long}\nrunner_type: python\nentry_point: run.py\n"
    ));
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        [format!(
            "actions/run.yaml:1: action name \"{long}\": it is 65 bytes long; at most 64 are allowed"
        )]
    );
}

#[test]
fn rejects_unsafe_pack_refs() {
    for bad in ["a/b", "..", "a b", "*", ">", "ünï", "/tmp/x"] {
        let dir = pack(&[("pack.yaml", &format!("ref: \"{bad}\"\nversion: 1.0.0\n"))]);
        let msgs = rejected(dir.path(), &[]);
        assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
        assert!(
            msgs[0].starts_with(&format!(
                "pack.yaml:1: pack ref: \"{bad}\" has the character"
            )),
            "{msgs:?}"
        );
    }
}

#[test]
fn rejects_a_runtime_named_as_an_absolute_path() {
    let dir = runtime_pack(&runtime_named("/tmp/x", "\"3.3\""));
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs.contains(&"runtimes/ruby.yaml:2: runtime name: \"/tmp/x\" has the character '/', which is not allowed (letters, digits, '_' and '-')".to_string()),
        "{msgs:?}"
    );
}

#[test]
fn rejects_unsafe_runtime_aliases() {
    let dir = runtime_pack(
        "ref: demo.ruby\nname: ruby\naliases: [\"../rb\"]\nexecution_config:\n  interpreter: { binary: ruby }\n",
    );
    let msgs = rejected(dir.path(), &[]);
    assert_eq!(
        msgs,
        ["runtimes/ruby.yaml:3: runtime alias: \"../rb\" has the character '.', which is not allowed (letters, digits, '_' and '-')"]
    );
}

#[test]
fn rejects_unsafe_version_names() {
    for (bad, why) in [
        ("\"../x\"", "has the character '/'"),
        ("\".1\"", "starts with '.'"),
        ("\"3.12/x\"", "has the character '/'"),
        ("\"1..2\"", "has an empty part between dots"),
        ("\"-1\"", "starts with '-'"),
        ("\"3 3\"", "has the character ' '"),
        ("\"3.3*\"", "has the character '*'"),
    ] {
        let dir = runtime_pack(&runtime_named("ruby", bad));
        let msgs = rejected(dir.path(), &[]);
        assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
        assert!(
            msgs[0].starts_with("runtimes/ruby.yaml:4: version: ") && msgs[0].contains(why),
            "{bad}: {msgs:?}"
        );
    }
}

#[test]
fn rejects_an_unsafe_pack_version() {
    let dir = pack(&[("pack.yaml", "ref: demo\nversion: \"1.0.0/../x\"\n")]);
    let msgs = rejected(dir.path(), &[]);
    assert!(
        msgs[0].starts_with("pack.yaml:2: pack version: \"1.0.0/../x\" has the character '/'"),
        "{msgs:?}"
    );
}

#[test]
fn rejects_unsafe_sensor_and_trigger_names() {
    let dir = pack(&[
        PACK_YAML,
        ("sensors/s.py", "print(1)\n"),
        (
            "sensors/s.yaml",
            "name: s\nrunner_type: python\nentry_point: s.py\ntriggers:\n  - ok\n  - \"a.>\"\n",
        ),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["sensors/s.yaml:6: trigger name: \"a.>\" has the character '.', which is not allowed (letters, digits, '_' and '-')"]
    );
    let dir = pack(&[
        PACK_YAML,
        ("sensors/s.py", "print(1)\n"),
        (
            "sensors/s.yaml",
            "name: \"s*\"\nrunner_type: python\nentry_point: s.py\n",
        ),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("sensors/s.yaml:1: sensor name: \"s*\""),
        "{msgs:?}"
    );
}

#[test]
fn rejects_unsafe_parameter_names_at_their_line() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  ok: {type: string}\n  \"x; touch pwned; y\": {type: string}\n  LD_PRELOAD: {type: string}\n  path: {type: string}\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        [
            "actions/run.yaml:6: parameter name: \"x; touch pwned; y\" has the character ';', which is not allowed (letters, digits and '_', not starting with a digit)",
            "actions/run.yaml:7: parameter name: \"LD_PRELOAD\" is reserved (names starting with LD_ are read by the linker, an interpreter or the runner)",
            "actions/run.yaml:8: parameter name: \"path\" is reserved (the environment variable PATH is read by the shell or an interpreter)",
        ]
    );
}

#[test]
fn rejects_reserved_parameter_names_in_a_full_schema() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  type: object\n  properties:\n    Bash_Env:\n      type: string\n",
    );
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with("actions/run.yaml:7: parameter name: \"Bash_Env\" is reserved"),
        "{msgs:?}"
    );
}

#[cfg(unix)]
#[test]
fn rejects_a_pack_yaml_symlinked_to_a_proc_file() {
    let dir = pack(&[SCRIPT]);
    std::os::unix::fs::symlink("/proc/self/environ", dir.path().join("pack.yaml")).unwrap();
    let msgs = rejected(dir.path(), &[]);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with("pack.yaml: is a symlink to /proc/")
            && msgs[0].ends_with("outside the pack: refused"),
        "{msgs:?}"
    );
    // Discovery still finds it, so the operator hears why it was refused.
    assert_eq!(discover(&[dir.path().to_path_buf()]).unwrap().len(), 1);
}

#[cfg(unix)]
#[test]
fn rejects_a_pack_yaml_symlinked_to_a_device() {
    let dir = pack(&[SCRIPT]);
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("pack.yaml")).unwrap();
    let msgs = rejected(dir.path(), &[]);
    assert_eq!(
        msgs,
        ["pack.yaml: is a symlink to /dev/zero, outside the pack: refused"]
    );
}

#[cfg(unix)]
#[test]
fn follows_a_yaml_symlink_that_stays_inside_the_pack() {
    let dir = pack(&[
        PACK_YAML,
        SCRIPT,
        (
            "shared/run.yaml",
            "name: run\nrunner_type: python\nentry_point: run.py\n",
        ),
    ]);
    std::os::unix::fs::symlink("../shared/run.yaml", dir.path().join("actions/run.yaml")).unwrap();
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.actions[0].reference, "demo.run");
}

#[cfg(unix)]
#[test]
fn rejects_an_actions_directory_symlinked_out_of_the_pack() {
    let outside = pack(&[(
        "run.yaml",
        "name: run\nrunner_type: python\nentry_point: run.py\n",
    )]);
    let dir = pack(&[PACK_YAML]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("actions")).unwrap();
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["actions: is a symlink out of the pack (or cannot be resolved): refused"]
    );
}

#[test]
fn rejects_a_huge_sparse_yaml_file_without_reading_it() {
    let dir = pack(&[PACK_YAML, SCRIPT]);
    let big = fs::File::create(dir.path().join("actions/run.yaml")).unwrap();
    big.set_len(16 << 30).unwrap(); // 16 GiB of holes
    let started = std::time::Instant::now();
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(
        msgs,
        [format!(
            "actions/run.yaml: is {} bytes; a pack YAML file may have at most {}",
            16u64 << 30,
            yaml::MAX_YAML_BYTES
        )]
    );
}

#[test]
fn rejects_a_yaml_file_just_over_the_size_cap() {
    let mut body = String::from("name: run\nrunner_type: python\nentry_point: run.py\n");
    body.push_str(&"#".repeat(yaml::MAX_YAML_BYTES as usize));
    let dir = action(&body);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert!(
        msgs[0].starts_with("actions/run.yaml: is ")
            && msgs[0].ends_with(&format!("at most {}", yaml::MAX_YAML_BYTES)),
        "{msgs:?}"
    );
}

#[cfg(unix)]
#[test]
fn rejects_a_fifo_without_blocking_on_it() {
    let dir = pack(&[PACK_YAML, SCRIPT]);
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("actions/run.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(
        msgs,
        ["actions/run.yaml: is not a regular file (a fifo): refused"]
    );
}

/// About 20 KB of YAML whose aliases expand to 2·10⁹ values.
fn billion_laughs() -> String {
    let mut s = String::from("name: run\nrunner_type: python\nentry_point: run.py\n");
    s.push_str(&format!("a: &a [{}]\n", "lol,".repeat(2000)));
    s.push_str(&format!("b: &b [{}]\n", "*a,".repeat(1000)));
    s.push_str(&format!("c: [{}]\n", "*b,".repeat(1000)));
    s
}

#[test]
fn rejects_yaml_billion_laughs_fast() {
    let body = billion_laughs();
    assert!(body.len() < 20_000, "{}", body.len());
    let dir = action(&body);
    let started = std::time::Instant::now();
    let msgs = rejected(dir.path(), &core_runtimes());
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        msgs,
        [format!(
            "actions/run.yaml: YAML expands to more than {} values (anchors and aliases that repeat too much are refused)",
            yaml::max_nodes(&body)
        )]
    );
}

#[test]
fn a_few_aliases_are_still_fine() {
    let dir = action(
        "name: run\nrunner_type: python\nentry_point: run.py\nparameters:\n  a: &s {type: string}\n  b: *s\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(
        loaded.actions[0].parameters["properties"]["b"]["type"],
        "string"
    );
}

#[test]
fn a_dependency_manifest_nothing_installs_is_warned_about() {
    let core = core_runtimes();
    let warnings = |files: &[(&str, &str)], registered: &[Runtime]| -> Vec<String> {
        let dir = pack(files);
        load_pack(dir.path(), registered)
            .unwrap()
            .warnings
            .iter()
            .map(|w| w.to_string().replace(&dir.path().display().to_string(), ""))
            .collect()
    };
    let node_action = (
        "actions/hi.yaml",
        "name: hi\nrunner_type: node\nentry_point: hi.js\n",
    );
    let node_code = ("actions/hi.js", "console.log(1)\n");
    let manifest = ("package.json", "{\"dependencies\": {}}\n");
    // Core's node installs package.json: nothing to say.
    assert!(warnings(&[PACK_YAML, node_action, node_code, manifest], &core).is_empty());
    // A python-only pack with a package.json: nobody installs it.
    let python_action = (
        "actions/run.yaml",
        "name: run\nrunner_type: python\nentry_point: run.py\n",
    );
    let w = warnings(&[PACK_YAML, SCRIPT, python_action, manifest], &core);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("/package.json: no runtime this pack's actions use installs package.json (they use: python); it is ignored"),
        "{w:?}"
    );
    // A node runtime that names the manifest but has no environment to install it into (what
    // core's node used to be).
    let mut no_env = core.clone();
    for rt in no_env.iter_mut().filter(|r| r.name == "node") {
        for v in &mut rt.versions {
            v.execution_config.as_mut().unwrap().environment = None;
        }
    }
    let w = warnings(&[PACK_YAML, node_action, node_code, manifest], &no_env);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("that node 18, node 20, node 22 cannot install"),
        "{w:?}"
    );
}

/// A pack with an action `demo.run` and a sensor firing `demo.alert`, plus `rules/r.yaml`.
fn with_rule(rule: &str) -> tempfile::TempDir {
    pack(&[
        PACK_YAML,
        SCRIPT,
        (
            "actions/run.yaml",
            "name: run\nrunner_type: python\nentry_point: run.py\n",
        ),
        ("sensors/s.py", "print(1)\n"),
        (
            "sensors/s.yaml",
            "name: s\nrunner_type: python\nentry_point: s.py\ntrigger_types:\n  - name: alert\n",
        ),
        ("rules/r.yaml", rule),
    ])
}

#[test]
fn loads_a_stackstorm_rule_unchanged() {
    let dir = with_rule(
        "---\nname: \"page_on_db_alert\"\npack: \"demo\"\ndescription: \"Pages on call.\"\nenabled: true\n\
         trigger:\n  type: \"demo.alert\"\n\
         criteria:\n  trigger.host:\n    type: \"matchregex\"\n    pattern: \"^db\"\n  trigger.severity:\n    type: \"gt\"\n    pattern: 2\n\
         action:\n  ref: \"demo.run\"\n  parameters:\n    who: \"{{ trigger.host | upper }}\"\n    level: \"{{trigger.severity}}\"\n",
    );
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.meta.rules, ["demo.page_on_db_alert"]);
    let rule = &loaded.rules[0];
    assert_eq!(rule.trigger, "demo.alert");
    assert_eq!(
        rule.criteria["trigger.severity"].op,
        attune_nats::CriterionOp::Greaterthan
    );
    let compiled = crate::rule::CompiledRule::new(rule.clone()).unwrap();
    let payload = serde_json::json!({"host": "db7", "severity": 4});
    assert!(compiled.matches(&payload));
    assert_eq!(
        serde_json::Value::Object(compiled.parameters(&payload).unwrap()),
        serde_json::json!({"who": "DB7", "level": 4})
    );
}

#[test]
fn rejects_what_a_rule_cannot_honour_at_its_line() {
    let cases: &[(&str, &str)] = &[
        (
            "name: r\ntrigger:\n  type: demo.alert\naction:\n  ref: demo.run\n  parameters:\n    a: \"{% if x %}1{% endif %}\"\n",
            "rules/r.yaml:7: parameter template \"{% if x %}1{% endif %}\": only {{ … }} expressions are supported",
        ),
        (
            "name: r\ntrigger:\n  type: demo.alert\ncriteria:\n  trigger.a:\n    type: timediff_lt\n    pattern: 5\naction:\n  ref: demo.run\n",
            "rules/r.yaml:6: criteria.trigger.a.type: unknown variant `timediff_lt`",
        ),
        (
            "name: r\ntrigger:\n  type: demo.alert\ncriteria:\n  trigger.a:\n    type: regex\n    pattern: \"(\"\naction:\n  ref: demo.run\n",
            "rules/r.yaml:5: criterion trigger.a: pattern \"(\" is not a valid regular expression",
        ),
        (
            "name: r\ntrigger:\n  type: demo.nope\naction:\n  ref: demo.run\n",
            "rules/r.yaml:3: trigger \"demo.nope\": this pack has no trigger type \"nope\" (declared: alert)",
        ),
        (
            "name: r\ntrigger:\n  type: demo.alert\n  parameters:\n    x: 1\naction:\n  ref: demo.run\n",
            "rules/r.yaml:4: trigger parameters are not supported",
        ),
        (
            "name: r\ntrigger:\n  type: demo.alert\naction:\n  ref: demo.gone\n",
            "rules/r.yaml:5: action \"demo.gone\" is not defined by this pack",
        ),
        (
            "name: r\npack: other\ntrigger:\n  type: demo.alert\naction:\n  ref: demo.run\n",
            "rules/r.yaml:2: pack \"other\" is not this pack's ref \"demo\"",
        ),
        (
            "name: r\naction:\n  ref: demo.run\n",
            "rules/r.yaml:1: a rule needs a trigger",
        ),
        (
            "name: r\ntrigger:\n  type: demo.alert\ncriteria:\n  payload.a:\n    type: exists\naction:\n  ref: demo.run\n",
            "rules/r.yaml:5: criterion payload.a: \"payload.a\": a path starts with \"trigger\"",
        ),
    ];
    for (rule, want) in cases {
        let dir = with_rule(rule);
        let msgs = rejected(dir.path(), &core_runtimes());
        assert!(
            msgs.len() == 1 && msgs[0].starts_with(want),
            "for:\n{rule}\nwant: {want}\ngot: {msgs:?}"
        );
    }
}

#[test]
fn a_rule_may_name_another_packs_trigger_and_action() {
    let dir = with_rule("name: r\ntrigger:\n  type: core.webhook\naction:\n  ref: core.echo\n");
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.rules[0].action.reference, "core.echo");
}

const SENSOR_PY: (&str, &str) = ("sensors/s.py", "print(1)\n");

#[test]
fn trigger_types_load_from_triggers_files_and_sensor_declarations() {
    let dir = pack(&[
        PACK_YAML,
        SENSOR_PY,
        (
            "triggers/alert.yaml",
            "---\nname: alert\npack: demo\ndescription: Something is wrong.\npayload_schema:\n  type: object\n  required: [host]\n  properties:\n    host: {type: string}\n",
        ),
        (
            "sensors/s.yaml",
            "name: s\nrunner_type: python\nentry_point: s.py\npoll_interval: 30\ntrigger_types:\n  - name: alert\n  - name: beat\n    description: Still alive.\n    payload_schema: {type: object}\n  - plain\n",
        ),
    ]);
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    let sensor = &loaded.sensors[0];
    assert_eq!(sensor.triggers, ["alert", "beat", "plain"]);
    assert_eq!(sensor.poll_interval, Some(30));
    let refs: Vec<&str> = loaded
        .triggers
        .iter()
        .map(|t| t.reference.as_str())
        .collect();
    assert_eq!(refs, ["demo.alert", "demo.beat", "demo.plain"]);
    assert_eq!(
        loaded.triggers[0].payload_schema["required"],
        serde_json::json!(["host"])
    );
    assert_eq!(
        loaded.triggers[1].description.as_deref(),
        Some("Still alive.")
    );
    assert_eq!(loaded.triggers[2].payload_schema, serde_json::json!({}));
    // Runners start sensors from the pack's metadata, and the trigger types travel with it.
    assert_eq!(loaded.meta.sensor_specs, loaded.sensors);
    assert_eq!(loaded.meta.trigger_types, loaded.triggers);
    // A trigger type declared only in triggers/ is one a rule may use.
    let shipped_examples = load_pack(&shipped("examples"), &core_runtimes()).unwrap();
    assert_eq!(shipped_examples.triggers[0].reference, "examples.tick");
    assert_eq!(
        shipped_examples.triggers[0].payload_schema["required"],
        serde_json::json!(["at"])
    );
}

#[test]
fn rejects_bad_trigger_types_and_poll_intervals_at_their_line() {
    let dir = pack(&[
        PACK_YAML,
        SENSOR_PY,
        (
            "triggers/alert.yaml",
            "name: alert\npayload_schema:\n  type: 12\n",
        ),
        ("triggers/other.yaml", "name: other\npack: elsewhere\n"),
        ("triggers/twice.yaml", "name: twice\n"),
        (
            "sensors/s.yaml",
            "name: s\nrunner_type: python\nentry_point: s.py\npoll_interval: 0\ntrigger_types:\n  - name: twice\n    payload_schema: {type: object}\n",
        ),
        ("triggers/bad.yaml", "name: \"a b\"\n"),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert!(
        msgs[0].starts_with("sensors/s.yaml:4: poll_interval must be 1 to 86400 seconds, not 0"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("sensors/s.yaml:6: trigger type \"twice\" is already declared in "),
        "{msgs:?}"
    );
    assert!(msgs[1].ends_with("triggers/twice.yaml"), "{msgs:?}");
    assert!(
        msgs[2].starts_with("triggers/alert.yaml:2: invalid payload_schema at \"/type\""),
        "{msgs:?}"
    );
    assert!(
        msgs[3].starts_with("triggers/bad.yaml:1: trigger name: \"a b\""),
        "{msgs:?}"
    );
    assert_eq!(
        msgs[4],
        "triggers/other.yaml:2: pack \"elsewhere\" is not this pack (\"demo\")"
    );
}

#[test]
fn a_rule_may_use_a_trigger_type_declared_only_in_triggers() {
    let dir = pack(&[
        PACK_YAML,
        SCRIPT,
        (
            "actions/run.yaml",
            "name: run\nrunner_type: python\nentry_point: run.py\n",
        ),
        ("triggers/hook.yaml", "name: hook\n"),
        (
            "rules/r.yaml",
            "name: r\ntrigger:\n  type: demo.hook\naction:\n  ref: demo.run\n",
        ),
    ]);
    let loaded = load_pack(dir.path(), &core_runtimes()).unwrap();
    assert_eq!(loaded.rules[0].trigger, "demo.hook");
    assert!(loaded.sensors.is_empty());
}

#[test]
fn a_bad_trigger_in_either_list_is_reported_at_its_own_line() {
    let dir = pack(&[
        PACK_YAML,
        SENSOR_PY,
        (
            "sensors/s.yaml",
            "name: s\nrunner_type: python\nentry_point: s.py\ntriggers:\n  - ok\ntrigger_types:\n  - name: \"b a d\"\n",
        ),
    ]);
    let msgs = rejected(dir.path(), &core_runtimes());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with("sensors/s.yaml:7: trigger name: \"b a d\""),
        "{msgs:?}"
    );
}
