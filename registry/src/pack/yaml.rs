//! One YAML file of a pack: its text, its parsed value, and the means to report a problem at the
//! line of any field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::locate::{Locator, Seg};
use super::problem::Problem;

/// A parsed pack file, ready to be checked field by field.
pub struct YamlDoc {
    /// The path as shown to users (the pack directory as given, joined with the file).
    pub shown: PathBuf,
    text: String,
    /// The parsed document.
    pub value: Value,
    locator: Locator,
}

impl YamlDoc {
    /// Reads and parses `full`; a read or syntax error becomes a problem with its line.
    pub fn read(shown: PathBuf, full: &Path) -> Result<YamlDoc, Problem> {
        let text = std::fs::read_to_string(full).map_err(|e| Problem {
            file: shown.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let value: Value = serde_yaml::from_str(&text).map_err(|e| Problem {
            file: shown.clone(),
            line: e.location().map(|l| l.line()),
            message: format!("malformed YAML: {}", strip_location(&e.to_string())),
        })?;
        if !value.is_mapping() {
            return Err(Problem {
                file: shown,
                line: Some(1),
                message: "expected a mapping of fields at the top level".to_string(),
            });
        }
        let locator = Locator::new(&text);
        Ok(YamlDoc {
            shown,
            text,
            value,
            locator,
        })
    }

    /// A problem at the line of `path`.
    pub fn problem(&self, path: &[Seg], message: impl Into<String>) -> Problem {
        Problem {
            file: self.shown.clone(),
            line: Some(self.locator.line(path)),
            message: message.into(),
        }
    }

    /// Deserialises `value` (this document or a part of it found at `base`) into `T`, reporting a
    /// type error at the line of the offending field.
    pub fn typed<T: DeserializeOwned>(&self, base: &[Seg], value: Value) -> Result<T, Problem> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let mut path = base.to_vec();
            let mut shown = Vec::new();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => {
                        path.push(Seg::Idx(*index));
                        shown.push(format!("[{index}]"));
                    }
                    serde_path_to_error::Segment::Map { key } => {
                        path.push(Seg::Key(key.clone()));
                        shown.push(format!(".{key}"));
                    }
                    _ => {}
                }
            }
            let field = shown.concat();
            let field = field.trim_start_matches('.');
            let inner = strip_location(&e.inner().to_string());
            let message = if field.is_empty() {
                inner
            } else {
                format!("{field}: {inner}")
            };
            self.problem(&path, message)
        })
    }

    /// Replaces a number written where a version string belongs (`version: 3.10`) with the text
    /// exactly as written, so `3.10` does not silently become 3.1.
    pub fn versions_as_written(&self, value: &mut Value, path: &[Seg]) {
        let Some(slot) = get_mut(value, path) else {
            return;
        };
        if !slot.is_number() {
            return;
        }
        let written = self
            .locator
            .exact(path)
            .and_then(|line| self.text.lines().nth(line - 1))
            .and_then(|l| l.split_once(':').map(|(_, v)| v))
            .map(|v| v.split(" #").next().unwrap_or(v).trim().to_string())
            .filter(|v| !v.is_empty());
        let text = written.unwrap_or_else(|| match slot {
            Value::Number(n) => n.to_string(),
            _ => unreachable!(),
        });
        *slot = Value::String(text);
    }

    /// Warns about keys of the mapping at `path` that the format does not define: likely typos.
    pub fn unknown_keys(&self, path: &[Seg], known: &[&str], warnings: &mut Vec<Problem>) {
        let Some(Value::Mapping(map)) = get(&self.value, path) else {
            return;
        };
        for key in map.keys() {
            let Some(k) = key.as_str() else { continue };
            if !known.contains(&k) {
                let mut p = path.to_vec();
                p.push(Seg::key(k));
                warnings.push(self.problem(
                    &p,
                    format!(
                        "unknown field \"{k}\" is ignored (known: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Follows `path` into `value`.
pub fn get<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Idx(i) => v.get(*i),
    })
}

fn get_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Idx(i) => v.get_mut(*i),
    })
}

/// serde_yaml appends "at line X column Y"; the line is already in front of our message.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
