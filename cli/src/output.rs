//! Printing for people and for programs: aligned tables and JSON, and the exit codes every
//! command shares (listed in docs/user-guide.md and in each command's `--help`).

use attune_nats::Status;
use serde::Serialize;

/// Exit codes of `attune`: each means one thing.
pub mod code {
    /// Succeeded.
    pub const OK: u8 = 0;
    /// The action ran and failed.
    pub const FAILED: u8 = 1;
    /// Usage error, or the invocation was rejected.
    pub const USAGE: u8 = 2;
    /// No runner (or registry, or version) is available.
    pub const UNAVAILABLE: u8 = 69;
    /// NATS refused: the credentials were not accepted, or the user may not use a subject.
    pub const NO_PERMISSION: u8 = 77;
    /// A job has no final result yet (queued, running, or waiting for a retry): `attune result`.
    pub const PENDING: u8 = 75;
    /// The action timed out.
    pub const TIMED_OUT: u8 = 124;
}

/// The exit code a reply's status means: 0 succeeded, 1 failed, 124 timed out, 2 rejected.
pub fn status_code(status: Status) -> u8 {
    match status {
        Status::Succeeded => code::OK,
        Status::Failed => code::FAILED,
        Status::TimedOut => code::TIMED_OUT,
        Status::Rejected => code::USAGE,
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("values we print always serialise")
    );
}

/// Prints a value as one line of JSON on stdout (for streams of values, such as events).
pub fn json_line<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("values we print always serialise")
    );
}

/// A plain text table: a header row and aligned columns, for people.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_uppercase()).collect()],
        }
    }

    /// Adds one row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table; a table with no rows prints `empty` instead.
    pub fn print(&self, empty: &str) {
        if self.rows.len() == 1 {
            println!("{empty}");
            return;
        }
        let cols = self.rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i + 1 == cols {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths[i])
                    }
                })
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
}
