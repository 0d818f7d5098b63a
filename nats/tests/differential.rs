//! Differential test: our constraint answers against npm's `semver` and PyPI's `packaging`.
//!
//! A seeded generator writes constraints the way node users (npm ranges) and python users
//! (PEP 440 specifiers) do, pairs each with versions, and asks the real libraries in one batch
//! process each (`differential/semver.js`, `differential/pep440.py`, JSON lines in and out).
//! Our `Constraint::matches` must give the same answer, except where docs/pack-format.md says
//! we differ on purpose. Those deviations are handled in the open, never by a blanket skip:
//! - a bare full version is a tilde range here (`3.12.1` = `~3.12.1`), so npm is asked about
//!   the `~` spelling of it;
//! - "any" (`*`, `^x`, `1.x ||`) matches pre-releases here and not in npm: those pairs are
//!   counted and skipped;
//! - `>*` and `<*` match nothing in npm and are refused here: checked to be refused;
//! - a partial version after PEP 440's `<=` or `>` keeps npm's meaning (`<=3.12` is 3.12.x), so
//!   packaging is asked about the equivalent `<3.13` / `>=3.13`.
//!
//! `scripts/test` installs both libraries and exports `ATTUNE_NPM_SEMVER`,
//! `ATTUNE_PACKAGING_PATH` and `ATTUNE_PYTHON`. Without them the test fails under CI and is
//! skipped, loudly, elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use attune_nats::version::{parse_version, Constraint};

/// How many constraints of each family are generated; each is asked about [`VERSIONS_PER`]
/// versions.
const CONSTRAINTS: usize = 1000;
/// Versions asked about per constraint.
const VERSIONS_PER: usize = 8;

/// A small deterministic generator (xorshift64*), so failures reproduce without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One question for a reference library.
struct Case {
    /// The constraint as we parse it.
    ours: String,
    /// The same constraint spelled for the reference library (differs only by a documented
    /// translation).
    theirs: String,
    /// The version as semver (ours).
    version: String,
    /// The version as the reference library spells it.
    their_version: String,
}

/// A version number part: small, so that constraints and versions often meet.
fn number(rng: &mut Rng) -> String {
    rng.below(4).to_string()
}

/// A release `M.m.p`.
fn release(rng: &mut Rng) -> [usize; 3] {
    [rng.below(4), rng.below(4), rng.below(4)]
}

/// A version pattern as npm users write one: one to three parts, wildcards, sometimes a
/// pre-release on a full version. Returns (text, is full, has a wildcard major).
fn npm_pattern(rng: &mut Rng) -> (String, bool, bool) {
    let parts = 1 + rng.below(3);
    let mut out = Vec::new();
    let mut wildcard = false;
    for _ in 0..parts {
        if rng.one_in(6) {
            out.push(rng.pick(&["x", "X", "*"]).to_string());
            wildcard = true;
        } else {
            out.push(number(rng));
        }
    }
    // A wildcard major makes the rest irrelevant: `x.2` is `*`.
    let only_wildcards = matches!(out[0].as_str(), "x" | "X" | "*");
    let mut text = out.join(".");
    let full = parts == 3 && !wildcard;
    if full && rng.one_in(4) {
        text.push_str(rng.pick(&["-rc.1", "-beta", "-alpha.2", "-0"]));
    }
    if rng.one_in(10) {
        text.insert(0, 'v');
    }
    (text, full, only_wildcards)
}

/// An npm range and its npm spelling, or `None` when it is one we refuse on purpose (checked).
fn npm_constraint(rng: &mut Rng) -> Option<(String, String)> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if rng.one_in(12) {
            // npm reads an empty alternative as "any".
            ours.push(String::new());
            theirs.push(String::new());
            continue;
        }
        if rng.one_in(5) {
            let (a, _, _) = npm_pattern(rng);
            let (b, _, _) = npm_pattern(rng);
            let range = format!("{a} - {b}");
            ours.push(range.clone());
            theirs.push(range);
            continue;
        }
        let mut o = Vec::new();
        let mut t = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let op = rng.pick(&["", "", "=", "<", "<=", ">", ">=", ">=", "~", "~>", "^", "^"]);
            let space = if !op.is_empty() && rng.one_in(4) {
                " "
            } else {
                ""
            };
            let (p, full, any) = npm_pattern(rng);
            if any && matches!(op, "<" | ">") {
                let refused = format!("{op}{p}");
                assert!(
                    Constraint::parse(&refused).is_err(),
                    "{refused:?} matches nothing and should be refused"
                );
                return None;
            }
            o.push(format!("{op}{space}{p}"));
            // Ours: a bare version is a tilde range of what was written.
            t.push(if op.is_empty() && full {
                format!("~{p}")
            } else {
                format!("{op}{space}{p}")
            });
        }
        ours.push(o.join(" "));
        theirs.push(t.join(" "));
    }
    Some((ours.join(" || "), theirs.join(" || ")))
}

/// A version for npm questions: a release, or a pre-release of one.
fn npm_version(rng: &mut Rng) -> String {
    let [a, b, c] = release(rng);
    let pre = if rng.one_in(4) {
        rng.pick(&["-rc.1", "-rc.2", "-beta", "-alpha.2", "-0"])
    } else {
        ""
    };
    format!("{a}.{b}.{c}{pre}")
}

/// A PEP 440 specifier set, and the spelling packaging is asked about.
fn pep440_constraint(rng: &mut Rng) -> (String, String) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let op = rng.pick(&["~=", "==", "==", "!=", "!=", ">=", "<", "<=", ">"]);
        let min_parts = if op == "~=" { 2 } else { 1 };
        let parts: Vec<usize> = (0..min_parts + rng.below(4 - min_parts))
            .map(|_| rng.below(4))
            .collect();
        let text: Vec<String> = parts.iter().map(usize::to_string).collect();
        let mut version = text.join(".");
        let star = matches!(op, "==" | "!=") && parts.len() < 3 && rng.one_in(2);
        if star {
            version.push_str(".*");
        }
        let space = if rng.one_in(5) { " " } else { "" };
        ours.push(format!("{op}{space}{version}"));
        // Documented: a partial version after `<=` or `>` keeps npm's meaning, which PEP 440
        // spells with the next series.
        let partial = parts.len() < 3;
        theirs.push(match op {
            "<=" | ">" if partial => {
                let mut next = parts.clone();
                *next.last_mut().unwrap() += 1;
                let next: Vec<String> = next.iter().map(usize::to_string).collect();
                let op = if op == "<=" { "<" } else { ">=" };
                format!("{op}{}", next.join("."))
            }
            _ => format!("{op}{space}{version}"),
        });
    }
    let sep = if rng.one_in(3) { ", " } else { "," };
    (ours.join(sep), theirs.join(","))
}

/// A version for PEP 440 questions, as (semver, PEP 440): a release or a release candidate.
fn pep440_version(rng: &mut Rng) -> (String, String) {
    let [a, b, c] = release(rng);
    if rng.one_in(6) {
        (format!("{a}.{b}.{c}-rc1"), format!("{a}.{b}.{c}rc1"))
    } else {
        let v = format!("{a}.{b}.{c}");
        (v.clone(), v)
    }
}

/// The location a helper installed by scripts/test, or `None` (after saying so) when the test
/// may be skipped here. Under CI a missing tool is a failure.
fn tool(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            let msg = format!(
                "{var} is not set: the constraint differential test needs npm semver and PyPI \
                 packaging; run scripts/test, which installs both (scripts/lib.sh, \
                 ensure_differential_tools), or source scripts/lib.sh and call \
                 ensure_differential_tools"
            );
            assert!(!ci, "{msg}");
            eprintln!("\n*** SKIPPED: {msg} ***\n");
            None
        }
    }
}

/// The helper scripts' directory.
fn helpers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential")
}

/// Runs one batch through a helper: JSON lines `[constraint, version]` in, one answer per line
/// out (`Some(bool)`, or `None` where the library refused the constraint).
fn ask(mut command: Command, cases: &[Case]) -> Vec<Option<bool>> {
    let mut input = String::new();
    for case in cases {
        let line = serde_json::to_string(&(&case.theirs, &case.their_version)).unwrap();
        input.push_str(&line);
        input.push('\n');
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{command:?} failed: {}", out.status);
    let answers: Vec<Option<bool>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), cases.len(), "one answer per question");
    answers
}

/// Compares our answers with the reference's; returns (compared, skipped as documented).
fn compare(library: &str, cases: &[Case], answers: &[Option<bool>]) -> (usize, usize) {
    // A generator that only ever asks questions answered "no" (or "yes") would prove nothing.
    let yes = answers.iter().filter(|a| **a == Some(true)).count();
    let no = answers.iter().filter(|a| **a == Some(false)).count();
    assert!(
        yes > cases.len() / 10 && no > cases.len() / 10,
        "{library}: {yes} yes and {no} no of {} questions: the generator is lopsided",
        cases.len()
    );
    let mut compared = 0;
    let mut skipped = 0;
    let mut mismatches = Vec::new();
    for (case, theirs) in cases.iter().zip(answers) {
        let ours = Constraint::parse(&case.ours);
        let version = parse_version(&case.version).unwrap();
        match (&ours, theirs) {
            (Ok(c), Some(theirs)) => {
                // Documented: "any" matches pre-releases here, not in npm.
                if c.is_any() && !version.pre.is_empty() {
                    skipped += 1;
                    continue;
                }
                compared += 1;
                if c.matches(&version) != *theirs {
                    mismatches.push(format!(
                        "{:?} (asked as {:?}) on {}: ours {}, {library} {theirs}",
                        case.ours,
                        case.theirs,
                        case.version,
                        c.matches(&version)
                    ));
                }
            }
            (Err(e), None) => {
                compared += 1;
                let _ = e;
            }
            (Err(e), Some(_)) => mismatches.push(format!(
                "{:?}: we refuse it ({e}), {library} accepts it",
                case.ours
            )),
            (Ok(_), None) => mismatches.push(format!(
                "{:?} (asked as {:?}): we accept it, {library} refuses it",
                case.ours, case.theirs
            )),
        }
    }
    mismatches.dedup();
    assert!(
        mismatches.is_empty(),
        "{} differences from {library} (first 20):\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    (compared, skipped)
}

#[test]
fn constraints_answer_as_npm_semver_and_pypi_packaging_do() {
    let (Some(npm_semver), Some(packaging)) =
        (tool("ATTUNE_NPM_SEMVER"), tool("ATTUNE_PACKAGING_PATH"))
    else {
        return;
    };
    let python = std::env::var("ATTUNE_PYTHON").unwrap_or_else(|_| "python3".into());
    let started = Instant::now();
    let mut rng = Rng(0x5EED_0018);

    let mut npm_cases = Vec::new();
    while npm_cases.len() < CONSTRAINTS * VERSIONS_PER {
        let Some((ours, theirs)) = npm_constraint(&mut rng) else {
            continue;
        };
        for _ in 0..VERSIONS_PER {
            let version = npm_version(&mut rng);
            npm_cases.push(Case {
                ours: ours.clone(),
                theirs: theirs.clone(),
                their_version: version.clone(),
                version,
            });
        }
    }
    let mut pep_cases = Vec::new();
    for _ in 0..CONSTRAINTS {
        let (ours, theirs) = pep440_constraint(&mut rng);
        for _ in 0..VERSIONS_PER {
            let (version, their_version) = pep440_version(&mut rng);
            pep_cases.push(Case {
                ours: ours.clone(),
                theirs: theirs.clone(),
                version,
                their_version,
            });
        }
    }

    let mut node = Command::new("node");
    node.arg(helpers().join("semver.js"))
        .env("ATTUNE_NPM_SEMVER", &npm_semver);
    let npm_answers = ask(node, &npm_cases);
    let mut py = Command::new(&python);
    py.arg(helpers().join("pep440.py"))
        .env("PYTHONPATH", &packaging);
    let pep_answers = ask(py, &pep_cases);

    let (npm_compared, npm_skipped) = compare("npm semver", &npm_cases, &npm_answers);
    let (pep_compared, pep_skipped) = compare("packaging", &pep_cases, &pep_answers);
    eprintln!(
        "differential: {npm_compared} npm cases ({npm_skipped} skipped: \"any\" on a pre-release), \
         {pep_compared} PEP 440 cases ({pep_skipped} skipped), in {:.1?}",
        started.elapsed()
    );
    assert!(npm_compared > 6000 && pep_compared > 6000);
}
