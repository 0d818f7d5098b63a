//! Runtime files (`runtimes/*.yaml`): how to run code of one language, per version.
//!
//! A runtime is checked whole, including its execution configs and verification commands, since
//! runners trust a registered runtime without checking it again. See `docs/pack-format.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use attune_nats::model::{EnvType, VerificationCommand};
use attune_nats::name::{check_name, check_version_name};
use attune_nats::version::IMPLICIT_VERSION;
use attune_nats::{parse_version, ExecutionConfig, Runtime};
use serde_yaml::Value;

use super::checks::{escape, runtime_names};
use super::context::Ctx;
use super::locate::Seg;
use super::problem::{name_message, Problem};
use super::yaml::YamlDoc;

/// The prefix of environment variable names the runner reserves for itself.
const RESERVED_ENV_PREFIX: &str = "ATTUNE_";

/// The fields a runtime file may have; any other is warned about as a likely typo.
const RUNTIME_FIELDS: &[&str] = &[
    "ref",
    "name",
    "description",
    "aliases",
    "execution_config",
    "distributions",
    "versions",
    "installation",
    "pack",
];

/// The fields one entry of `versions` may have.
const VERSION_FIELDS: &[&str] = &[
    "version",
    "is_default",
    "meta",
    "distributions",
    "execution_config",
    "enabled",
];

/// Reads and checks one runtime file; `Some` (normalised) only when it has no problem.
pub fn load(ctx: &mut Ctx, shown: &Path, full: &Path, pack_ref: &str) -> Option<Runtime> {
    let doc = ctx.read(shown, full)?;
    doc.unknown_keys(&[], RUNTIME_FIELDS, &mut ctx.warnings);
    let mut value = doc.value.clone();
    let n_versions = value
        .get("versions")
        .and_then(Value::as_sequence)
        .map_or(0, Vec::len);
    for i in 0..n_versions {
        let path = [Seg::key("versions"), Seg::Idx(i)];
        doc.unknown_keys(&path, VERSION_FIELDS, &mut ctx.warnings);
        doc.versions_as_written(
            &mut value,
            &[Seg::key("versions"), Seg::Idx(i), Seg::key("version")],
        );
    }
    // `ref` may be left out: it defaults to `<pack>.<name>`.
    if value.get("ref").is_none() {
        if let Some(name) = value.get("name").cloned() {
            if let (Some(map), Some(name)) = (value.as_mapping_mut(), name.as_str()) {
                map.insert("ref".into(), format!("{pack_ref}.{name}").into());
            }
        }
    }
    let mut rt: Runtime = doc
        .typed(&[], value)
        .map_err(|p| ctx.problems.push(p))
        .ok()?;
    rt.pack = pack_ref.to_string();
    let problems = check(&doc, &rt, pack_ref);
    let ok = problems.is_empty();
    ctx.problems.extend(problems);
    rt.normalize();
    ok.then_some(rt)
}

/// Every problem of one deserialised runtime: names, ref, versions, defaults and configs.
fn check(doc: &YamlDoc, rt: &Runtime, pack_ref: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = check_name(&rt.name) {
        problems.push(doc.problem(
            &[Seg::key("name")],
            name_message("runtime name", &rt.name, &e),
        ));
    }
    if !pack_ref.is_empty() && rt.reference != format!("{pack_ref}.{}", rt.name) {
        problems.push(doc.problem(
            &[Seg::key("ref")],
            format!(
                "ref \"{}\" does not match the pack and name: expected \"{pack_ref}.{}\"",
                rt.reference, rt.name
            ),
        ));
    }
    for (i, alias) in rt.aliases.iter().enumerate() {
        if let Err(e) = check_name(alias) {
            problems.push(doc.problem(
                &[Seg::key("aliases"), Seg::Idx(i)],
                name_message("runtime alias", alias, &e),
            ));
        }
    }
    check_verification(
        doc,
        &[],
        &rt.distributions.verification.commands,
        &mut problems,
    );
    if let Some(cfg) = &rt.execution_config {
        check_exec_config(doc, &[Seg::key("execution_config")], cfg, &mut problems);
    }
    if rt.versions.is_empty() && rt.execution_config.is_none() {
        problems.push(doc.problem(
            &[],
            "a runtime without versions needs a base execution_config",
        ));
    }
    let mut defaults = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, v) in rt.versions.iter().enumerate() {
        let here = [Seg::key("versions"), Seg::Idx(i)];
        let at = |k: &str| [&here[..], &[Seg::key(k)]].concat();
        if v.version == IMPLICIT_VERSION {
            problems.push(doc.problem(
                &at("version"),
                format!("\"{IMPLICIT_VERSION}\" is reserved for runtimes without a versions list"),
            ));
        } else if let Err(e) = check_version_name(&v.version) {
            problems.push(doc.problem(&at("version"), name_message("version", &v.version, &e)));
        } else if let Err(e) = parse_version(&v.version) {
            problems.push(doc.problem(&at("version"), format!("invalid version string: {e}")));
        }
        // `3.12` and `3.12.0` are one version (both parse to 3.12.0 and select alike): keyed by
        // the parsed version, so the second spelling is refused instead of loading as another.
        let same = parse_version(&v.version).map_or_else(|_| v.version.clone(), |p| p.to_string());
        match seen.get(&same) {
            Some(&first) if rt.versions[first].version == v.version => {
                problems.push(doc.problem(
                    &at("version"),
                    format!(
                        "version \"{}\" is declared twice (first as versions[{first}])",
                        v.version
                    ),
                ))
            }
            Some(&first) => problems.push(doc.problem(
                &at("version"),
                format!(
                    "version \"{}\" is the same version as \"{}\" (versions[{first}]); declare it once",
                    v.version, rt.versions[first].version
                ),
            )),
            None => {
                seen.insert(same, i);
            }
        }
        if v.is_default {
            defaults.push((i, v.version.clone()));
        }
        match &v.execution_config {
            Some(cfg) => check_exec_config(doc, &at("execution_config"), cfg, &mut problems),
            None => problems.push(doc.problem(
                &here,
                format!(
                    "version \"{}\" has no execution_config: each version's config is complete \
                     and standalone (the base config is never used for a version)",
                    v.version
                ),
            )),
        }
        check_verification(
            doc,
            &here,
            &v.distributions.verification.commands,
            &mut problems,
        );
    }
    if defaults.len() > 1 {
        let names: Vec<&str> = defaults.iter().map(|(_, n)| n.as_str()).collect();
        for (i, _) in &defaults[1..] {
            problems.push(doc.problem(
                &[Seg::key("versions"), Seg::Idx(*i), Seg::key("is_default")],
                format!(
                    "two defaults in runtime \"{}\": {} (at most one version may have is_default: true)",
                    rt.name,
                    names.join(" and ")
                ),
            ));
        }
    }
    problems
}

/// Runtime names and aliases must be unique across this pack and every other registered pack,
/// since runners resolve `runner_type` by name alone.
pub fn check_names(ctx: &mut Ctx, runtimes: &[Runtime], registered: &[Runtime], pack_ref: &str) {
    let mut owners: HashMap<String, String> = HashMap::new();
    for rt in registered.iter().filter(|r| r.pack != pack_ref) {
        for n in runtime_names(rt) {
            owners.insert(n.clone(), rt.reference.clone());
        }
    }
    for rt in runtimes {
        let file = ctx.shown(&format!("runtimes/{}.yaml", rt.name));
        for n in runtime_names(rt) {
            if let Some(owner) = owners.get(n) {
                if owner != &rt.reference {
                    ctx.problems.push(Problem {
                        file: file.clone(),
                        line: None,
                        message: format!(
                            "runtime name or alias \"{n}\" of {} is already used by {owner}",
                            rt.reference
                        ),
                    });
                }
            } else {
                owners.insert(n.clone(), rt.reference.clone());
            }
        }
    }
}

/// Verification commands (of the runtime, or of one version at `owner`) must name a binary and
/// have a valid regex, since a runner runs them to pick its interpreter.
fn check_verification(
    doc: &YamlDoc,
    owner: &[Seg],
    commands: &[VerificationCommand],
    problems: &mut Vec<Problem>,
) {
    let path = [
        owner,
        &[
            Seg::key("distributions"),
            Seg::key("verification"),
            Seg::key("commands"),
        ],
    ]
    .concat();
    for (i, cmd) in commands.iter().enumerate() {
        let at = |k: &str| [&path[..], &[Seg::Idx(i), Seg::key(k)]].concat();
        if cmd.binary.trim().is_empty() {
            problems.push(doc.problem(&at("binary"), "verification binary is empty"));
        }
        if let Some(p) = &cmd.pattern {
            if let Err(e) = regex::Regex::new(p) {
                problems.push(doc.problem(
                    &at("pattern"),
                    format!("invalid verification pattern \"{p}\": {e}"),
                ));
            }
        }
    }
}

/// An execution config at `path` must be complete enough to run: an interpreter, an environment
/// that can be created, dependencies inside the pack, and no env var the runner reserves.
fn check_exec_config(
    doc: &YamlDoc,
    path: &[Seg],
    cfg: &ExecutionConfig,
    problems: &mut Vec<Problem>,
) {
    let at = |ks: &[&str]| [path, &ks.iter().map(|k| Seg::key(k)).collect::<Vec<_>>()].concat();
    if cfg.interpreter.binary.trim().is_empty() {
        problems.push(doc.problem(
            &at(&["interpreter", "binary"]),
            "interpreter binary is empty",
        ));
    }
    if let Some(env) = &cfg.environment {
        // A virtualenv is made by a command and holds its own interpreter; a node_modules
        // directory is made by the install itself and the pinned binary runs with it.
        if env.env_type == EnvType::Virtualenv {
            if env.create_command.is_empty() {
                problems.push(doc.problem(
                    &at(&["environment"]),
                    "environment needs a create_command (or env_type: none)",
                ));
            }
            if env.interpreter_path.is_none() {
                problems.push(doc.problem(
                    &at(&["environment"]),
                    "environment needs an interpreter_path (the interpreter inside it, e.g. {env_dir}/bin/python3)",
                ));
            }
        }
    }
    if let Some(deps) = &cfg.dependencies {
        if deps.install_command.is_empty() {
            problems.push(doc.problem(
                &at(&["dependencies"]),
                "dependencies need an install_command",
            ));
        }
        if escape(Path::new(&deps.manifest_file)).is_some() {
            problems.push(doc.problem(
                &at(&["dependencies", "manifest_file"]),
                format!(
                    "manifest_file \"{}\" must be a path inside the pack",
                    deps.manifest_file
                ),
            ));
        }
    }
    for name in cfg.env_vars.keys() {
        if name.starts_with(RESERVED_ENV_PREFIX) {
            problems.push(doc.problem(
                &at(&["env_vars", name]),
                format!("env var \"{name}\" is reserved: names starting with {RESERVED_ENV_PREFIX} belong to the runner"),
            ));
        }
    }
}
