//! Every row of the constraint table in docs/pack-format.md, checked against the parser.
//!
//! The table is the user's reference for what each syntax means, so it is read from the document
//! itself: a row whose example or versions drift from what `Constraint::matches` does fails here,
//! and a row added to the document is tested without touching this file.

use std::path::Path;

use attune_nats::version::{parse_version, Constraint};

/// One row: the syntax's name, its examples, and versions it must and must not match.
struct Row {
    /// The first cell, to name the row in failures.
    syntax: String,
    /// Every code span of the example cell.
    examples: Vec<String>,
    /// Versions every example accepts.
    matches: Vec<String>,
    /// Versions every example refuses.
    refuses: Vec<String>,
}

/// Splits a table line into cells on `|` that is not escaped as `\|`, unescaping the rest.
fn cells(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.pop(); // after the closing `|`
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The text of each `code span` in a cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A cell listing versions: comma-separated, `—` for none.
fn versions(cell: &str) -> Vec<String> {
    if cell == "—" {
        return Vec::new();
    }
    cell.split(',').map(|v| v.trim().to_string()).collect()
}

/// The rows between the table's markers in docs/pack-format.md.
fn table() -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pack-format.md");
    let doc = std::fs::read_to_string(&path).expect("docs/pack-format.md is readable");
    let start = doc
        .find("<!-- constraint-table")
        .expect("the constraint table's start marker is in docs/pack-format.md");
    let end = doc
        .find("<!-- end of constraint-table -->")
        .expect("the constraint table's end marker is in docs/pack-format.md");
    doc[start..end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2) // the header and the `|---|` line
        .map(|line| {
            let c = cells(line);
            assert_eq!(c.len(), 5, "a table row has five cells: {line}");
            Row {
                syntax: c[0].clone(),
                examples: code_spans(&c[1]),
                matches: versions(&c[2]),
                refuses: versions(&c[3]),
            }
        })
        .collect()
}

#[test]
fn every_row_of_the_constraint_table_holds() {
    let rows = table();
    assert!(rows.len() >= 30, "only {} rows read", rows.len());
    for row in rows {
        assert!(
            !row.examples.is_empty(),
            "row {:?} has no example",
            row.syntax
        );
        assert!(
            !row.matches.is_empty(),
            "row {:?} lists no matching version",
            row.syntax
        );
        for example in &row.examples {
            let constraint = Constraint::parse(example).unwrap_or_else(|e| {
                panic!("row {:?}: {example:?} does not parse: {e}", row.syntax)
            });
            for v in &row.matches {
                let version = parse_version(v).unwrap();
                assert!(
                    constraint.matches(&version),
                    "row {:?}: {example:?} should match {v}",
                    row.syntax
                );
            }
            for v in &row.refuses {
                let version = parse_version(v).unwrap();
                assert!(
                    !constraint.matches(&version),
                    "row {:?}: {example:?} should not match {v}",
                    row.syntax
                );
            }
        }
    }
}
