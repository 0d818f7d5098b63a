//! Checks shared by actions and sensors (the "runnable" files): ref and name, runtime, entry
//! point, version constraint, and unique refs across the pack.
//!
//! Both kinds name code that a runtime runs, so they obey the same rules; keeping those rules in
//! one place keeps their messages identical too.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use attune_nats::name::check_name;
use attune_nats::version::CONSTRAINT_FORMS;
use attune_nats::{parse_version, Constraint, Runtime};
use serde::de::DeserializeOwned;

use super::context::Ctx;
use super::locate::Seg;
use super::problem::{name_message, Problem};
use super::yaml::YamlDoc;

/// Which kind of runnable file is being loaded; decides its directory and how messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file of `actions/`.
    Action,
    /// A file of `sensors/`.
    Sensor,
    /// A file of `rules/` (not runnable itself: it names an action and a trigger).
    Rule,
    /// A file of `triggers/` (a trigger type; not runnable either).
    Trigger,
}

impl Kind {
    /// The word messages use for this kind.
    fn word(self) -> &'static str {
        match self {
            Kind::Action => "action",
            Kind::Sensor => "sensor",
            Kind::Rule => "rule",
            Kind::Trigger => "trigger",
        }
    }

    /// The pack subdirectory that holds this kind's files and its entry points.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Action => "actions",
            Kind::Sensor => "sensors",
            Kind::Rule => "rules",
            Kind::Trigger => "triggers",
        }
    }

    /// What messages call this kind's name.
    fn name_what(self) -> &'static str {
        match self {
            Kind::Action => "action name",
            Kind::Sensor => "sensor name",
            Kind::Rule => "rule name",
            Kind::Trigger => "trigger name",
        }
    }
}

/// The fields actions and sensors share, as the file wrote them.
pub struct Runnable {
    /// `ref`: `<pack>.<name>`, optional when `name` is given.
    pub reference: Option<String>,
    /// `name`: optional when `ref` is given.
    pub name: Option<String>,
    /// `runner_type`: a runtime name or alias.
    pub runner_type: Option<String>,
    /// `entry_point`: a file under the kind's directory.
    pub entry_point: Option<String>,
    /// `runtime_version`: a constraint on the runtime's versions.
    pub runtime_version: Option<String>,
}

/// The shared fields once every check passed, in registered form.
pub struct Resolved {
    /// `<pack>.<name>`.
    pub reference: String,
    /// The name within the pack.
    pub name: String,
    /// The `runner_type` as written.
    pub runner_type: String,
    /// The name of the runtime `runner_type` resolved to.
    pub runtime: String,
    /// The entry point, relative to the kind's directory.
    pub entry_point: String,
    /// The constraint, if one was given and is not blank.
    pub runtime_version: Option<String>,
}

/// Reads an action or sensor file: warns about unknown fields, keeps an unquoted
/// `runtime_version` as written, and deserialises it.
pub fn read_runnable<T: DeserializeOwned>(
    ctx: &mut Ctx,
    shown: &Path,
    full: &Path,
    fields: &[&str],
) -> Option<(YamlDoc, T)> {
    let doc = ctx.read(shown, full)?;
    doc.unknown_keys(&[], fields, &mut ctx.warnings);
    let mut value = doc.value.clone();
    doc.versions_as_written(&mut value, &[Seg::key("runtime_version")]);
    let raw = doc
        .typed(&[], value)
        .map_err(|p| ctx.problems.push(p))
        .ok()?;
    Some((doc, raw))
}

/// Checks name and ref, runtime, entry point and constraint, recording every problem; `Some`
/// only when all of them pass.
pub fn check_runnable(
    ctx: &mut Ctx,
    doc: &YamlDoc,
    kind: Kind,
    pack_ref: &str,
    fields: Runnable,
    catalog: &[&Runtime],
) -> Option<Resolved> {
    let before = ctx.problems.len();
    let name = check_runnable_name(ctx, doc, kind, pack_ref, &fields);
    let runtime = find_runtime(ctx, doc, fields.runner_type.as_deref(), catalog);
    match &fields.entry_point {
        None => ctx
            .problems
            .push(doc.problem(&[], "entry_point is missing")),
        Some(ep) => {
            if let Err(e) = check_entry_point(&ctx.dir, kind.dir(), ep) {
                ctx.problems
                    .push(doc.problem(&[Seg::key("entry_point")], e.to_string()));
            }
        }
    }
    if let Some(c) = &fields.runtime_version {
        check_constraint(ctx, doc, c, runtime);
    }
    if ctx.problems.len() != before {
        return None;
    }
    Some(Resolved {
        reference: format!("{pack_ref}.{}", name.as_ref()?),
        name: name?,
        runner_type: fields.runner_type?,
        runtime: runtime?.name.clone(),
        entry_point: fields.entry_point?,
        runtime_version: fields.runtime_version.filter(|c| !c.trim().is_empty()),
    })
}

/// The name within the pack, from `name` or from a `ref` that must be `<pack>.<name>`; it must
/// pass [`check_name`].
fn check_runnable_name(
    ctx: &mut Ctx,
    doc: &YamlDoc,
    kind: Kind,
    pack_ref: &str,
    fields: &Runnable,
) -> Option<String> {
    let name = fields.name.as_deref();
    let found = match (fields.reference.as_deref(), name) {
        (Some(r), n) => match r.split_once('.') {
            Some((p, n2)) if p == pack_ref && n.is_none_or(|n| n == n2) => Some(n2.to_string()),
            _ => {
                ctx.problems.push(doc.problem(
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
            ctx.problems
                .push(doc.problem(&[], format!("{} needs a ref or a name", kind.word())));
            None
        }
    };
    if let Some(n) = &found {
        if let Err(e) = check_name(n) {
            let field = if fields.name.is_some() { "name" } else { "ref" };
            ctx.problems
                .push(doc.problem(&[Seg::key(field)], name_message(kind.name_what(), n, &e)));
            return None;
        }
    }
    found
}

/// The runtime `runner_type` names among those this pack may use; an unknown one is reported
/// with the list of known names.
fn find_runtime<'r>(
    ctx: &mut Ctx,
    doc: &YamlDoc,
    runner_type: Option<&str>,
    catalog: &[&'r Runtime],
) -> Option<&'r Runtime> {
    let Some(rt_name) = runner_type else {
        ctx.problems
            .push(doc.problem(&[], "runner_type is missing (python, node, shell, …)"));
        return None;
    };
    if let Some(rt) = catalog.iter().find(|r| r.answers_to(rt_name)) {
        return Some(*rt);
    }
    let mut known: Vec<&str> = catalog
        .iter()
        .flat_map(|r| runtime_names(r))
        .map(String::as_str)
        .collect();
    known.sort();
    known.dedup();
    ctx.problems.push(doc.problem(
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

/// A `runtime_version` must parse; against a known runtime, it must be satisfiable (an error
/// for a runtime without versions, a warning when no registered version matches).
fn check_constraint(ctx: &mut Ctx, doc: &YamlDoc, c: &str, runtime: Option<&Runtime>) {
    let at = [Seg::key("runtime_version")];
    let parsed = match Constraint::parse(c) {
        Ok(parsed) => parsed,
        Err(e) => {
            // The accepted forms ride along, so the author sees the grammar where the mistake is.
            ctx.problems
                .push(doc.problem(&at, format!("runtime_version {e}; {CONSTRAINT_FORMS}")));
            return;
        }
    };
    let Some(rt) = runtime else {
        return;
    };
    if rt.is_versionless() && !parsed.is_any() {
        ctx.problems.push(doc.problem(
            &at,
            format!(
                "runtime \"{}\" has no versions, so runtime_version \"{c}\" cannot be satisfied: remove it",
                rt.name
            ),
        ));
    } else if !rt.is_versionless()
        && !rt
            .versions
            .iter()
            .any(|v| parse_version(&v.version).is_ok_and(|pv| parsed.matches(&pv)))
    {
        let names: Vec<&str> = rt.versions.iter().map(|v| v.version.as_str()).collect();
        ctx.warnings.push(doc.problem(
            &at,
            format!(
                "runtime_version \"{c}\" matches none of the registered {} versions ({})",
                rt.name,
                names.join(", ")
            ),
        ));
    }
}

/// The names a runtime answers to: its name, then its aliases.
pub fn runtime_names(rt: &Runtime) -> impl Iterator<Item = &String> {
    std::iter::once(&rt.name).chain(&rt.aliases)
}

/// Keeps the first definition of each ref and reports every later one as a duplicate.
pub fn unique_refs<T>(
    ctx: &mut Ctx,
    kind: Kind,
    loaded: Vec<(PathBuf, T)>,
    reference: impl Fn(&T) -> &String,
) -> Vec<T> {
    let mut first_file: HashMap<String, PathBuf> = HashMap::new();
    let mut kept = Vec::new();
    for (shown, item) in loaded {
        let r = reference(&item).clone();
        if let Some(first) = first_file.get(&r) {
            ctx.problems.push(Problem {
                file: shown,
                line: Some(1),
                message: format!(
                    "duplicate {} ref \"{r}\" (also defined in {})",
                    kind.word(),
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

/// How a path written in a pack file would leave the pack before any file is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// It is absolute.
    Absolute,
    /// It climbs with `..`.
    ParentDir,
}

/// Whether `path`, meant to be relative to a directory of the pack, leaves it by its text alone
/// (symlinks need the file system: see [`check_entry_point`]).
pub fn escape(path: &Path) -> Option<Escape> {
    if path.is_absolute() {
        Some(Escape::Absolute)
    } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
        Some(Escape::ParentDir)
    } else {
        None
    }
}

/// Why an entry point cannot be run; displays as the message the pack author sees.
#[derive(Debug, thiserror::Error)]
pub enum EntryPointError {
    /// Blank.
    #[error("entry_point is empty")]
    Empty,
    /// An absolute path.
    #[error("entry_point \"{entry_point}\" is absolute: give a path relative to {sub}/")]
    Absolute {
        /// As written.
        entry_point: String,
        /// The directory it should be relative to.
        sub: &'static str,
    },
    /// Contains `..`.
    #[error("entry_point \"{0}\" escapes the pack (\"..\" is not allowed)")]
    ParentDir(String),
    /// No file there.
    #[error("entry_point \"{entry_point}\" does not exist (looked for {})", .looked.display())]
    Missing {
        /// As written.
        entry_point: String,
        /// Where it was looked for.
        looked: PathBuf,
    },
    /// The file or the pack directory cannot be canonicalised.
    #[error("entry_point \"{entry_point}\" cannot be resolved")]
    Unresolvable {
        /// As written.
        entry_point: String,
        /// Why resolving failed.
        #[source]
        source: std::io::Error,
    },
    /// A symlink on the way leads outside the pack.
    #[error("entry_point \"{entry_point}\" escapes the pack through a symlink (to {})", .target.display())]
    Symlink {
        /// As written.
        entry_point: String,
        /// Where it really leads.
        target: PathBuf,
    },
    /// It exists but is a directory or other non-file.
    #[error("entry_point \"{0}\" is not a file")]
    NotAFile(String),
}

/// The entry point must be a relative path to an existing file under `<pack>/<sub>/`, and must not
/// leave it, neither by `..` nor through a symlink.
pub fn check_entry_point(
    pack_dir: &Path,
    sub: &'static str,
    entry_point: &str,
) -> Result<(), EntryPointError> {
    let ep = Path::new(entry_point);
    if entry_point.trim().is_empty() {
        return Err(EntryPointError::Empty);
    }
    match escape(ep) {
        Some(Escape::Absolute) => {
            return Err(EntryPointError::Absolute {
                entry_point: entry_point.to_string(),
                sub,
            })
        }
        Some(Escape::ParentDir) => return Err(EntryPointError::ParentDir(entry_point.to_string())),
        None => {}
    }
    let file = pack_dir.join(sub).join(ep);
    if !file.exists() {
        return Err(EntryPointError::Missing {
            entry_point: entry_point.to_string(),
            looked: file,
        });
    }
    let resolve = |p: &Path| {
        p.canonicalize()
            .map_err(|source| EntryPointError::Unresolvable {
                entry_point: entry_point.to_string(),
                source,
            })
    };
    let real = resolve(&file)?;
    let root = resolve(pack_dir)?;
    if !real.starts_with(&root) {
        return Err(EntryPointError::Symlink {
            entry_point: entry_point.to_string(),
            target: real,
        });
    }
    if !real.is_file() {
        return Err(EntryPointError::NotAFile(entry_point.to_string()));
    }
    Ok(())
}
