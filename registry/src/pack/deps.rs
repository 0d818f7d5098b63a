//! Dependency manifests a pack ships that nothing will install: a warning, not an error.
//!
//! A pack's `requirements.txt` or `package.json` is installed into each environment of the
//! runtime versions its actions use, when those versions say how (`dependencies` with an
//! `install_command`, and an `environment` to install into). When they do not, the pack loads and
//! runs, but every `import` / `require` of those dependencies fails at run time: exactly the
//! surprise this check turns into a warning at load time, naming the manifest and why.

use std::collections::BTreeMap;

use attune_nats::version::{parse_version, Constraint};
use attune_nats::{Runtime, RuntimeVersion};

use super::context::Ctx;
use super::problem::Problem;

/// One runnable (action or sensor) as this check sees it: its runtime and constraint.
pub struct Uses<'a> {
    /// The runtime's canonical name.
    pub runtime: &'a str,
    /// The constraint, if any.
    pub constraint: Option<&'a str>,
}

/// Whether a version can install its manifest: an install command and an environment.
fn installs(v: &RuntimeVersion) -> bool {
    v.execution_config.as_ref().is_some_and(|c| {
        let env = c
            .environment
            .as_ref()
            .is_some_and(|e| e.env_type != attune_nats::model::EnvType::None);
        let cmd = c
            .dependencies
            .as_ref()
            .is_some_and(|d| !d.install_command.is_empty());
        env && cmd
    })
}

/// Warns about every manifest in the pack that a runtime in `catalog` names, when no version the
/// pack's runnables can use installs it.
pub fn check(ctx: &mut Ctx, uses: &[Uses<'_>], catalog: &[&Runtime]) {
    // Manifest file → the versions (runtime name, version, installs?) that name it and that
    // some runnable of this pack can use.
    let mut claimed: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    let mut known: Vec<String> = Vec::new();
    for rt in catalog {
        for v in &rt.versions {
            let Some(manifest) = v
                .execution_config
                .as_ref()
                .and_then(|c| c.dependencies.as_ref())
                .map(|d| d.manifest_file.clone())
            else {
                continue;
            };
            if !known.contains(&manifest) {
                known.push(manifest.clone());
            }
            let usable = uses.iter().any(|u| {
                u.runtime == rt.name
                    && Constraint::parse_optional(u.constraint).is_ok_and(|c| {
                        c.is_any() || parse_version(&v.version).is_ok_and(|p| c.matches(&p))
                    })
            });
            if usable {
                claimed.entry(manifest).or_default().push((
                    rt.name.clone(),
                    v.version.clone(),
                    installs(v),
                ));
            }
        }
    }
    let mut used: Vec<&str> = uses.iter().map(|u| u.runtime).collect();
    used.sort_unstable();
    used.dedup();
    for manifest in known {
        if !ctx.dir.join(&manifest).is_file() {
            continue;
        }
        let message = match claimed.get(&manifest) {
            None => format!(
                "no runtime this pack's actions use installs {manifest} (they use: {}); it is \
                 ignored",
                if used.is_empty() {
                    "none".to_string()
                } else {
                    used.join(", ")
                }
            ),
            Some(versions) => {
                let cannot: Vec<String> = versions
                    .iter()
                    .filter(|(_, _, ok)| !ok)
                    .map(|(r, v, _)| format!("{r} {v}"))
                    .collect();
                if cannot.is_empty() {
                    continue;
                }
                format!(
                    "the pack declares dependencies that {} cannot install (no environment or \
                     no install_command in its runtime definition): actions running there will \
                     not find them",
                    cannot.join(", ")
                )
            }
        };
        ctx.warnings.push(Problem {
            file: ctx.shown(&manifest),
            line: None,
            message,
        });
    }
}
