//! What a load reports: one problem per file and line, and the rejection that gathers them.
//!
//! A leaf: every other file of the pack loader builds [`Problem`]s, so this one imports none of
//! them.

use std::fmt;
use std::path::PathBuf;

use attune_nats::name::NameError;

/// The message for a name refused by one of the `attune_nats::name` checks: what it names, the
/// value, and what is allowed (`action name: "a b" has the character ' ', which is not allowed
/// (letters, digits, '_' and '-')`).
pub fn name_message(what: &str, value: &str, err: &NameError) -> String {
    match err {
        // These quote the value themselves.
        NameError::BadChar { .. }
        | NameError::BadStart { .. }
        | NameError::EmptyPart { .. }
        | NameError::Reserved { .. }
        | NameError::NotARef { .. } => format!("{what}: {err}"),
        NameError::Empty | NameError::TooLong { .. } => format!("{what} \"{value}\": {err}"),
    }
}

/// One problem in one file. Displays as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as the user named the pack directory plus the file's path in it.
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    /// What is wrong, quoting the offending value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A rejected pack: every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PackErrors {
    /// The pack directory as given.
    pub dir: PathBuf,
    /// Every problem, sorted by file and line.
    pub problems: Vec<Problem>,
}

impl fmt::Display for PackErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "pack {} rejected: {n} problem{}",
            self.dir.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
