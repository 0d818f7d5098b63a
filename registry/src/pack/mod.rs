//! Pack loading: a pack directory read into the registered model, strictly.
//!
//! A pack is accepted whole or rejected whole. Every problem is collected (not just the first) and
//! reported as `file:line: message`, so an author fixes a pack in one round trip. Loading reads
//! files only: it never touches the store, so a rejected pack cannot change what was registered.
//!
//! # Layout
//! - [`problem`]: what a rejected pack reports ([`Problem`], [`PackErrors`]); imports no sibling.
//! - [`locate`]: YAML path → line, for messages about fields serde does not locate.
//! - [`yaml`]: one parsed file and the helpers that turn its problems into [`Problem`]s.
//! - [`params`]: the two parameter styles normalised to JSON Schema, and schema checks.
//! - this file: the pack, runtime, action and sensor rules.

pub mod locate;
pub mod params;
mod problem;
pub mod yaml;

pub use problem::{PackErrors, Problem};

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use attune_nats::model::{EnvType, OutputFormat, ParameterDelivery, ParameterFormat};
use attune_nats::subject::check_token;
use attune_nats::version::IMPLICIT_VERSION;
use attune_nats::{parse_version, Action, Constraint, PackMeta, Runtime, Sensor};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value;

use locate::Seg;
use yaml::YamlDoc;

/// The prefix of environment variable names the runner reserves for itself.
const RESERVED_ENV_PREFIX: &str = "ATTUNE_";

const PACK_FIELDS: &[&str] = &[
    "ref",
    "name",
    "label",
    "description",
    "version",
    "author",
    "email",
    "keywords",
    "tags",
    "python_versions",
    "dependencies",
    "system",
    "contributors",
    "conf_schema",
    "config",
];
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
const VERSION_FIELDS: &[&str] = &[
    "version",
    "is_default",
    "meta",
    "distributions",
    "execution_config",
    "enabled",
];
const ACTION_FIELDS: &[&str] = &[
    "ref",
    "name",
    "description",
    "runner_type",
    "entry_point",
    "runtime_version",
    "parameters",
    "output",
    "output_schema",
    "parameter_delivery",
    "parameter_format",
    "output_format",
    "timeout_seconds",
    "timeout",
    "enabled",
    "retry",
    "tags",
    "pack",
];
const SENSOR_FIELDS: &[&str] = &[
    "ref",
    "name",
    "description",
    "runner_type",
    "entry_point",
    "runtime_version",
    "triggers",
    "trigger_types",
    "enabled",
    "class_name",
    "poll_interval",
    "pack",
];

/// A pack that passed every check, in registered form.
#[derive(Debug, Clone)]
pub struct LoadedPack {
    /// The pack directory as given.
    pub dir: PathBuf,
    /// Metadata; `digest` is empty until the registry archives the files.
    pub meta: PackMeta,
    /// Runtimes it defines, normalised (a version-less runtime has its implicit version).
    pub runtimes: Vec<Runtime>,
    /// Its actions.
    pub actions: Vec<Action>,
    /// Its sensors.
    pub sensors: Vec<Sensor>,
    /// Things that do not stop the load but probably are mistakes (unknown fields, a constraint
    /// no registered version satisfies).
    pub warnings: Vec<Problem>,
}

/// Expands `--packs` values: a directory with a `pack.yaml` is a pack; any other directory
/// contributes its subdirectories that have one. `core` comes first, since other packs use its
/// runtimes; the rest keep a stable (sorted) order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let mut found = Vec::new();
    for path in paths {
        if path.join("pack.yaml").is_file() {
            found.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| Problem {
            file: path.clone(),
            line: None,
            message: format!("cannot read pack directory: {e}"),
        })?;
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("pack.yaml").is_file())
            .collect();
        if subdirs.is_empty() {
            return Err(Problem {
                file: path.clone(),
                line: None,
                message: "neither a pack (no pack.yaml) nor a directory of packs".to_string(),
            });
        }
        subdirs.sort();
        found.extend(subdirs);
    }
    found.sort_by_key(|p| p.file_name().is_none_or(|n| n != "core"));
    Ok(found)
}

/// Loads the pack in `dir`. `registered` are the runtimes other packs registered before (those
/// of this same pack are ignored: a re-registration replaces them).
pub fn load_pack(dir: &Path, registered: &[Runtime]) -> Result<LoadedPack, PackErrors> {
    let mut ctx = Ctx {
        dir: dir.to_path_buf(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (pack_ref, meta) = ctx.load_meta();
    // With no readable ref, checks that compare refs against the pack would only add noise.
    let pack_ref = pack_ref.unwrap_or_default();

    let mut runtimes = Vec::new();
    for (shown, full) in ctx.yaml_files("runtimes") {
        if let Some(rt) = ctx.load_runtime(&shown, &full, &pack_ref) {
            runtimes.push(rt);
        }
    }
    ctx.check_runtime_names(&runtimes, registered, &pack_ref);

    let mut catalog: Vec<&Runtime> = runtimes.iter().collect();
    catalog.extend(registered.iter().filter(|r| r.pack != pack_ref));

    let mut loaded = Vec::new();
    for (shown, full) in ctx.yaml_files("actions") {
        if let Some(action) = ctx.load_action(&shown, &full, &pack_ref, &catalog) {
            loaded.push((shown, action));
        }
    }
    let actions = ctx.unique_refs("action", loaded, |a| &a.reference);

    let mut loaded = Vec::new();
    for (shown, full) in ctx.yaml_files("sensors") {
        if let Some(sensor) = ctx.load_sensor(&shown, &full, &pack_ref, &catalog) {
            loaded.push((shown, sensor));
        }
    }
    let sensors = ctx.unique_refs("sensor", loaded, |s| &s.reference);

    match meta {
        Some(mut meta) if ctx.problems.is_empty() => {
            meta.runtimes = runtimes.iter().map(|r| r.name.clone()).collect();
            meta.actions = actions.iter().map(|a| a.reference.clone()).collect();
            meta.sensors = sensors.iter().map(|s| s.reference.clone()).collect();
            Ok(LoadedPack {
                dir: dir.to_path_buf(),
                meta,
                runtimes,
                actions,
                sensors,
                warnings: ctx.warnings,
            })
        }
        _ => {
            let mut problems = ctx.problems;
            problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(PackErrors {
                dir: dir.to_path_buf(),
                problems,
            })
        }
    }
}

/// What `pack.yaml` holds.
#[derive(Deserialize)]
struct RawPack {
    #[serde(rename = "ref")]
    reference: Option<String>,
    name: Option<String>,
    label: Option<String>,
    description: Option<String>,
    version: String,
    author: Option<String>,
}

/// What an action file holds, before normalisation.
#[derive(Deserialize)]
struct RawAction {
    #[serde(rename = "ref")]
    reference: Option<String>,
    name: Option<String>,
    description: Option<String>,
    runner_type: Option<String>,
    entry_point: Option<String>,
    runtime_version: Option<String>,
    parameters: Option<Json>,
    output: Option<Json>,
    output_schema: Option<Json>,
    #[serde(default)]
    parameter_delivery: ParameterDelivery,
    #[serde(default)]
    parameter_format: ParameterFormat,
    #[serde(default)]
    output_format: OutputFormat,
    timeout_seconds: Option<f64>,
    timeout: Option<f64>,
    enabled: Option<bool>,
    retry: Option<attune_nats::jobs::RetryPolicy>,
}

/// What a sensor file holds.
#[derive(Deserialize)]
struct RawSensor {
    #[serde(rename = "ref")]
    reference: Option<String>,
    name: Option<String>,
    description: Option<String>,
    runner_type: Option<String>,
    entry_point: Option<String>,
    runtime_version: Option<String>,
    #[serde(default)]
    triggers: Vec<TriggerName>,
    #[serde(default)]
    trigger_types: Vec<TriggerName>,
    enabled: Option<bool>,
}

/// A trigger given as a name or as `{name: …}` (StackStorm's `trigger_types`).
#[derive(Deserialize)]
#[serde(untagged)]
enum TriggerName {
    Name(String),
    Full { name: String },
}

/// The loading state of one pack: where it is and what went wrong so far.
struct Ctx {
    dir: PathBuf,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Ctx {
    /// Keeps the first definition of each ref and reports every later one as a duplicate.
    fn unique_refs<T>(
        &mut self,
        kind: &str,
        loaded: Vec<(PathBuf, T)>,
        reference: impl Fn(&T) -> &String,
    ) -> Vec<T> {
        let mut first_file: HashMap<String, PathBuf> = HashMap::new();
        let mut kept = Vec::new();
        for (shown, item) in loaded {
            let r = reference(&item).clone();
            if let Some(first) = first_file.get(&r) {
                self.problems.push(Problem {
                    file: shown,
                    line: Some(1),
                    message: format!(
                        "duplicate {kind} ref \"{r}\" (also defined in {})",
                        first.display()
                    ),
                });
            } else {
                first_file.insert(r, shown);
                kept.push(item);
            }
        }
        kept
    }

    fn shown(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The `*.yaml` / `*.yml` files of a subdirectory, sorted.
    fn yaml_files(&mut self, sub: &str) -> Vec<(PathBuf, PathBuf)> {
        let full_dir = self.dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&full_dir) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|n| {
                let rel = format!("{sub}/{n}");
                (self.shown(&rel), self.dir.join(&rel))
            })
            .collect()
    }

    fn read(&mut self, shown: &Path, full: &Path) -> Option<YamlDoc> {
        YamlDoc::read(shown.to_path_buf(), full)
            .map_err(|p| self.problems.push(p))
            .ok()
    }

    /// Reads `pack.yaml`: the pack ref whenever it can be read, and the metadata if all is valid.
    fn load_meta(&mut self) -> (Option<String>, Option<PackMeta>) {
        let shown = self.shown("pack.yaml");
        let full = self.dir.join("pack.yaml");
        if !full.is_file() {
            self.problems.push(Problem {
                file: shown,
                line: None,
                message: "missing: every pack needs a pack.yaml with ref and version".into(),
            });
            return (None, None);
        }
        let Some(mut doc) = self.read(&shown, &full) else {
            return (None, None);
        };
        doc.unknown_keys(&[], PACK_FIELDS, &mut self.warnings);
        let mut value = doc.value.clone();
        doc.versions_as_written(&mut value, &[Seg::key("version")]);
        doc.value = value.clone();
        let declared = doc
            .value
            .get("ref")
            .or_else(|| doc.value.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let Ok(raw) = doc
            .typed::<RawPack>(&[], value)
            .map_err(|p| self.problems.push(p))
        else {
            return (declared, None);
        };
        let Some(reference) = raw.reference.or(raw.name) else {
            self.problems
                .push(doc.problem(&[], "ref is missing: name the pack (ref: mypack)"));
            return (None, None);
        };
        let mut ok = true;
        if let Err(e) = check_token("pack ref", &reference, false) {
            self.problems
                .push(doc.problem(&[Seg::key("ref")], e.to_string()));
            ok = false;
        }
        if let Err(e) = parse_version(&raw.version) {
            self.problems
                .push(doc.problem(&[Seg::key("version")], format!("invalid pack version: {e}")));
            ok = false;
        }
        let meta = ok.then(|| PackMeta {
            reference: reference.clone(),
            label: raw.label,
            description: raw.description,
            version: raw.version,
            author: raw.author,
            digest: String::new(),
            runtimes: Vec::new(),
            actions: Vec::new(),
            sensors: Vec::new(),
            registered_at: None,
        });
        (Some(reference), meta)
    }

    fn load_runtime(&mut self, shown: &Path, full: &Path, pack_ref: &str) -> Option<Runtime> {
        let doc = self.read(shown, full)?;
        doc.unknown_keys(&[], RUNTIME_FIELDS, &mut self.warnings);
        let mut value = doc.value.clone();
        let n_versions = value
            .get("versions")
            .and_then(Value::as_sequence)
            .map_or(0, Vec::len);
        for i in 0..n_versions {
            let path = [Seg::key("versions"), Seg::Idx(i)];
            doc.unknown_keys(&path, VERSION_FIELDS, &mut self.warnings);
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
            .map_err(|p| self.problems.push(p))
            .ok()?;
        rt.pack = pack_ref.to_string();
        let before = self.problems.len();
        self.check_runtime(&doc, &rt, pack_ref);
        rt.normalize();
        (self.problems.len() == before).then_some(rt)
    }

    fn check_runtime(&mut self, doc: &YamlDoc, rt: &Runtime, pack_ref: &str) {
        let mut problems = Vec::new();
        if let Err(e) = check_token("runtime name", &rt.name, false) {
            problems.push(doc.problem(&[Seg::key("name")], e.to_string()));
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
            if let Err(e) = check_token("runtime alias", alias, false) {
                problems.push(doc.problem(&[Seg::key("aliases"), Seg::Idx(i)], e.to_string()));
            }
        }
        let base_verif = [
            Seg::key("distributions"),
            Seg::key("verification"),
            Seg::key("commands"),
        ];
        check_verification(
            doc,
            &base_verif,
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
            let at = |k: &str| vec![Seg::key("versions"), Seg::Idx(i), Seg::key(k)];
            if v.version == IMPLICIT_VERSION {
                problems.push(doc.problem(
                    &at("version"),
                    format!(
                        "\"{IMPLICIT_VERSION}\" is reserved for runtimes without a versions list"
                    ),
                ));
            } else if let Err(e) = parse_version(&v.version) {
                problems.push(doc.problem(&at("version"), format!("invalid version string: {e}")));
            } else if let Err(e) = check_token("version", &v.version, true) {
                problems.push(doc.problem(&at("version"), e.to_string()));
            }
            if let Some(first) = seen.insert(v.version.clone(), i) {
                problems.push(doc.problem(
                    &at("version"),
                    format!(
                        "version \"{}\" is declared twice (first as versions[{first}])",
                        v.version
                    ),
                ));
            }
            if v.is_default {
                defaults.push((i, v.version.clone()));
            }
            match &v.execution_config {
                Some(cfg) => check_exec_config(doc, &at("execution_config"), cfg, &mut problems),
                None => problems.push(doc.problem(
                    &[Seg::key("versions"), Seg::Idx(i)],
                    format!(
                        "version \"{}\" has no execution_config: each version's config is complete \
                         and standalone (the base config is never used for a version)",
                        v.version
                    ),
                )),
            }
            check_verification(
                doc,
                &[
                    &at("distributions")[..],
                    &[Seg::key("verification"), Seg::key("commands")],
                ]
                .concat(),
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
        self.problems.extend(problems);
    }

    /// Runtime names and aliases must be unique across this pack and every other registered pack.
    fn check_runtime_names(
        &mut self,
        runtimes: &[Runtime],
        registered: &[Runtime],
        pack_ref: &str,
    ) {
        let mut owners: HashMap<String, String> = HashMap::new();
        for rt in registered.iter().filter(|r| r.pack != pack_ref) {
            for n in std::iter::once(&rt.name).chain(&rt.aliases) {
                owners.insert(n.clone(), rt.reference.clone());
            }
        }
        for rt in runtimes {
            let file = self.shown(&format!("runtimes/{}.yaml", rt.name));
            for n in std::iter::once(&rt.name).chain(&rt.aliases) {
                if let Some(owner) = owners.get(n) {
                    if owner != &rt.reference {
                        self.problems.push(Problem {
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

    /// Name, ref, runtime, entry point and constraint: shared by actions and sensors.
    #[allow(clippy::too_many_arguments)]
    fn check_common(
        &mut self,
        doc: &YamlDoc,
        kind: &'static str,
        sub: &str,
        pack_ref: &str,
        reference: Option<&str>,
        name: Option<&str>,
        runner_type: Option<&str>,
        entry_point: Option<&str>,
        constraint: Option<&str>,
        catalog: &[&Runtime],
    ) -> Option<(String, String, String)> {
        let before = self.problems.len();
        let name = match (reference, name) {
            (Some(r), n) => match r.split_once('.') {
                Some((p, n2)) if p == pack_ref && n.is_none_or(|n| n == n2) => Some(n2.to_string()),
                _ => {
                    self.problems.push(doc.problem(
                        &[Seg::key("ref")],
                        format!(
                            "ref \"{r}\" must be \"{pack_ref}.<name>\"{}",
                            name.map(|n| format!(" (with name \"{n}\")")).unwrap_or_default()
                        ),
                    ));
                    None
                }
            },
            (None, Some(n)) => Some(n.to_string()),
            (None, None) => {
                self.problems
                    .push(doc.problem(&[], format!("{kind} needs a ref or a name")));
                None
            }
        };
        if let Some(n) = &name {
            if let Err(e) = check_token(
                if kind == "sensor" {
                    "sensor name"
                } else {
                    "action name"
                },
                n,
                false,
            ) {
                self.problems
                    .push(doc.problem(&[Seg::key("name")], e.to_string()));
            }
        }
        let runtime = match runner_type {
            None => {
                self.problems
                    .push(doc.problem(&[], "runner_type is missing (python, node, shell, …)"));
                None
            }
            Some(rt_name) => match catalog.iter().find(|r| r.answers_to(rt_name)) {
                Some(rt) => Some(*rt),
                None => {
                    let mut known: Vec<&str> = catalog
                        .iter()
                        .flat_map(|r| {
                            std::iter::once(r.name.as_str())
                                .chain(r.aliases.iter().map(String::as_str))
                        })
                        .collect();
                    known.sort();
                    known.dedup();
                    self.problems.push(doc.problem(
                        &[Seg::key("runner_type")],
                        format!(
                            "unknown runtime \"{rt_name}\" (known: {})",
                            if known.is_empty() {
                                "none — register the core pack first".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                    None
                }
            },
        };
        match entry_point {
            None => self
                .problems
                .push(doc.problem(&[], "entry_point is missing")),
            Some(ep) => {
                if let Err(msg) = check_entry_point(&self.dir, sub, ep) {
                    self.problems
                        .push(doc.problem(&[Seg::key("entry_point")], msg));
                }
            }
        }
        if let Some(c) = constraint {
            match Constraint::parse(c) {
                Err(e) => self
                    .problems
                    .push(doc.problem(&[Seg::key("runtime_version")], e.to_string())),
                Ok(parsed) => {
                    if let Some(rt) = runtime {
                        if rt.is_versionless() && !parsed.is_any() {
                            self.problems.push(doc.problem(
                                &[Seg::key("runtime_version")],
                                format!(
                                    "runtime \"{}\" has no versions, so runtime_version \"{c}\" cannot be satisfied: remove it",
                                    rt.name
                                ),
                            ));
                        } else if !rt.is_versionless()
                            && !rt.versions.iter().any(|v| {
                                parse_version(&v.version).is_ok_and(|pv| parsed.matches(&pv))
                            })
                        {
                            let names: Vec<&str> =
                                rt.versions.iter().map(|v| v.version.as_str()).collect();
                            self.warnings.push(doc.problem(
                                &[Seg::key("runtime_version")],
                                format!(
                                    "runtime_version \"{c}\" matches none of the registered {} versions ({})",
                                    rt.name,
                                    names.join(", ")
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if self.problems.len() != before {
            return None;
        }
        let name = name?;
        let runtime = runtime?;
        Some((format!("{pack_ref}.{name}"), name, runtime.name.clone()))
    }

    /// Reads an action or sensor file: warns about unknown fields, keeps an unquoted
    /// `runtime_version` as written, and deserialises it.
    fn read_typed<T: serde::de::DeserializeOwned>(
        &mut self,
        shown: &Path,
        full: &Path,
        fields: &[&str],
    ) -> Option<(YamlDoc, T)> {
        let doc = self.read(shown, full)?;
        doc.unknown_keys(&[], fields, &mut self.warnings);
        let mut value = doc.value.clone();
        doc.versions_as_written(&mut value, &[Seg::key("runtime_version")]);
        let raw = doc
            .typed(&[], value)
            .map_err(|p| self.problems.push(p))
            .ok()?;
        Some((doc, raw))
    }

    fn load_action(
        &mut self,
        shown: &Path,
        full: &Path,
        pack_ref: &str,
        catalog: &[&Runtime],
    ) -> Option<Action> {
        let (doc, raw): (_, RawAction) = self.read_typed(shown, full, ACTION_FIELDS)?;
        let common = self.check_common(
            &doc,
            "action",
            "actions",
            pack_ref,
            raw.reference.as_deref(),
            raw.name.as_deref(),
            raw.runner_type.as_deref(),
            raw.entry_point.as_deref(),
            raw.runtime_version.as_deref(),
            catalog,
        );
        let parameters = match params::normalize(raw.parameters.as_ref()) {
            Ok(schema) => {
                for (param, msg) in params::check_schema(&schema) {
                    let path = param_path(param);
                    self.problems.push(doc.problem(&path, msg));
                }
                Some(schema)
            }
            Err((param, msg)) => {
                self.problems.push(doc.problem(&param_path(param), msg));
                None
            }
        };
        let output = raw.output.or(raw.output_schema);
        if let Some(out) = &output {
            if let Err(e) = jsonschema::meta::validate(out) {
                self.problems.push(
                    doc.problem(&[Seg::key("output")], format!("invalid output schema: {e}")),
                );
            }
        }
        let timeout = raw.timeout_seconds.or(raw.timeout);
        if let Some(t) = timeout {
            if !(t > 0.0 && t.is_finite()) {
                self.problems.push(doc.problem(
                    &[Seg::key("timeout_seconds")],
                    format!("timeout_seconds must be a positive number of seconds, not {t}"),
                ));
            }
        }
        if let Some(retry) = &raw.retry {
            for (field, msg) in retry.problems() {
                self.problems
                    .push(doc.problem(&[Seg::key("retry"), Seg::key(field)], msg));
            }
        }
        let (reference, name, runtime) = common?;
        Some(Action {
            reference,
            pack: pack_ref.to_string(),
            name,
            description: raw.description,
            runner_type: raw.runner_type.unwrap_or_default(),
            runtime,
            entry_point: raw.entry_point.unwrap_or_default(),
            runtime_version: raw.runtime_version.filter(|c| !c.trim().is_empty()),
            parameters: parameters?,
            output,
            parameter_delivery: raw.parameter_delivery,
            parameter_format: raw.parameter_format,
            output_format: raw.output_format,
            timeout_seconds: timeout,
            enabled: raw.enabled.unwrap_or(true),
            retry: raw.retry,
        })
    }

    fn load_sensor(
        &mut self,
        shown: &Path,
        full: &Path,
        pack_ref: &str,
        catalog: &[&Runtime],
    ) -> Option<Sensor> {
        let (doc, raw): (_, RawSensor) = self.read_typed(shown, full, SENSOR_FIELDS)?;
        let (reference, name, runtime) = self.check_common(
            &doc,
            "sensor",
            "sensors",
            pack_ref,
            raw.reference.as_deref(),
            raw.name.as_deref(),
            raw.runner_type.as_deref(),
            raw.entry_point.as_deref(),
            raw.runtime_version.as_deref(),
            catalog,
        )?;
        let triggers: Vec<String> = raw
            .triggers
            .into_iter()
            .chain(raw.trigger_types)
            .map(|t| match t {
                TriggerName::Name(n) | TriggerName::Full { name: n } => n,
            })
            .collect();
        for t in &triggers {
            if let Err(e) = check_token("trigger name", t, false) {
                self.problems
                    .push(doc.problem(&[Seg::key("triggers")], e.to_string()));
                return None;
            }
        }
        Some(Sensor {
            reference,
            pack: pack_ref.to_string(),
            name,
            description: raw.description,
            runner_type: raw.runner_type.unwrap_or_default(),
            runtime,
            entry_point: raw.entry_point.unwrap_or_default(),
            runtime_version: raw.runtime_version.filter(|c| !c.trim().is_empty()),
            triggers,
            enabled: raw.enabled.unwrap_or(true),
        })
    }
}

fn param_path(param: Option<String>) -> Vec<Seg> {
    let mut path = vec![Seg::key("parameters")];
    if let Some(p) = param {
        path.push(Seg::Key(p));
    }
    path
}

/// The entry point must be a relative path to an existing file under `<pack>/<sub>/`, and must not
/// leave it, neither by `..` nor through a symlink.
fn check_entry_point(pack_dir: &Path, sub: &str, entry_point: &str) -> Result<(), String> {
    let ep = Path::new(entry_point);
    if entry_point.trim().is_empty() {
        return Err("entry_point is empty".into());
    }
    if ep.is_absolute() {
        return Err(format!(
            "entry_point \"{entry_point}\" is absolute: give a path relative to {sub}/"
        ));
    }
    if ep.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!(
            "entry_point \"{entry_point}\" escapes the pack (\"..\" is not allowed)"
        ));
    }
    let file = pack_dir.join(sub).join(ep);
    if !file.exists() {
        return Err(format!(
            "entry_point \"{entry_point}\" does not exist (looked for {})",
            file.display()
        ));
    }
    let (Ok(real), Ok(root)) = (file.canonicalize(), pack_dir.canonicalize()) else {
        return Err(format!("entry_point \"{entry_point}\" cannot be resolved"));
    };
    if !real.starts_with(&root) {
        return Err(format!(
            "entry_point \"{entry_point}\" escapes the pack through a symlink (to {})",
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("entry_point \"{entry_point}\" is not a file"));
    }
    Ok(())
}

fn check_verification(
    doc: &YamlDoc,
    path: &[Seg],
    commands: &[attune_nats::model::VerificationCommand],
    problems: &mut Vec<Problem>,
) {
    for (i, cmd) in commands.iter().enumerate() {
        let at = |k: &str| [path, &[Seg::Idx(i), Seg::key(k)]].concat();
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

fn check_exec_config(
    doc: &YamlDoc,
    path: &[Seg],
    cfg: &attune_nats::ExecutionConfig,
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
        if env.env_type != EnvType::None {
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
        let manifest = Path::new(&deps.manifest_file);
        if manifest.is_absolute()
            || manifest
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
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

#[cfg(test)]
mod tests;
