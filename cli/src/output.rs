//! Printing for people and for programs: aligned tables and JSON, and the exit codes.

use std::process::ExitCode;

use attune_nats::client::ClientError;
use serde::Serialize;

/// Exit codes of `attune` (docs/user-guide.md, *Exit codes*): each means one thing.
pub mod code {
    /// Succeeded.
    pub const OK: u8 = 0;
    /// The action ran and failed.
    pub const FAILED: u8 = 1;
    /// Usage error, or the invocation was rejected.
    pub const USAGE: u8 = 2;
    /// No runner (or registry, or version) is available.
    pub const UNAVAILABLE: u8 = 69;
    /// The action timed out.
    pub const TIMED_OUT: u8 = 124;
}

/// The exit code for an error that stopped a command.
pub fn exit_code_for(err: &ClientError) -> u8 {
    match err {
        ClientError::NoVersion(_) | ClientError::NoResponders(_) | ClientError::NotPublished(_) => {
            code::UNAVAILABLE
        }
        ClientError::Timeout { .. } => code::TIMED_OUT,
        ClientError::Nats(_) => code::UNAVAILABLE,
        _ => code::USAGE,
    }
}

/// Reports an error on stderr and returns its exit code.
pub fn fail(err: &ClientError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(exit_code_for(err))
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("values we print always serialise")
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
