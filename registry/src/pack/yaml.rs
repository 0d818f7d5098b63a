//! One YAML file of a pack: its text, its parsed value, and the means to report a problem at the
//! line of any field.
//!
//! Pack files are untrusted, so reading one is bounded: the file must be a regular file inside
//! the pack (a symlink is followed only while it stays inside), at most [`MAX_YAML_BYTES`] long
//! by its metadata before a byte is read, and read through a bounded reader. Its aliases may not
//! expand it beyond [`max_nodes`] values, so a small file of nested anchors cannot cost gigabytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use attune_nats::yaml::YamlError;
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
    /// Reads and parses `full`, a file of the pack in `pack_dir`; a read or syntax error becomes
    /// a problem with its line. See the module documentation for the bounds.
    pub fn read(shown: PathBuf, full: &Path, pack_dir: &Path) -> Result<YamlDoc, Problem> {
        let text = read_bounded(full, pack_dir).map_err(|e| Problem {
            file: shown.clone(),
            line: None,
            message: e.to_string(),
        })?;
        let malformed = |e: serde_yaml::Error| Problem {
            file: shown.clone(),
            line: e.location().map(|l| l.line()),
            message: format!("malformed YAML: {}", strip_location(&e.to_string())),
        };
        let budget = max_nodes(&text);
        match attune_nats::yaml::check(&text, budget) {
            Ok(()) => {}
            Err(YamlError::TooLarge { limit }) => {
                return Err(Problem {
                    file: shown,
                    line: None,
                    message: format!(
                        "YAML expands to more than {limit} values (anchors and aliases that \
                         repeat too much are refused)"
                    ),
                })
            }
            Err(YamlError::Syntax(e)) => return Err(malformed(e)),
        }
        let value: Value = serde_yaml::from_str(&text).map_err(malformed)?;
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
    /// exactly as written, so `3.10` does not silently become 3.1, in block and flow style alike.
    pub fn versions_as_written(&self, value: &mut Value, path: &[Seg]) {
        let Some(slot) = get_mut(value, path) else {
            return;
        };
        if !slot.is_number() {
            return;
        }
        let text = scalar_as_written(&self.text, path).unwrap_or_else(|| match slot {
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

/// The largest pack YAML file read: 1 MiB.
pub const MAX_YAML_BYTES: u64 = 1024 * 1024;

/// The most values (scalars, sequences and mappings, counted as aliases expand) a document of
/// `text` may hold: one per byte and 1024 more. Written out, a value takes at least two bytes, so
/// only alias expansion can pass this.
pub fn max_nodes(text: &str) -> usize {
    text.len() + 1024
}

/// Why a pack YAML file was not read; displays as the message after `file: `.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file or the pack directory cannot be resolved or opened.
    #[error("cannot read: {source}")]
    Io {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A symlink on the way leads outside the pack.
    #[error("is a symlink to {}, outside the pack: refused", .target.display())]
    Escapes {
        /// Where it leads.
        target: PathBuf,
    },
    /// Not a regular file (a directory, fifo, socket or device).
    #[error("is not a regular file (a {kind}): refused")]
    NotRegular {
        /// What it is, in words.
        kind: &'static str,
    },
    /// Larger than [`MAX_YAML_BYTES`].
    #[error("is {size} bytes; a pack YAML file may have at most {max}")]
    TooLarge {
        /// Its size (or a lower bound of it, when it grew while read).
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// Reads the text of `full`, which must be a regular file inside `pack_dir` of at most
/// [`MAX_YAML_BYTES`]; the size is checked from metadata before any byte is read.
pub fn read_bounded(full: &Path, pack_dir: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io { source };
    let root = pack_dir.canonicalize().map_err(io)?;
    let real = full.canonicalize().map_err(io)?;
    if !real.starts_with(&root) {
        return Err(ReadError::Escapes { target: real });
    }
    // `stat`, not `open`: opening a fifo would block.
    let meta = std::fs::metadata(&real).map_err(io)?;
    check_regular(&meta)?;
    let file = std::fs::File::open(&real).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_regular(&meta)?;
    let mut text = String::new();
    file.take(MAX_YAML_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_YAML_BYTES {
        return Err(ReadError::TooLarge {
            size: text.len() as u64,
            max: MAX_YAML_BYTES,
        });
    }
    Ok(text)
}

/// A regular file of at most [`MAX_YAML_BYTES`], by its metadata.
fn check_regular(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            kind: attune_nats::archive::file_kind(meta),
        });
    }
    if meta.len() > MAX_YAML_BYTES {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            max: MAX_YAML_BYTES,
        });
    }
    Ok(())
}

/// The plain scalar at `path` of the document `text` as written (`3.10`, not the float 3.1).
///
/// The parsed [`Value`] has already turned an unquoted `3.10` into a number, and the line-based
/// [`Locator`] cannot see inside flow collections (`- { version: 3.10 }`). The YAML parser
/// itself still has the scalar's text: asked for a string, it hands a plain scalar over as
/// written. So the document is walked once more along `path`, skipping everything else, and the
/// value there is asked for as a string. The document was already checked and parsed, so this
/// walk cannot fail for another reason than a path that is not there (`None`).
pub fn scalar_as_written(text: &str, path: &[Seg]) -> Option<String> {
    use serde::Deserializer as _;
    serde_yaml::Deserializer::from_str(text)
        .next()
        .and_then(|de| de.deserialize_any(PathSeed(path)).ok())
        .flatten()
}

/// Walks a document along a path of [`Seg`]s; at its end, asks for a string.
struct PathSeed<'p>(&'p [Seg]);

impl<'de> serde::de::DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.0.is_empty() {
            d.deserialize_string(AsWritten)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> serde::de::Visitor<'de> for PathSeed<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping or a sequence on the path")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Value>()? {
            match self.0.split_first() {
                Some((Seg::Key(k), rest)) if found.is_none() && key.as_str() == Some(k) => {
                    found = map.next_value_seed(PathSeed(rest))?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut index = 0;
        loop {
            let here = match self.0.split_first() {
                Some((Seg::Idx(i), rest)) if *i == index => {
                    seq.next_element_seed(PathSeed(rest))?
                }
                _ => seq.next_element::<serde::de::IgnoredAny>()?.map(|_| None),
            };
            match here {
                None => break,
                Some(v) => found = found.or(v),
            }
            index += 1;
        }
        Ok(found)
    }
}

/// Takes whatever scalar is there as its text; anything else is `None`.
struct AsWritten;

impl serde::de::Visitor<'_> for AsWritten {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
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
