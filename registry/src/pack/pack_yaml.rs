//! `pack.yaml`: the pack's own ref, version and metadata.
//!
//! Read first, because every other file's ref is checked against the pack ref it declares.

use std::collections::BTreeMap;

use attune_nats::name::{check_name, check_version_name};
use attune_nats::{parse_version, PackMeta};
use serde::Deserialize;
use serde_yaml::Value;

use super::context::Ctx;
use super::locate::Seg;
use super::problem::{name_message, Problem};

/// The fields `pack.yaml` may have; any other is warned about as a likely typo.
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
    "preload",
];

/// Most modules one runtime's `preload` list may name.
const MAX_PRELOAD: usize = 64;

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
    #[serde(default)]
    preload: BTreeMap<String, Vec<String>>,
}

/// Reads `pack.yaml`: the pack ref whenever it can be read (so later checks can still compare
/// against it), and the metadata only if all of it is valid.
pub fn load(ctx: &mut Ctx) -> (Option<String>, Option<PackMeta>) {
    let shown = ctx.shown("pack.yaml");
    let full = ctx.dir.join("pack.yaml");
    // Not `is_file`: a symlink to a device or out of the pack exists, and reading reports it.
    if full.symlink_metadata().is_err() {
        ctx.problems.push(Problem {
            file: shown,
            line: None,
            message: "missing: every pack needs a pack.yaml with ref and version".into(),
        });
        return (None, None);
    }
    let Some(mut doc) = ctx.read(&shown, &full) else {
        return (None, None);
    };
    doc.unknown_keys(&[], PACK_FIELDS, &mut ctx.warnings);
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
        .map_err(|p| ctx.problems.push(p))
    else {
        return (declared, None);
    };
    let declared_by_ref = raw.reference.is_some();
    let Some(reference) = raw.reference.or(raw.name) else {
        ctx.problems
            .push(doc.problem(&[], "ref is missing: name the pack (ref: mypack)"));
        return (None, None);
    };
    let mut ok = true;
    if let Err(e) = check_name(&reference) {
        let field = if declared_by_ref { "ref" } else { "name" };
        ctx.problems
            .push(doc.problem(&[Seg::key(field)], name_message("pack ref", &reference, &e)));
        ok = false;
    }
    if let Err(e) = check_version_name(&raw.version) {
        ctx.problems.push(doc.problem(
            &[Seg::key("version")],
            name_message("pack version", &raw.version, &e),
        ));
        ok = false;
    } else if let Err(e) = parse_version(&raw.version) {
        ctx.problems
            .push(doc.problem(&[Seg::key("version")], format!("invalid pack version: {e}")));
        ok = false;
    }
    for (runtime, modules) in &raw.preload {
        let at = [Seg::key("preload"), Seg::key(runtime)];
        if let Err(e) = check_name(runtime) {
            ctx.problems
                .push(doc.problem(&at, name_message("preload runtime", runtime, &e)));
            ok = false;
        }
        if modules.len() > MAX_PRELOAD {
            ctx.problems.push(doc.problem(
                &at,
                format!(
                    "{} modules to preload: at most {MAX_PRELOAD} per runtime",
                    modules.len()
                ),
            ));
            ok = false;
        }
        for (i, module) in modules.iter().enumerate() {
            if let Err(why) = check_module_name(module) {
                let mut path = at.to_vec();
                path.push(Seg::Idx(i));
                ctx.problems
                    .push(doc.problem(&path, format!("preload {module:?}: {why}")));
                ok = false;
            }
        }
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
        rules: Vec::new(),
        trigger_types: Vec::new(),
        sensor_specs: Vec::new(),
        preload: raw.preload,
        registered_at: None,
    });
    (Some(reference), meta)
}

/// A module a warm interpreter imports by name: a python module path (`xml.etree`) or a node
/// package (`@scope/pkg/sub`). Never a file path: no leading `.` or `/`, no `..`.
fn check_module_name(module: &str) -> Result<(), String> {
    if module.is_empty() || module.len() > 200 {
        return Err("a module name has 1 to 200 characters".into());
    }
    if let Some(c) = module
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-@/".contains(*c)))
    {
        return Err(format!(
            "{c:?} is not allowed in a module name (letters, digits, _ . - @ /)"
        ));
    }
    if module.starts_with(['.', '/', '-']) || module.contains("..") || module.ends_with('/') {
        return Err("a module is named, not given as a path".into());
    }
    Ok(())
}
