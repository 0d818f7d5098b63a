//! Runtime versions, version constraints, and best-version selection (docs/versions.md).
//!
//! Everything that decides "which interpreter version runs this action" lives here, so the
//! registry's router, the CLI's `resolve`, and the runner's request check cannot disagree.
//!
//! The rules:
//! - a version parses leniently: trimmed, a leading `v` dropped, missing parts are zero
//!   (`3.12` → 3.12.0), pre-releases and build metadata allowed;
//! - a constraint is what node and python users already write: npm ranges (`>=18 <21`,
//!   `18 - 20`, `^20`, `3.x`, `a || b`) and PEP 440 specifiers (`~=3.11`, `==3.12.*`,
//!   `!=3.12.1`), read by one grammar ([`grammar`]); a bare version is a tilde range of what was
//!   written (`3.12` → `~3.12`); empty or `*` means any;
//! - selection picks, among available and enabled versions, the highest that matches a constraint,
//!   or without one the default if it can be used, else the highest stable version.

mod grammar;

use std::fmt;

use semver::Version;
use serde::{Deserialize, Serialize};

/// The name of the single implicit version of a runtime that declares no `versions` list.
pub const IMPLICIT_VERSION: &str = "default";

/// Why a version or constraint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string is not a version, even with missing parts filled in.
    #[error("\"{input}\" is not a valid version: {reason}")]
    InvalidVersion {
        /// What was written.
        input: String,
        /// The semver crate's explanation.
        reason: String,
    },
    /// The string is not a constraint.
    #[error(
        "\"{input}\" is not a valid constraint: at column {column}, {reason}{}",
        suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
    )]
    InvalidConstraint {
        /// What was written (trimmed).
        input: String,
        /// The 1-based column, in characters of `input`, where the problem starts.
        column: usize,
        /// What was expected there, or what is wrong.
        reason: String,
        /// The whole constraint spelled the nearest valid way, when there is an obvious one.
        suggestion: Option<String>,
    },
}

/// The accepted forms in one line, for messages about a bad constraint: the reader learns the
/// grammar where the mistake is reported, and where the full table is.
pub const CONSTRAINT_FORMS: &str = "accepted forms: >=3.12 <4 or >=3.12,<4 (AND), a || b (OR), \
    3.12 (= ~3.12), ~3.12, ^20, 3.x, 18 - 20, =3.12, ~=3.11, ==3.12.*, !=3.12.1; \
    the table is in docs/pack-format.md (Version constraints)";

/// Strips whitespace and one leading `v`/`V`, as every version string allows.
fn strip_v(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix(['v', 'V']).unwrap_or(s).trim_start()
}

/// Parses a version leniently: `v3.12` → 3.12.0, `20` → 20.0.0, `3.14.0-rc.1` keeps its pre-release.
pub fn parse_version(input: &str) -> Result<Version, VersionError> {
    let invalid = |reason: String| VersionError::InvalidVersion {
        input: input.to_string(),
        reason,
    };
    let s = strip_v(input);
    if s.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    // Split off pre-release / build suffixes so only the numeric core is padded.
    let core_end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, suffix) = s.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(invalid("it has more than three numeric parts".into()));
    }
    if let Some(bad) = parts
        .iter()
        .find(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!("\"{bad}\" is not a number")));
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    padded.push_str(suffix);
    Version::parse(&padded).map_err(|e| invalid(e.to_string()))
}

/// The version an interpreter reports about itself (`3.12.1`, `v20.11.0`, `3.13.0rc1`), as semver.
///
/// Interpreters do not all speak semver: CPython prints PEP 440 versions, where a pre-release is
/// glued to the release (`3.13.0rc1`, `3.13.0a2`, `3.14.0b1`, `3.12.0.dev3`) and a development
/// build may end in `+`. Those map to semver pre-releases (`3.13.0-rc1`, `3.13.0-a2`,
/// `3.14.0-b1`, `3.12.0-dev3`), a post-release to build metadata (`3.12.0.post1` →
/// `3.12.0+post1`), and semver suffixes (`-rc.1`, `+build`) are kept as they are. Nothing is cut:
/// a pre-release stays a pre-release, so `runtime list` and replies can say so.
pub fn parse_reported(input: &str) -> Result<Version, VersionError> {
    let invalid = |reason: &str| VersionError::InvalidVersion {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = strip_v(input).trim_end_matches('+');
    let core_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    // A dot before a PEP 440 suffix (`3.12.0.dev3`) belongs to the suffix.
    let core = s[..core_end].trim_end_matches('.');
    let rest = &s[core.len()..];
    if rest.is_empty() || rest.starts_with(['-', '+']) {
        return parse_version(s);
    }
    let suffix = rest.trim_start_matches(['.', '_']);
    let (label, tail) = suffix.split_at(
        suffix
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(suffix.len()),
    );
    let number_end = tail
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(tail.len());
    let (number, after) = tail.split_at(number_end);
    let label = match label.to_ascii_lowercase().as_str() {
        "a" | "alpha" => "a",
        "b" | "beta" => "b",
        "rc" | "c" | "pre" | "preview" => "rc",
        "dev" => "dev",
        "post" | "r" | "rev" => "post",
        _ => {
            return Err(invalid(
                "its suffix is neither semver nor a PEP 440 pre-, post- or dev-release",
            ))
        }
    };
    let number = if number.is_empty() { "0" } else { number };
    let separator = if label == "post" { '+' } else { '-' };
    let mapped = format!("{core}{separator}{label}{number}{after}");
    parse_version(&mapped).map_err(|_| invalid("its suffix does not map to semver"))
}

/// Whether an interpreter that reports `detected` really is the registered version `registered`.
///
/// The registered version is read as a bare constraint reads it, a tilde range of what was
/// written (`3.12` accepts 3.12.x, not 3.11.7 or 3.13.0; `20` accepts 20.x). The comparison is on
/// the release (`major.minor.patch`): a pre-release of a release inside the range serves it
/// (`3.13.0rc1` verifies `3.13`), since that is the interpreter installed for that minor. A
/// registered version that is itself a pre-release (`3.14.0-rc1`) must be matched exactly on its
/// release and pre-release.
pub fn reported_serves(registered: &str, detected: &Version) -> bool {
    let Ok(reg) = parse_version(registered) else {
        return false;
    };
    if !reg.pre.is_empty() {
        return reg.major == detected.major
            && reg.minor == detected.minor
            && reg.patch == detected.patch
            && reg.pre == detected.pre;
    }
    let release = Version::new(detected.major, detected.minor, detected.patch);
    Constraint::parse(registered).is_ok_and(|c| c.matches(&release))
}

/// A parsed version constraint: an OR of AND-ed version bounds.
///
/// Kept together with the text the user wrote, because every message about a constraint should
/// quote it exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The constraint as written (trimmed).
    text: String,
    /// The alternatives; empty means "any version".
    alternatives: Vec<grammar::Alternative>,
}

impl Constraint {
    /// Whether a registered version, as its subject spells it, satisfies this constraint. The
    /// implicit version of a versionless runtime satisfies only "any".
    pub fn accepts(&self, version: &str) -> bool {
        if version == IMPLICIT_VERSION {
            return self.is_any();
        }
        parse_version(version).is_ok_and(|v| self.matches(&v))
    }

    /// The constraint that every version satisfies.
    pub fn any() -> Self {
        Constraint {
            text: String::new(),
            alternatives: Vec::new(),
        }
    }

    /// Parses a constraint as npm or PEP 440 would read it (`>=3.12 <4`, `>=3.11,!=3.12.1`,
    /// `~3.11 || ~3.13`, `18 - 20`, `~=3.11`, `==3.12.*`), with our bare-version rule (`3.12`
    /// → `~3.12`); empty, `*` or an empty alternative means any. The grammar is in
    /// docs/pack-format.md.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let text = input.trim().to_string();
        match grammar::parse(&text) {
            Ok(alternatives) => Ok(Constraint { text, alternatives }),
            Err(e) => Err(VersionError::InvalidConstraint {
                column: text[..e.offset].chars().count() + 1,
                input: text,
                reason: e.reason,
                suggestion: e.suggestion,
            }),
        }
    }

    /// Parses an optional constraint; `None` means any version.
    pub fn parse_optional(input: Option<&str>) -> Result<Self, VersionError> {
        input.map_or_else(|| Ok(Self::any()), Self::parse)
    }

    /// True when this constraint accepts every version (nothing or `*` was written).
    pub fn is_any(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// The constraint as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `version` satisfies the constraint.
    ///
    /// "Any" accepts every version, pre-releases included; otherwise a pre-release matches only
    /// an alternative with a comparator that names a pre-release of the same major.minor.patch
    /// (npm's rule).
    pub fn matches(&self, version: &Version) -> bool {
        self.is_any() || self.alternatives.iter().any(|req| req.matches(version))
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.text.is_empty() {
            "*"
        } else {
            &self.text
        })
    }
}

/// One registered version of a runtime, as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The version's name as registered (`3.12`); also its subject token.
    pub name: String,
    /// The parsed version; `None` for the implicit `default` version of a version-less runtime.
    pub version: Option<Version>,
    /// Whether the runtime marks this as its default.
    pub is_default: bool,
    /// Whether an operator has left it enabled.
    pub enabled: bool,
    /// Whether at least one live runner has verified it.
    pub available: bool,
}

impl Candidate {
    /// Builds a candidate from a registered version name, parsing it leniently.
    pub fn new(name: &str, is_default: bool, enabled: bool, available: bool) -> Self {
        let version = if name == IMPLICIT_VERSION {
            None
        } else {
            parse_version(name).ok()
        };
        Candidate {
            name: name.to_string(),
            version,
            is_default,
            enabled,
            available,
        }
    }

    /// Whether this version can take work right now.
    pub fn usable(&self) -> bool {
        self.enabled && self.available
    }
}

/// Why a candidate was or was not chosen; what `attune resolve` shows per version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// This is the version that runs.
    Chosen,
    /// No live runner has verified it.
    NotAvailable,
    /// An operator disabled it.
    Disabled,
    /// It does not satisfy the action's constraint.
    DoesNotSatisfy,
    /// It satisfies the constraint, but a higher one does too.
    NotHighest,
    /// No constraint was given and the runtime's default was chosen instead.
    NotDefault,
}

impl Verdict {
    /// A short human explanation of the verdict.
    pub fn explain(self) -> &'static str {
        match self {
            Verdict::Chosen => "chosen",
            Verdict::NotAvailable => "no live runner has verified it",
            Verdict::Disabled => "disabled by an operator",
            Verdict::DoesNotSatisfy => "does not satisfy the constraint",
            Verdict::NotHighest => "a higher matching version is available",
            Verdict::NotDefault => "no constraint: the default is preferred",
        }
    }
}

/// The outcome of a successful selection, with the reasoning for every candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The chosen version's name.
    pub chosen: String,
    /// Every registered version with its verdict, in registration order.
    pub verdicts: Vec<(String, Verdict)>,
    /// One sentence on why the chosen version won.
    pub reason: String,
}

/// No usable version satisfies the request. The message names the runtime, the constraint, and the
/// registered and available versions, so the user can see at once what is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NoMatch {
    /// The complete, user-facing message.
    pub message: String,
    /// Every registered version with its verdict.
    pub verdicts: Vec<(String, Verdict)>,
}

/// Chooses the version of `runtime` to run under `constraint` (docs/versions.md).
///
/// With a constraint: the highest usable version that satisfies it. Without one: the default if it
/// is usable, else the highest usable stable version, else the highest usable pre-release.
pub fn select(
    runtime: &str,
    candidates: &[Candidate],
    constraint: &Constraint,
) -> Result<Selection, NoMatch> {
    let satisfies = |c: &Candidate| match &c.version {
        Some(v) => constraint.matches(v),
        // The implicit version of a version-less runtime takes no constraint.
        None => constraint.is_any(),
    };
    let usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.usable() && satisfies(c))
        .collect();

    let default = usable.iter().find(|c| c.is_default).copied();
    let chosen = match (constraint.is_any(), default) {
        (true, Some(d)) => Some(d),
        _ => usable.iter().copied().max_by(|a, b| rank(a).cmp(&rank(b))),
    };

    let verdicts: Vec<(String, Verdict)> = candidates
        .iter()
        .map(|c| {
            let verdict = if !satisfies(c) {
                Verdict::DoesNotSatisfy
            } else if !c.enabled {
                Verdict::Disabled
            } else if !c.available {
                Verdict::NotAvailable
            } else if chosen.is_some_and(|ch| ch.name == c.name) {
                Verdict::Chosen
            } else if constraint.is_any() && default.is_some() {
                Verdict::NotDefault
            } else {
                Verdict::NotHighest
            };
            (c.name.clone(), verdict)
        })
        .collect();

    match chosen {
        Some(c) => {
            let reason = if constraint.is_any() && c.is_default {
                format!("no constraint; {} is the default and available", c.name)
            } else if constraint.is_any() {
                format!(
                    "no constraint and the default is not available; {} is the highest available",
                    c.name
                )
            } else {
                format!(
                    "{} is the highest available version satisfying \"{}\"",
                    c.name, constraint
                )
            };
            Ok(Selection {
                chosen: c.name.clone(),
                verdicts,
                reason,
            })
        }
        None => Err(NoMatch {
            message: no_match_message(runtime, candidates, constraint),
            verdicts,
        }),
    }
}

/// Orders candidates for "highest": stable releases above pre-releases, then by version.
fn rank(c: &Candidate) -> (bool, Option<&Version>) {
    (
        c.version.as_ref().is_some_and(|v| v.pre.is_empty()),
        c.version.as_ref(),
    )
}

fn no_match_message(runtime: &str, candidates: &[Candidate], constraint: &Constraint) -> String {
    let list = |pred: &dyn Fn(&Candidate) -> bool| {
        let names: Vec<&str> = candidates
            .iter()
            .filter(|c| pred(c))
            .map(|c| c.name.as_str())
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let registered = list(&|_| true);
    let available = list(&|c| c.usable());
    let disabled: Vec<&str> = candidates
        .iter()
        .filter(|c| !c.enabled)
        .map(|c| c.name.as_str())
        .collect();
    let what = if constraint.is_any() {
        format!("no available {runtime} version")
    } else {
        format!("no available {runtime} version satisfies \"{constraint}\"")
    };
    let mut msg = format!("{what} (registered: {registered}; available: {available}");
    if !disabled.is_empty() {
        msg.push_str(&format!("; disabled: {}", disabled.join(", ")));
    }
    msg.push(')');
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_version(s).unwrap()
    }
    fn c(s: &str) -> Constraint {
        Constraint::parse(s).unwrap()
    }
    fn ok(constraint: &str, version: &str) -> bool {
        c(constraint).matches(&v(version))
    }
    fn cand(name: &str, default: bool) -> Candidate {
        Candidate::new(name, default, true, true)
    }
    fn python() -> Vec<Candidate> {
        vec![cand("3.11", false), cand("3.12", true), cand("3.13", false)]
    }
    fn pick(cands: &[Candidate], constraint: &str) -> Result<String, String> {
        select("python", cands, &c(constraint))
            .map(|s| s.chosen)
            .map_err(|e| e.message)
    }

    // --- version parsing ---
    #[test]
    fn version_pads_missing_parts() {
        assert_eq!(v("3.12"), Version::new(3, 12, 0));
        assert_eq!(v("20"), Version::new(20, 0, 0));
        assert_eq!(v("3.12.1"), Version::new(3, 12, 1));
    }
    #[test]
    fn version_trims_and_drops_leading_v() {
        assert_eq!(v("  v3.12 "), Version::new(3, 12, 0));
        assert_eq!(v("V20.1"), Version::new(20, 1, 0));
    }
    #[test]
    fn version_keeps_prerelease_and_build() {
        let p = v("3.14.0-rc.1");
        assert_eq!(p.pre.as_str(), "rc.1");
        let partial = v("3.14-beta");
        assert_eq!((partial.minor, partial.pre.as_str()), (14, "beta"));
        assert_eq!(v("1.2.3+build.5").build.as_str(), "build.5");
    }
    #[test]
    fn version_rejects_garbage() {
        for bad in ["", "v", "banana", "3..12", "3.12.1.4", "3.x", "-1", "3.12a"] {
            assert!(parse_version(bad).is_err(), "{bad:?} should be rejected");
        }
    }
    #[test]
    fn version_error_quotes_input() {
        let e = parse_version("3.twelve").unwrap_err().to_string();
        assert!(e.contains("\"3.twelve\"") && e.contains("twelve"), "{e}");
    }

    // --- versions interpreters report ---
    #[test]
    fn reported_versions_map_pep_440_to_semver_and_keep_everything() {
        for (reported, semver) in [
            ("3.12.1", "3.12.1"),
            ("v20.11.0", "20.11.0"),
            ("3.13.0rc1", "3.13.0-rc1"),
            ("3.13.0a2", "3.13.0-a2"),
            ("3.14.0b1", "3.14.0-b1"),
            ("3.13.0a2+", "3.13.0-a2"),
            ("3.12.0.dev3", "3.12.0-dev3"),
            ("3.12.0.post1", "3.12.0+post1"),
            ("3.13.0-rc.1", "3.13.0-rc.1"),
            ("3.12.1+local", "3.12.1+local"),
            ("1.22", "1.22.0"),
        ] {
            assert_eq!(
                parse_reported(reported).unwrap().to_string(),
                semver,
                "{reported}"
            );
        }
        assert!(parse_reported("3.12.1xyz").is_err());
        assert!(parse_reported("three").is_err());
    }
    #[test]
    fn a_reported_version_serves_the_tilde_of_the_registered_one() {
        let serves = |reg: &str, det: &str| reported_serves(reg, &parse_reported(det).unwrap());
        assert!(serves("3.12", "3.12.0") && serves("3.12", "3.12.9"));
        assert!(!serves("3.12", "3.11.7") && !serves("3.12", "3.13.0"));
        assert!(serves("20", "20.11.0") && !serves("20", "18.19.0"));
        assert!(serves("3.12.1", "3.12.4") && !serves("3.12.1", "3.12.0"));
        // A pre-release interpreter serves its registered minor...
        assert!(serves("3.13", "3.13.0rc1"));
        // ...but a registered pre-release wants exactly that one.
        assert!(serves("3.14.0-rc1", "3.14.0rc1"));
        assert!(!serves("3.14.0-rc1", "3.14.0rc2") && !serves("3.14.0-rc1", "3.14.0"));
        assert!(!serves("default", "3.12.0"));
    }

    // --- constraint parsing and matching ---
    #[test]
    fn empty_and_star_mean_any() {
        for s in [
            "", "  ", "*", "x", "X", " x ", "x.x", "*.*.*", "X.x", "v*", ">=x", "=*",
        ] {
            let any = c(s);
            assert!(any.is_any());
            assert!(any.matches(&v("0.0.1")) && any.matches(&v("99.1")));
        }
    }
    #[test]
    fn any_accepts_prereleases() {
        assert!(c("").matches(&v("3.14.0-rc.1")));
    }
    #[test]
    fn bare_minor_is_tilde() {
        assert!(ok("3.12", "3.12.0"));
        assert!(ok("3.12", "3.12.7"));
        assert!(!ok("3.12", "3.13.0"));
        assert!(!ok("3.12", "3.11.9"));
    }
    #[test]
    fn bare_major_is_tilde() {
        assert!(ok("18", "18.0.0"));
        assert!(ok("18", "18.9.1"));
        assert!(!ok("18", "19.0.0"));
        assert!(!ok("18", "17.9.9"));
    }
    #[test]
    fn bare_patch_is_tilde() {
        assert!(ok("3.12.1", "3.12.5"));
        assert!(!ok("3.12.1", "3.12.0"));
        assert!(!ok("3.12.1", "3.13.0"));
    }
    #[test]
    fn bare_with_v_prefix() {
        assert!(ok("v3.12", "3.12.4"));
        assert!(!ok("v3.12", "3.13.0"));
    }
    #[test]
    fn greater_or_equal() {
        assert!(ok(">=3.12", "3.12.0"));
        assert!(ok(">=3.12", "3.13.0"));
        assert!(ok(">=3.12", "4.0.0"));
        assert!(!ok(">=3.12", "3.11.9"));
    }
    #[test]
    fn strictly_greater_with_partial() {
        // semver: >3.12 means >=3.13.0
        assert!(!ok(">3.12", "3.12.9"));
        assert!(ok(">3.12", "3.13.0"));
    }
    #[test]
    fn less_than_partial() {
        assert!(ok("<3.12", "3.11.9"));
        assert!(!ok("<3.12", "3.12.0"));
    }
    #[test]
    fn less_or_equal_partial_includes_patch_releases() {
        assert!(ok("<=3.12", "3.12.9"));
        assert!(!ok("<=3.12", "3.13.0"));
    }
    #[test]
    fn equals_partial_matches_any_patch() {
        assert!(ok("=3.12", "3.12.0"));
        assert!(ok("=3.12", "3.12.4"));
        assert!(!ok("=3.12", "3.13.0"));
    }
    #[test]
    fn equals_full_is_exact() {
        assert!(ok("=3.12.1", "3.12.1"));
        assert!(!ok("=3.12.1", "3.12.2"));
    }
    #[test]
    fn explicit_tilde() {
        assert!(ok("~3.11", "3.11.8"));
        assert!(!ok("~3.11", "3.12.0"));
    }
    #[test]
    fn caret() {
        assert!(ok("^20", "20.11.0"));
        assert!(ok("^20", "20.0.0"));
        assert!(!ok("^20", "21.0.0"));
        assert!(ok("^3.12", "3.99.0"));
        assert!(!ok("^3.12", "4.0.0"));
    }
    #[test]
    fn caret_below_one() {
        assert!(ok("^0.3", "0.3.5"));
        assert!(!ok("^0.3", "0.4.0"));
    }
    #[test]
    fn wildcards() {
        for s in ["3.x", "3.*", "3.X"] {
            assert!(ok(s, "3.0.0") && ok(s, "3.13.2"), "{s}");
            assert!(!ok(s, "4.0.0") && !ok(s, "2.7.18"), "{s}");
        }
        assert!(ok("3.12.x", "3.12.5"));
        assert!(!ok("3.12.x", "3.13.0"));
    }
    #[test]
    fn and_range() {
        assert!(ok(">=3.11,<4", "3.11.0"));
        assert!(ok(">=3.11,<4", "3.13.1"));
        assert!(!ok(">=3.11,<4", "4.0.0"));
        assert!(!ok(">=3.11,<4", "3.10.9"));
    }
    #[test]
    fn and_range_with_spaces() {
        assert!(ok(" >= 3.11 , < 3.13 ", "3.12.0"));
        assert!(!ok(" >= 3.11 , < 3.13 ", "3.13.0"));
    }
    #[test]
    fn or_of_tildes() {
        let s = "~3.11 || ~3.13";
        assert!(ok(s, "3.11.2") && ok(s, "3.13.0"));
        assert!(!ok(s, "3.12.0"));
    }
    #[test]
    fn or_of_ranges() {
        let s = ">=3.9,<3.10 || >=3.13";
        assert!(ok(s, "3.9.18") && ok(s, "3.14.0"));
        assert!(!ok(s, "3.11.0"));
    }
    #[test]
    fn or_of_bare_versions() {
        let s = "18 || 22";
        assert!(ok(s, "18.3.0") && ok(s, "22.1.0"));
        assert!(!ok(s, "20.0.0"));
    }
    #[test]
    fn v_after_operator() {
        assert!(ok(">=v3.12", "3.12.0"));
        assert!(!ok(">=v3.12", "3.11.0"));
        assert!(ok("~v20", "20.4.0"));
        assert!(ok(">= v3.12", "3.13.0"));
    }
    #[test]
    fn prerelease_excluded_by_plain_range() {
        assert!(!ok(">=3.13", "3.14.0-rc.1"));
    }
    #[test]
    fn prerelease_matched_when_named() {
        assert!(ok(">=3.14.0-rc.1", "3.14.0-rc.2"));
        assert!(!ok(">=3.14.0-rc.1", "3.14.0-beta.1"));
        assert!(ok(">=3.14.0-rc.1", "3.14.0"));
    }
    #[test]
    fn constraint_keeps_text_for_messages() {
        assert_eq!(c("  >=3.12 ").as_str(), ">=3.12");
        assert_eq!(c(">=3.12").to_string(), ">=3.12");
        assert_eq!(Constraint::any().to_string(), "*");
    }
    #[test]
    fn constraint_rejects_garbage() {
        for bad in [
            ">=banana",
            ">=3.12,",
            ", 3",
            ">=3.12,,<4",
            ">>3",
            "=>3",
            "3.12+",
            ">=",
            "3..12",
            "3.12.1.4",
            ">*",
            "<x",
            "!=*",
            "~=3",
            "~=3.*",
            "3 | 4",
            ">=3.14-rc.1",
            "1 - >2",
        ] {
            assert!(
                Constraint::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
    #[test]
    fn constraint_error_quotes_input() {
        let e = Constraint::parse(">=banana").unwrap_err().to_string();
        assert!(
            e.starts_with("\">=banana\" is not a valid constraint"),
            "{e}"
        );
    }
    // --- what node and python users write (issue examples) ---
    #[test]
    fn npm_space_separated_and() {
        assert!(ok(">=18 <21", "18.0.0") && ok(">=18 <21", "20.11.0"));
        assert!(!ok(">=18 <21", "21.0.0") && !ok(">=18 <21", "17.9.0"));
        // A space after an operator keeps one comparator; commas and spaces mix.
        assert!(ok(">= 18 < 21", "20.0.0") && !ok(">= 18 < 21", "21.0.0"));
        assert!(ok(">=3.11, <4 !=3.12.1", "3.12.2"));
        assert!(!ok(">=3.11, <4 !=3.12.1", "3.12.1"));
    }
    #[test]
    fn npm_hyphen_ranges_round_a_partial_upper_end_up() {
        assert!(ok("18 - 20", "20.11.0") && !ok("18 - 20", "21.0.0"));
        assert!(ok("1.2 - 2.3", "1.2.0") && ok("1.2 - 2.3", "2.3.9"));
        assert!(!ok("1.2 - 2.3", "1.1.9") && !ok("1.2 - 2.3", "2.4.0"));
        assert!(ok("1.2.3 - 2.3.4", "2.3.4") && !ok("1.2.3 - 2.3.4", "2.3.5"));
        assert!(ok("* - 2", "0.1.0") && !ok("* - 2", "3.0.0"));
    }
    #[test]
    fn npm_tilde_arrow_is_tilde_not_rubys() {
        assert!(ok("~>3.2", "3.2.9") && !ok("~>3.2", "3.3.0"));
        assert!(ok("~> 3.2.1", "3.2.4") && !ok("~> 3.2.1", "3.2.0"));
    }
    #[test]
    fn wildcards_after_every_operator() {
        for any in ["^x", "~x", ">=*", "<=X", "=*", "==*", "~>*", "x.x.x", "*.1"] {
            assert!(c(any).is_any(), "{any}");
        }
        assert!(ok(">=3.x", "3.0.0") && !ok(">=3.x", "2.9.9"));
        assert!(ok("<3.x", "2.9.9") && !ok("<3.x", "3.0.0"));
        assert!(ok("~3.x", "3.9.0") && ok("^3.x", "3.9.0") && !ok("^3.x", "4.0.0"));
        assert!(
            ok("1.x.3", "1.9.0"),
            "npm ignores a number after a wildcard"
        );
    }
    #[test]
    fn an_empty_alternative_means_any() {
        for any in ["1.x ||", "1.x || ", "|| 3", "||", "3 || || 4"] {
            let any = c(any);
            assert!(any.is_any() && any.matches(&v("9.0.0")));
        }
    }
    #[test]
    fn pep_440_compatible_release() {
        assert!(ok("~=3.11", "3.11.0") && ok("~=3.11", "3.13.1"));
        assert!(!ok("~=3.11", "3.10.9") && !ok("~=3.11", "4.0.0"));
        assert!(ok("~=3.11.2", "3.11.9") && !ok("~=3.11.2", "3.12.0"));
        assert!(!ok("~=3.11.2", "3.11.1"));
    }
    #[test]
    fn pep_440_double_equals_is_exact_and_single_equals_is_a_range() {
        assert!(ok("==3.12", "3.12.0") && !ok("==3.12", "3.12.1"));
        assert!(ok("=3.12", "3.12.1") && !ok("=3.12", "3.13.0"));
        assert!(ok("==3.12.*", "3.12.9") && !ok("==3.12.*", "3.13.0"));
        assert!(ok("== 3.12.1", "3.12.1") && !ok("== 3.12.1", "3.12.2"));
    }
    #[test]
    fn pep_440_exclusions() {
        assert!(ok("!=3.12.1", "3.12.0") && !ok("!=3.12.1", "3.12.1"));
        assert!(ok("!=3.12.*", "3.13.0") && !ok("!=3.12.*", "3.12.5"));
        assert!(!ok("!=3.12", "3.12.0") && ok("!=3.12", "3.12.1"));
    }
    #[test]
    fn a_python_pack_says_3_11_or_later_in_the_3_line_but_not_3_12_1() {
        let s = "~=3.11,!=3.12.1";
        for good in ["3.11.0", "3.12.0", "3.12.2", "3.13.0"] {
            assert!(ok(s, good), "{good}");
        }
        for bad in ["3.10.9", "3.12.1", "4.0.0"] {
            assert!(!ok(s, bad), "{bad}");
        }
    }
    #[test]
    fn pre_releases_only_match_when_their_alternative_names_one() {
        assert!(ok("~=3.13.0-rc1", "3.13.0-rc2"));
        assert!(!ok(">=3.13.0-rc1 || >=3.14", "3.14.0-rc1"));
        assert!(ok("3.14.0-rc.1 - 3.14", "3.14.0-rc.2"));
        assert!(!ok("!=3.12.1", "3.13.0-rc1"));
    }

    // --- errors ---
    fn error(constraint: &str) -> VersionError {
        Constraint::parse(constraint).unwrap_err()
    }
    fn suggestion(constraint: &str) -> Option<String> {
        match error(constraint) {
            VersionError::InvalidConstraint { suggestion, .. } => suggestion,
            other => panic!("{other:?}"),
        }
    }
    #[test]
    fn errors_suggest_the_nearest_valid_spelling() {
        for (bad, good) in [
            ("=>3.12", ">=3.12"),
            ("3.12+", ">=3.12"),
            (">=3.11, =<3.13", ">=3.11, <=3.13"),
            (">>3", ">3"),
            ("===3.12", "==3.12"),
            ("18-20", "18 - 20"),
            ("3 | 4", "3 || 4"),
            ("~=3", "~=3.0"),
            (">=3.12<4", ">=3.12 <4"),
            (">=3.12 && <4", ">=3.12 , <4"),
            ("3.14-rc.1", "3.14.0-rc.1"),
            ("!3.12.1", "!=3.12.1"),
        ] {
            assert_eq!(suggestion(bad).as_deref(), Some(good), "{bad}");
        }
    }
    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let e = error(">=3.12 <banana").to_string();
        assert_eq!(
            e,
            "\">=3.12 <banana\" is not a valid constraint: at column 9, expected a version after the operator, found \"b\""
        );
        let e = error(">=3.12,").to_string();
        assert!(
            e.contains("at column 8, expected a comparator after \",\""),
            "{e}"
        );
        let e = error("=>3.12").to_string();
        assert!(
            e.contains("at column 1, \"=>\" is not an operator (did you mean \">=3.12\"?)"),
            "{e}"
        );
        let e = error("3.12.1.4").to_string();
        assert!(
            e.contains("at column 7, a version has at most three parts"),
            "{e}"
        );
        let e = error("≥3.12").to_string();
        assert!(
            e.contains("at column 1,") && e.contains("found \"≥\""),
            "{e}"
        );
        assert!(error(">*").to_string().contains("matches no version"));
    }

    #[test]
    fn parse_optional_none_is_any() {
        assert!(Constraint::parse_optional(None).unwrap().is_any());
        assert!(!Constraint::parse_optional(Some(">=1")).unwrap().is_any());
    }

    // --- selection ---
    #[test]
    fn no_constraint_prefers_default() {
        assert_eq!(pick(&python(), "").unwrap(), "3.12");
    }
    #[test]
    fn a_wildcard_constraint_prefers_the_default_like_none() {
        for any in ["x", "X", "*", "x.x"] {
            assert_eq!(pick(&python(), any).unwrap(), "3.12", "{any}");
        }
    }
    #[test]
    fn no_constraint_without_usable_default_takes_highest() {
        let mut cands = python();
        cands[1].available = false;
        assert_eq!(pick(&cands, "").unwrap(), "3.13");
    }
    #[test]
    fn no_constraint_with_no_default_takes_highest() {
        let cands = vec![cand("18", false), cand("22", false), cand("20", false)];
        assert_eq!(pick(&cands, "").unwrap(), "22");
    }
    #[test]
    fn highest_prefers_stable_over_prerelease() {
        let cands = vec![cand("3.13", false), cand("3.14.0-rc.1", false)];
        assert_eq!(pick(&cands, "").unwrap(), "3.13");
        let only_pre = vec![cand("3.14.0-rc.1", false)];
        assert_eq!(pick(&only_pre, "").unwrap(), "3.14.0-rc.1");
    }
    #[test]
    fn constraint_takes_highest_match_not_default() {
        assert_eq!(pick(&python(), ">=3.11").unwrap(), "3.13");
        assert_eq!(pick(&python(), "~3.11").unwrap(), "3.11");
        assert_eq!(pick(&python(), "<3.13").unwrap(), "3.12");
    }
    #[test]
    fn star_behaves_like_no_constraint() {
        assert_eq!(pick(&python(), "*").unwrap(), "3.12");
    }
    #[test]
    fn unavailable_versions_are_skipped() {
        let mut cands = python();
        cands[2].available = false;
        assert_eq!(pick(&cands, ">=3.12").unwrap(), "3.12");
    }
    #[test]
    fn disabled_versions_are_skipped() {
        let mut cands = python();
        cands[2].enabled = false;
        assert_eq!(pick(&cands, ">=3.11").unwrap(), "3.12");
    }
    #[test]
    fn disabled_default_is_not_chosen() {
        let mut cands = python();
        cands[1].enabled = false;
        assert_eq!(pick(&cands, "").unwrap(), "3.13");
    }
    #[test]
    fn no_match_message_names_everything() {
        let mut cands = python();
        cands[0].available = false;
        cands[2].available = false;
        assert_eq!(
            pick(&cands, ">=3.14").unwrap_err(),
            "no available python version satisfies \">=3.14\" (registered: 3.11, 3.12, 3.13; available: 3.12)"
        );
    }
    #[test]
    fn no_match_message_lists_disabled() {
        let mut cands = python();
        cands[2].enabled = false;
        assert_eq!(
            pick(&cands, ">=3.13").unwrap_err(),
            "no available python version satisfies \">=3.13\" (registered: 3.11, 3.12, 3.13; available: 3.11, 3.12; disabled: 3.13)"
        );
    }
    #[test]
    fn no_match_without_constraint() {
        let cands: Vec<Candidate> = python()
            .into_iter()
            .map(|mut c| {
                c.available = false;
                c
            })
            .collect();
        assert_eq!(
            pick(&cands, "").unwrap_err(),
            "no available python version (registered: 3.11, 3.12, 3.13; available: none)"
        );
    }
    #[test]
    fn no_registered_versions() {
        assert_eq!(
            pick(&[], "").unwrap_err(),
            "no available python version (registered: none; available: none)"
        );
    }
    #[test]
    fn implicit_version_takes_no_constraint() {
        let shell = vec![Candidate::new(IMPLICIT_VERSION, true, true, true)];
        assert_eq!(
            select("shell", &shell, &Constraint::any()).unwrap().chosen,
            "default"
        );
        assert!(select("shell", &shell, &c(">=1")).is_err());
    }
    #[test]
    fn verdicts_explain_each_candidate() {
        let mut cands = python();
        cands[0].available = false;
        let sel = select("python", &cands, &c(">=3.11")).unwrap();
        assert_eq!(
            sel.verdicts,
            vec![
                ("3.11".to_string(), Verdict::NotAvailable),
                ("3.12".to_string(), Verdict::NotHighest),
                ("3.13".to_string(), Verdict::Chosen),
            ]
        );
        assert!(sel.reason.contains("3.13") && sel.reason.contains(">=3.11"));
    }
    #[test]
    fn verdicts_without_constraint_mark_default_preference() {
        let sel = select("python", &python(), &Constraint::any()).unwrap();
        assert_eq!(sel.verdicts[2], ("3.13".to_string(), Verdict::NotDefault));
        assert_eq!(sel.verdicts[0].1, Verdict::NotDefault);
    }
    #[test]
    fn verdicts_on_no_match_show_unsatisfied() {
        let err = select("python", &python(), &c(">=4")).unwrap_err();
        assert!(err
            .verdicts
            .iter()
            .all(|(_, v)| *v == Verdict::DoesNotSatisfy));
    }
    #[test]
    fn selection_uses_version_order_not_string_order() {
        let cands = vec![cand("3.9", false), cand("3.10", false)];
        assert_eq!(pick(&cands, ">=3").unwrap(), "3.10");
    }
}
