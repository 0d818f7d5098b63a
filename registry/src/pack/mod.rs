//! Pack loading: a pack directory read into the registered model, strictly.
//!
//! A pack is accepted whole or rejected whole. Every problem is collected (not just the first) and
//! reported as `file:line: message`, so an author fixes a pack in one round trip. Loading reads
//! files only: it never touches the store, so a rejected pack cannot change what was registered.
//! The format itself is described in `docs/pack-format.md`.
//!
//! # Layout
//! - `mod.rs`: the public API ([`discover`], [`load_pack`], [`LoadedPack`]) and the order of one
//!   load: `pack.yaml`, runtimes, actions, sensors, rules.
//! - `problem.rs`: what a load reports ([`Problem`], [`PackErrors`]); imports no sibling.
//! - `locate.rs`: YAML path → line, for messages about fields serde does not locate.
//! - `yaml.rs`: one parsed file, read within bounds (regular file inside the pack, size cap,
//!   bounded alias expansion), and the helpers that turn its problems into [`Problem`]s.
//! - `context.rs`: the state of one load (pack directory, problems, warnings) and file listing.
//! - `deps.rs`: warnings for dependency manifests no runtime the pack uses will install.
//! - `pack_yaml.rs`: `pack.yaml`, the pack's ref and metadata.
//! - `runtimes.rs`: runtime files, their versions, execution configs and verification commands.
//! - `checks.rs`: rules actions and sensors share (ref and name, runtime, entry point, constraint)
//!   and unique refs.
//! - `actions.rs`: action files: parameters, output schema, formats, timeout, retry.
//! - `params.rs`: the two parameter styles normalised to JSON Schema, and schema checks.
//! - `triggers.rs`: trigger types (`triggers/*.yaml` and sensors' `trigger_types`) with their
//!   payload schemas.
//! - `sensors.rs`: sensor files and the triggers they fire.
//! - `rules.rs`: rule files (StackStorm's format), checked with the registry's rule compiler.

mod actions;
mod checks;
mod context;
mod deps;
pub mod locate;
mod pack_yaml;
pub mod params;
mod problem;
mod rules;
mod runtimes;
mod sensors;
mod triggers;
pub mod yaml;

pub use problem::{PackErrors, Problem};

use std::path::{Path, PathBuf};

use attune_nats::{Action, PackMeta, Rule, Runtime, Sensor, TriggerType};

use checks::{unique_refs, Kind};
use context::Ctx;

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
    /// Its trigger types (declared, or listed by a sensor), by name.
    pub triggers: Vec<TriggerType>,
    /// Its rules.
    pub rules: Vec<Rule>,
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
        if has_pack_yaml(path) {
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
            .filter(|p| has_pack_yaml(p))
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

/// Whether `dir` has a `pack.yaml` entry of any kind: one that is a symlink or special file is
/// still a pack, which loading then rejects with the reason.
fn has_pack_yaml(dir: &Path) -> bool {
    dir.join("pack.yaml").symlink_metadata().is_ok()
}

/// Loads the pack in `dir`. `registered` are the runtimes other packs registered before (those
/// of this same pack are ignored: a re-registration replaces them).
pub fn load_pack(dir: &Path, registered: &[Runtime]) -> Result<LoadedPack, PackErrors> {
    let mut ctx = Ctx::new(dir);
    let (pack_ref, meta) = pack_yaml::load(&mut ctx);
    // With no readable ref, checks that compare refs against the pack would only add noise.
    let pack_ref = pack_ref.unwrap_or_default();

    let mut runtimes = Vec::new();
    for (shown, full) in ctx.yaml_files("runtimes") {
        if let Some(rt) = runtimes::load(&mut ctx, &shown, &full, &pack_ref) {
            runtimes.push(rt);
        }
    }
    runtimes::check_names(&mut ctx, &runtimes, registered, &pack_ref);

    let mut catalog: Vec<&Runtime> = runtimes.iter().collect();
    catalog.extend(registered.iter().filter(|r| r.pack != pack_ref));

    let mut loaded = Vec::new();
    for (shown, full) in ctx.yaml_files(Kind::Action.dir()) {
        if let Some(action) = actions::load(&mut ctx, &shown, &full, &pack_ref, &catalog) {
            loaded.push((shown, action));
        }
    }
    let actions = unique_refs(&mut ctx, Kind::Action, loaded, |a| &a.reference);

    let mut declared = triggers::Declared::default();
    for (shown, full) in ctx.yaml_files(Kind::Trigger.dir()) {
        triggers::load(&mut ctx, &shown, &full, &pack_ref, &mut declared);
    }
    let mut loaded = Vec::new();
    for (shown, full) in ctx.yaml_files(Kind::Sensor.dir()) {
        if let Some(sensor) =
            sensors::load(&mut ctx, &shown, &full, &pack_ref, &catalog, &mut declared)
        {
            loaded.push((shown, sensor));
        }
    }
    let sensors = unique_refs(&mut ctx, Kind::Sensor, loaded, |s| &s.reference);
    let trigger_types = declared.finish(
        &pack_ref,
        sensors
            .iter()
            .flat_map(|s| s.triggers.iter().map(String::as_str)),
    );

    let offered = rules::Offered {
        triggers: trigger_types.iter().map(|t| t.name.as_str()).collect(),
        actions: actions.iter().map(|a| a.reference.as_str()).collect(),
        complete: ctx.problems.is_empty(),
    };
    let mut loaded = Vec::new();
    for (shown, full) in ctx.yaml_files(Kind::Rule.dir()) {
        if let Some(rule) = rules::load(&mut ctx, &shown, &full, &pack_ref, &offered) {
            loaded.push((shown, rule));
        }
    }
    drop(offered);
    let rules = unique_refs(&mut ctx, Kind::Rule, loaded, |r| &r.reference);

    let uses: Vec<deps::Uses<'_>> = actions
        .iter()
        .map(|a| deps::Uses {
            runtime: &a.runtime,
            constraint: a.runtime_version.as_deref(),
        })
        .chain(sensors.iter().map(|s| deps::Uses {
            runtime: &s.runtime,
            constraint: s.runtime_version.as_deref(),
        }))
        .collect();
    deps::check(&mut ctx, &uses, &catalog);

    match meta {
        Some(mut meta) if ctx.problems.is_empty() => {
            meta.runtimes = runtimes.iter().map(|r| r.name.clone()).collect();
            meta.actions = actions.iter().map(|a| a.reference.clone()).collect();
            meta.sensors = sensors.iter().map(|s| s.reference.clone()).collect();
            meta.rules = rules.iter().map(|r| r.reference.clone()).collect();
            meta.trigger_types = trigger_types.clone();
            meta.sensor_specs = sensors.clone();
            Ok(LoadedPack {
                dir: dir.to_path_buf(),
                meta,
                runtimes,
                actions,
                sensors,
                triggers: trigger_types,
                rules,
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

#[cfg(test)]
mod tests;
