//! The constraint grammar: what users write in `runtime_version`, parsed into version bounds.
//!
//! Node users write npm ranges and Python users write PEP 440 specifiers; both are read here, by
//! one hand-written parser, into one form: alternatives of AND-ed [`Bound`]s. Matching then never
//! needs to know which spelling was used. The parser works on the trimmed text and keeps byte
//! offsets, so an error can name the column where it went wrong and offer the nearest valid
//! spelling when there is an obvious one.
//!
//! What is read as whom (docs/pack-format.md has the table):
//! - npm: `>=18 <21` (space = AND), `18 - 20` (hyphen ranges, partial upper end rounds up),
//!   `~`, `~>` (= `~`), `^`, `x`/`X`/`*` anywhere, empty `||` alternatives as "any", and partial
//!   versions after `<`, `<=`, `>`, `=` with npm's meaning (`<=3.12` is all of 3.12.x);
//! - PEP 440: `~=` (compatible release), `==` (exact, zero-padded) and `!=`, both with `.*`
//!   for a prefix, and comma as AND;
//! - ours: a bare version is a tilde range of what was written (`3.12.1` → `~3.12.1`), and a
//!   pre-release matches only when a comparator of the same alternative names a pre-release of
//!   the same `major.minor.patch`.

use std::cmp::Ordering;

use semver::{Prerelease, Version};

/// One test a version must pass, as the grammar lowers every comparator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bound {
    /// Strictly below.
    Lt(Version),
    /// Below or equal.
    Le(Version),
    /// Strictly above.
    Gt(Version),
    /// Above or equal.
    Ge(Version),
    /// Exactly this version (build metadata ignored).
    Eq(Version),
    /// Anything but this version.
    Ne(Version),
    /// Below the first or at/above the second: PEP 440's `!=3.12.*`.
    Outside(Version, Version),
}

impl Bound {
    /// Whether `v` passes this test, comparing by semver precedence (build metadata ignored).
    fn holds(&self, v: &Version) -> bool {
        let cmp = |b: &Version| v.cmp_precedence(b);
        match self {
            Bound::Lt(b) => cmp(b) == Ordering::Less,
            Bound::Le(b) => cmp(b) != Ordering::Greater,
            Bound::Gt(b) => cmp(b) == Ordering::Greater,
            Bound::Ge(b) => cmp(b) != Ordering::Less,
            Bound::Eq(b) => cmp(b) == Ordering::Equal,
            Bound::Ne(b) => cmp(b) != Ordering::Equal,
            Bound::Outside(lo, hi) => cmp(lo) == Ordering::Less || cmp(hi) != Ordering::Less,
        }
    }
}

/// One `||` alternative: every bound must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Alternative {
    /// The AND-ed tests; empty means this alternative accepts everything.
    bounds: Vec<Bound>,
    /// The releases (`major.minor.patch`) whose pre-releases this alternative admits, because
    /// one of its comparators names a pre-release of that release.
    pre_releases_of: Vec<(u64, u64, u64)>,
}

impl Alternative {
    /// Whether this alternative accepts every version.
    pub(super) fn is_any(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Whether `v` passes every bound and, if it is a pre-release, a comparator named one of
    /// its release.
    pub(super) fn matches(&self, v: &Version) -> bool {
        self.bounds.iter().all(|b| b.holds(v))
            && (v.pre.is_empty() || self.pre_releases_of.contains(&(v.major, v.minor, v.patch)))
    }
}

/// Why the text is not a constraint, with the byte offset where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    /// Byte offset into the trimmed constraint.
    pub(super) offset: usize,
    /// What was expected there, or what is wrong.
    pub(super) reason: String,
    /// The whole constraint spelled the nearest valid way, when there is an obvious one.
    pub(super) suggestion: Option<String>,
}

/// An operator as written before a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`: npm's equality, a partial version is a range (`=3.12` is 3.12.x).
    Eq,
    /// `==`: PEP 440's equality, a partial version is zero-padded (`==3.12` is 3.12.0).
    Exact,
    /// `!=`: PEP 440's exclusion.
    Ne,
    /// `~=`: PEP 440's compatible release.
    Compatible,
    /// `~` and `~>` (npm reads both the same way).
    Tilde,
    /// `^`
    Caret,
}

/// Operators, longest first so that `>=` is not read as `>` followed by `=`.
const OPERATORS: [(&str, Op); 11] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("==", Op::Exact),
    ("!=", Op::Ne),
    ("~=", Op::Compatible),
    ("~>", Op::Tilde),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
    ("~", Op::Tilde),
    ("^", Op::Caret),
];

/// Misspelt operators users write, with the spelling they meant. Checked before [`OPERATORS`].
const MISSPELT: [(&str, &str); 9] = [
    ("===", "=="),
    ("=>", ">="),
    ("=<", "<="),
    (">>", ">"),
    ("<<", "<"),
    ("<>", "!="),
    ("=!", "!="),
    ("=~", "~="),
    ("^=", "^"),
];

/// A version as written in a constraint, before an operator gives it a meaning.
#[derive(Debug, Clone)]
struct Pattern {
    /// The numeric parts written before the first wildcard (`3.12.x` → `[3, 12]`).
    numbers: Vec<u64>,
    /// Whether a wildcard part (`x`, `X`, `*`) was written.
    wildcard: bool,
    /// The pre-release, only ever set on a full `major.minor.patch`.
    pre: Prerelease,
}

impl Pattern {
    /// True for `*`, `x`, `x.x`…: no number at all.
    fn is_any(&self) -> bool {
        self.numbers.is_empty()
    }

    /// True for a full `major.minor.patch` without a wildcard.
    fn is_full(&self) -> bool {
        self.numbers.len() == 3 && !self.wildcard
    }

    /// The lowest version the pattern covers: missing parts zero, pre-release kept.
    fn floor(&self) -> Version {
        let mut v = version(&self.numbers);
        v.pre = self.pre.clone();
        v
    }

    /// The lowest version above everything the pattern covers, pre-releases included: the last
    /// written part bumped, as npm's `<X.Y.Z-0`.
    fn ceiling(&self) -> Version {
        bumped(&self.numbers, self.numbers.len() - 1)
    }

    /// The release a pre-release names, if one was written.
    fn named_pre_release(&self) -> Option<(u64, u64, u64)> {
        (!self.pre.is_empty()).then(|| (self.numbers[0], self.numbers[1], self.numbers[2]))
    }
}

/// `parts` padded with zeros to a release.
fn version(parts: &[u64]) -> Version {
    let at = |i: usize| parts.get(i).copied().unwrap_or(0);
    Version::new(at(0), at(1), at(2))
}

/// The release with part `index` of `parts` bumped and later parts zero, as its lowest
/// pre-release (`-0`), so that the bound excludes every pre-release of it too.
fn bumped(parts: &[u64], index: usize) -> Version {
    let mut next = parts[..=index].to_vec();
    next[index] = next[index].saturating_add(1);
    let mut v = version(&next);
    v.pre = lowest_pre();
    v
}

/// The pre-release `0`, the lowest there is.
fn lowest_pre() -> Prerelease {
    Prerelease::new("0").expect("\"0\" is a valid pre-release")
}

/// Parses the trimmed text of a constraint into its alternatives; an empty list means "any".
pub(super) fn parse(text: &str) -> Result<Vec<Alternative>, SyntaxError> {
    let mut parser = Parser { text, pos: 0 };
    let mut alternatives = Vec::new();
    let mut any = false;
    loop {
        let alternative = parser.alternative()?;
        // An empty alternative, or one of wildcards only, accepts everything (npm reads
        // `1.x ||` as "any"), so the whole constraint does.
        any |= alternative.is_any();
        alternatives.push(alternative);
        if parser.rest().is_empty() {
            break;
        }
        parser.pos += "||".len();
    }
    if any {
        alternatives.clear();
    }
    Ok(alternatives)
}

/// A cursor over the trimmed constraint text.
struct Parser<'a> {
    /// The whole trimmed constraint.
    text: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
}

impl Parser<'_> {
    /// What is left to read.
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    /// The next character, if any.
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Skips whitespace; returns whether there was any.
    fn skip_space(&mut self) -> bool {
        let before = self.pos;
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
        self.pos > before
    }

    /// An error at `offset` without a suggestion.
    fn error(&self, offset: usize, reason: impl Into<String>) -> SyntaxError {
        SyntaxError {
            offset,
            reason: reason.into(),
            suggestion: None,
        }
    }

    /// An error at `offset` suggesting the text with `len` bytes there replaced by `with`.
    fn error_replacing(
        &self,
        offset: usize,
        len: usize,
        with: &str,
        reason: impl Into<String>,
    ) -> SyntaxError {
        let mut fixed = self.text.to_string();
        fixed.replace_range(offset..offset + len, with);
        SyntaxError {
            offset,
            reason: reason.into(),
            suggestion: Some(fixed.trim().to_string()),
        }
    }

    /// What the next character is, for "expected …, found …" messages.
    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("found \"{c}\""),
            None => "found the end".to_string(),
        }
    }

    /// Reads one alternative, up to `||` or the end. Comparators are separated by commas,
    /// whitespace, or both.
    fn alternative(&mut self) -> Result<Alternative, SyntaxError> {
        let mut alternative = Alternative::default();
        // Where a comma waits for the comparator after it.
        let mut pending_comma: Option<usize> = None;
        let mut seen_item = false;
        loop {
            self.skip_space();
            let rest = self.rest();
            if rest.is_empty() || rest.starts_with("||") {
                break;
            }
            if rest.starts_with(',') {
                if !seen_item || pending_comma.is_some() {
                    return Err(self.error(self.pos, "expected a comparator before \",\""));
                }
                pending_comma = Some(self.pos);
                self.pos += 1;
                continue;
            }
            if rest.starts_with('|') {
                return Err(self.error_replacing(
                    self.pos,
                    1,
                    "||",
                    "a single \"|\" is not an operator; alternatives are separated by \"||\"",
                ));
            }
            if rest.starts_with("&&") {
                return Err(self.error_replacing(
                    self.pos,
                    2,
                    ",",
                    "\"&&\" is not an operator; comparators are AND-ed by a space or a comma",
                ));
            }
            self.item(&mut alternative)?;
            seen_item = true;
            pending_comma = None;
        }
        if let Some(comma) = pending_comma {
            return Err(self.error(comma + 1, "expected a comparator after \",\""));
        }
        Ok(alternative)
    }

    /// Reads one comparator (`>=3.12`, `>= 3.12`, `3.12`) or hyphen range (`18 - 20`) and adds
    /// its bounds to `alternative`.
    fn item(&mut self, alternative: &mut Alternative) -> Result<(), SyntaxError> {
        let start = self.pos;
        let op = self.operator()?;
        if op.is_some() {
            self.skip_space();
        }
        let pattern = self.pattern(op)?;
        self.end_of_comparator()?;
        if op.is_none() {
            // A hyphen range: bare version, spaces, `-`, spaces, bare version.
            let after_first = self.pos;
            let spaced = self.skip_space();
            let rest = self.rest();
            if spaced && rest.starts_with('-') && rest[1..].starts_with(char::is_whitespace) {
                self.pos += 1;
                self.skip_space();
                let upper_at = self.pos;
                if let Some(c) = self.peek().filter(|c| "<>=~^!".contains(*c)) {
                    return Err(self.error(
                        upper_at,
                        format!("a hyphen range takes a plain version after \"-\", found \"{c}\""),
                    ));
                }
                let upper = self.pattern(None)?;
                self.end_of_comparator()?;
                hyphen(alternative, &pattern, &upper);
                return Ok(());
            }
            self.pos = after_first;
        }
        self.lower(alternative, op, &pattern, start)
    }

    /// After a comparator comes the end, whitespace, a comma or `|`; anything else is an error.
    fn end_of_comparator(&self) -> Result<(), SyntaxError> {
        match self.peek() {
            None | Some(',' | '|') => Ok(()),
            Some(c) if c.is_whitespace() => Ok(()),
            Some(c) if "<>=~^!".contains(c) => Err(self.error_replacing(
                self.pos,
                0,
                " ",
                format!(
                    "expected a space or \",\" before the operator \"{c}\" (comparators are separated by a space, a comma, or \"||\")"
                ),
            )),
            Some(_) => Err(self.error(
                self.pos,
                format!(
                    "expected \".\", \"-\" (pre-release), a space, \",\" or \"||\" after the version, {}",
                    self.found()
                ),
            )),
        }
    }

    /// Reads an operator, if one is written. Misspelt ones are errors naming the right spelling.
    fn operator(&mut self) -> Result<Option<Op>, SyntaxError> {
        let rest = self.rest();
        for (bad, good) in MISSPELT {
            if rest.starts_with(bad) {
                return Err(self.error_replacing(
                    self.pos,
                    bad.len(),
                    good,
                    format!("\"{bad}\" is not an operator"),
                ));
            }
        }
        if rest.starts_with('!') && !rest.starts_with("!=") {
            return Err(self.error_replacing(self.pos, 1, "!=", "\"!\" is not an operator"));
        }
        for (text, op) in OPERATORS {
            if rest.starts_with(text) {
                self.pos += text.len();
                return Ok(Some(op));
            }
        }
        Ok(None)
    }

    /// Reads a version pattern: an optional `v`, one to three parts (numbers or `x`/`X`/`*`),
    /// then a pre-release and build metadata on a full version.
    fn pattern(&mut self, op: Option<Op>) -> Result<Pattern, SyntaxError> {
        let rest = self.rest();
        if rest.starts_with(['v', 'V'])
            && rest[1..].starts_with(|c: char| c.is_ascii_digit() || "xX*".contains(c))
        {
            self.pos += 1;
        }
        let begin = self.pos;
        let mut numbers = Vec::new();
        let mut wildcard = false;
        let mut parts = 0;
        loop {
            let rest = self.rest();
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                let number: u64 = rest[..digits].parse().map_err(|_| {
                    self.error(self.pos, format!("\"{}\" is too large", &rest[..digits]))
                })?;
                // npm ignores numbers after a wildcard (`1.x.3` is `1.x`).
                if !wildcard {
                    numbers.push(number);
                }
                self.pos += digits;
            } else if rest.starts_with(['x', 'X', '*']) {
                wildcard = true;
                self.pos += 1;
            } else if parts == 0 {
                return Err(self.expected_version(op));
            } else {
                return Err(self.error(
                    self.pos,
                    format!(
                        "expected a number, \"x\" or \"*\" after \".\", {}",
                        self.found()
                    ),
                ));
            }
            parts += 1;
            if !self.rest().starts_with('.') {
                break;
            }
            if parts == 3 {
                return Err(self.error(self.pos, "a version has at most three parts"));
            }
            self.pos += 1;
        }
        let mut pattern = Pattern {
            numbers,
            wildcard,
            pre: Prerelease::EMPTY,
        };
        if self.rest().starts_with('-') {
            self.pre_release(&mut pattern, begin)?;
        }
        if self.rest().starts_with('+') {
            self.build(begin, op)?;
        }
        Ok(pattern)
    }

    /// The error for a missing version, with a suggestion when the text looks like a known slip.
    fn expected_version(&self, op: Option<Op>) -> SyntaxError {
        let what = if op.is_some() {
            "expected a version after the operator"
        } else {
            "expected a version or an operator (<, <=, >, >=, =, ==, !=, ~, ~=, ^)"
        };
        self.error(self.pos, format!("{what}, {}", self.found()))
    }

    /// Reads `-rc.1` after a version into `pattern`. Only a full `major.minor.patch` may have a
    /// pre-release; `18-20` is taken for a hyphen range that lost its spaces.
    fn pre_release(&mut self, pattern: &mut Pattern, begin: usize) -> Result<(), SyntaxError> {
        let dash = self.pos;
        let ids = self.rest()[1..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
            .count();
        let ids_text = &self.rest()[1..1 + ids];
        if !pattern.is_full() {
            let looks_like_range = !ids_text.is_empty()
                && ids_text
                    .split('.')
                    .all(|p| p.bytes().all(|b| b.is_ascii_digit() || b"xX*".contains(&b)));
            if looks_like_range {
                return Err(self.error_replacing(
                    dash,
                    1,
                    " - ",
                    "a hyphen range needs a space on both sides of \"-\"",
                ));
            }
            let written = &self.text[begin..dash];
            let reason =
                format!("a pre-release needs a full major.minor.patch; \"{written}\" is not one");
            if pattern.wildcard {
                return Err(self.error(dash, reason));
            }
            return Err(self.error_replacing(
                begin,
                dash - begin,
                &version(&pattern.numbers).to_string(),
                reason,
            ));
        }
        pattern.pre = Prerelease::new(ids_text).map_err(|e| {
            self.error(
                dash + 1,
                format!("\"{ids_text}\" is not a valid pre-release: {e}"),
            )
        })?;
        self.pos += 1 + ids;
        Ok(())
    }

    /// Skips `+build` metadata, which never takes part in a comparison. A `+` with nothing after
    /// it is read as "or later" (`3.12+`) and answered with the `>=` spelling.
    fn build(&mut self, begin: usize, op: Option<Op>) -> Result<(), SyntaxError> {
        let plus = self.pos;
        let len = self.rest()[1..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
            .count();
        if len == 0 {
            let version = &self.text[begin..plus];
            if op.is_none() {
                let mut fixed = self.text.to_string();
                fixed.replace_range(begin..plus + 1, &format!(">={version}"));
                return Err(SyntaxError {
                    offset: plus,
                    reason: format!(
                        "\"{version}+\" is not a constraint; \"{version} or later\" is written \">={version}\""
                    ),
                    suggestion: Some(fixed.trim().to_string()),
                });
            }
            return Err(self.error(plus + 1, "expected build metadata after \"+\""));
        }
        self.pos += 1 + len;
        Ok(())
    }

    /// Turns one comparator into bounds on `alternative`.
    fn lower(
        &self,
        alternative: &mut Alternative,
        op: Option<Op>,
        p: &Pattern,
        start: usize,
    ) -> Result<(), SyntaxError> {
        let written = &self.text[start..self.pos];
        if p.is_any() {
            return match op {
                Some(Op::Gt | Op::Lt | Op::Ne) => {
                    Err(self.error(start, format!("\"{written}\" matches no version at all")))
                }
                Some(Op::Compatible) => Err(self.error(
                    start,
                    "\"~=\" needs a version of at least two parts, such as \"~=3.11\"",
                )),
                // Every other operator before a bare wildcard means "any": no bound.
                _ => Ok(()),
            };
        }
        if let Some(release) = p.named_pre_release() {
            alternative.pre_releases_of.push(release);
        }
        let bounds = &mut alternative.bounds;
        let full = p.is_full();
        let range = |bounds: &mut Vec<Bound>, hi: Version| {
            bounds.push(Bound::Ge(p.floor()));
            bounds.push(Bound::Lt(hi));
        };
        match op {
            // Ours: a bare version is a tilde range of what was written.
            None | Some(Op::Tilde) => {
                let hi = bumped(&p.numbers, p.numbers.len().min(2) - 1);
                range(bounds, hi);
            }
            Some(Op::Caret) => {
                let n = &p.numbers;
                // The first non-zero part written stays fixed; a written zero run ends at the
                // last part written.
                let keep = n.iter().position(|&x| x != 0).unwrap_or(n.len() - 1);
                range(bounds, bumped(n, keep));
            }
            Some(Op::Eq) if full => bounds.push(Bound::Eq(p.floor())),
            Some(Op::Eq) => range(bounds, p.ceiling()),
            Some(Op::Exact) if p.wildcard => range(bounds, p.ceiling()),
            Some(Op::Exact) => bounds.push(Bound::Eq(p.floor())),
            Some(Op::Ne) if p.wildcard => bounds.push(Bound::Outside(p.floor(), p.ceiling())),
            Some(Op::Ne) => bounds.push(Bound::Ne(p.floor())),
            Some(Op::Compatible) => {
                if p.wildcard {
                    return Err(self.error(
                        start,
                        format!("\"~=\" takes no wildcard; write \"{}\"", compatible_hint(p)),
                    ));
                }
                if p.numbers.len() < 2 {
                    let fixed = format!("~={}.0", p.numbers[0]);
                    let mut text = self.text.to_string();
                    text.replace_range(start..self.pos, &fixed);
                    return Err(SyntaxError {
                        offset: start,
                        reason: format!(
                            "\"~=\" needs at least two parts (\"{fixed}\" means {}.0 or later in the {} line)",
                            p.numbers[0], p.numbers[0]
                        ),
                        suggestion: Some(text),
                    });
                }
                range(bounds, bumped(&p.numbers, p.numbers.len() - 2));
            }
            Some(Op::Ge) => bounds.push(Bound::Ge(p.floor())),
            Some(Op::Gt) if full => bounds.push(Bound::Gt(p.floor())),
            // npm: `>3.12` is `>=3.13.0`.
            Some(Op::Gt) => {
                let mut next = p.ceiling();
                next.pre = Prerelease::EMPTY;
                bounds.push(Bound::Ge(next));
            }
            Some(Op::Lt) if full => bounds.push(Bound::Lt(p.floor())),
            // npm: `<3.12` is `<3.12.0-0`, no pre-release of 3.12.0 either.
            Some(Op::Lt) => {
                let mut floor = p.floor();
                floor.pre = lowest_pre();
                bounds.push(Bound::Lt(floor));
            }
            Some(Op::Le) if full => bounds.push(Bound::Le(p.floor())),
            // npm: `<=3.12` is all of 3.12.x.
            Some(Op::Le) => bounds.push(Bound::Lt(p.ceiling())),
        }
        Ok(())
    }
}

/// The `~=` spelling of a wildcard pattern (`3.12.*` → `~=3.12.0`), for the error message.
fn compatible_hint(p: &Pattern) -> String {
    let mut parts: Vec<String> = p.numbers.iter().map(u64::to_string).collect();
    while parts.len() < 2 {
        parts.push("0".into());
    }
    if parts.len() == 2 && p.numbers.len() == 2 {
        parts.push("0".into());
    }
    format!("~={}", parts.join("."))
}

/// The bounds of a hyphen range `lower - upper`, as npm reads it: a partial lower end is
/// zero-padded, a partial upper end covers its whole series (`1.2 - 2.3` is `<2.4.0`), and a
/// wildcard end is no bound at all.
fn hyphen(alternative: &mut Alternative, lower: &Pattern, upper: &Pattern) {
    for p in [lower, upper] {
        if let Some(release) = p.named_pre_release() {
            alternative.pre_releases_of.push(release);
        }
    }
    if !lower.is_any() {
        alternative.bounds.push(Bound::Ge(lower.floor()));
    }
    if upper.is_any() {
        return;
    }
    alternative.bounds.push(if upper.is_full() {
        Bound::Le(upper.floor())
    } else {
        Bound::Lt(upper.ceiling())
    });
}
