//! Maps a path inside a YAML document (`versions[1].execution_config`) to the line it is on.
//!
//! Every load error must say `file:line`, but serde only knows lines for syntax errors. Pack files
//! are block-style YAML, so one pass over the text that tracks indentation, keys and sequence
//! items recovers the line of any field. Flow collections (`{ binary: x }`) are not descended
//! into: a path inside one resolves to the line that holds it, which is what a reader wants.

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Idx(usize),
}

impl Seg {
    /// Shorthand for a key step.
    pub fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

/// The line (1-based) of every path in one document.
#[derive(Debug, Default)]
pub struct Locator {
    /// `(path, line)` in document order.
    entries: Vec<(Vec<Seg>, usize)>,
}

struct Frame {
    indent: usize,
    seg: Seg,
    is_item: bool,
    next_index: usize,
}

impl Locator {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let mut entries = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root_items = 0usize;
        // Indent of a key whose value is a block scalar (`|`, `>`): deeper lines are its text.
        let mut block_scalar: Option<usize> = None;

        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let trimmed = raw.trim_start();
            let mut indent = raw.len() - trimmed.len();
            if let Some(bi) = block_scalar {
                if trimmed.is_empty() || indent > bi {
                    continue;
                }
                block_scalar = None;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut content = trimmed;
            // Sequence items, possibly several on one line (`- - x`).
            while let Some(rest) = content
                .strip_prefix('-')
                .filter(|r| r.is_empty() || r.starts_with(' '))
            {
                while stack
                    .last()
                    .is_some_and(|f| f.indent > indent || (f.indent == indent && f.is_item))
                {
                    stack.pop();
                }
                let index = match stack.last_mut() {
                    Some(parent) => {
                        parent.next_index += 1;
                        parent.next_index - 1
                    }
                    None => {
                        root_items += 1;
                        root_items - 1
                    }
                };
                stack.push(Frame {
                    indent,
                    seg: Seg::Idx(index),
                    is_item: true,
                    next_index: 0,
                });
                entries.push((path_of(&stack), line_no));
                let after = rest.trim_start();
                indent += 1 + (rest.len() - after.len());
                content = after;
            }
            if let Some((key, value)) = split_key(content) {
                // A key closes every frame at its indent or deeper; the item it sits in has a
                // smaller indent (the dash column) and so stays open.
                while stack.last().is_some_and(|f| f.indent >= indent) {
                    stack.pop();
                }
                stack.push(Frame {
                    indent,
                    seg: Seg::Key(key),
                    is_item: false,
                    next_index: 0,
                });
                entries.push((path_of(&stack), line_no));
                let v = value.trim();
                if v.starts_with('|') || v.starts_with('>') {
                    block_scalar = Some(indent);
                }
            }
        }
        Locator { entries }
    }

    /// The line of `path`, or of its longest prefix that has one (a field inside a flow mapping
    /// resolves to the mapping's line). Line 1 when nothing matches.
    pub fn line(&self, path: &[Seg]) -> usize {
        (0..=path.len())
            .rev()
            .find_map(|len| self.exact(&path[..len]))
            .unwrap_or(1)
    }

    /// The line of exactly `path`, if it is written in block style.
    pub fn exact(&self, path: &[Seg]) -> Option<usize> {
        self.entries
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, l)| *l)
    }
}

fn path_of(stack: &[Frame]) -> Vec<Seg> {
    stack.iter().map(|f| f.seg.clone()).collect()
}

/// Splits `key: value` (or `key:`), accepting plain and quoted keys; `None` for anything else.
fn split_key(content: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(q @ ('"' | '\'')) = content.chars().next() {
        let end = content[1..].find(q)? + 1;
        (content[1..end].to_string(), &content[end + 1..])
    } else {
        if content.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
            return None;
        }
        let colon = content
            .char_indices()
            .find(|&(i, c)| c == ':' && content[i + 1..].chars().next().is_none_or(|n| n == ' '))?
            .0;
        (content[..colon].trim_end().to_string(), &content[colon..])
    };
    let value = rest.trim_start().strip_prefix(':')?;
    (value.is_empty() || value.starts_with(' ')).then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
ref: core.python        # 1
name: python            # 2
description: |          # 3
  text: not a key       # 4
versions:               # 5
  - version: \"3.11\"     # 6
    execution_config:   # 7
      interpreter:      # 8
        binary: py311   # 9
  - version: \"3.12\"     # 10
    is_default: true    # 11
    distributions:      # 12
      verification:     # 13
        commands:       # 14
          - { binary: python3.12, args: [\"--version\"] }  # 15
aliases:                # 16
- python3               # 17
";

    fn p(segs: &[&str]) -> Vec<Seg> {
        segs.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Seg::Idx(i),
                Err(_) => Seg::key(s),
            })
            .collect()
    }

    #[test]
    fn finds_top_level_keys() {
        let l = Locator::new(DOC);
        assert_eq!(l.line(&p(&["ref"])), 1);
        assert_eq!(l.line(&p(&["versions"])), 5);
        assert_eq!(l.line(&p(&["aliases"])), 16);
    }

    #[test]
    fn skips_block_scalar_text() {
        assert_eq!(Locator::new(DOC).exact(&p(&["text"])), None);
    }

    #[test]
    fn finds_keys_inside_sequence_items() {
        let l = Locator::new(DOC);
        assert_eq!(l.line(&p(&["versions", "0", "version"])), 6);
        assert_eq!(
            l.line(&p(&[
                "versions",
                "0",
                "execution_config",
                "interpreter",
                "binary"
            ])),
            9
        );
        assert_eq!(l.line(&p(&["versions", "1"])), 10);
        assert_eq!(l.line(&p(&["versions", "1", "is_default"])), 11);
    }

    #[test]
    fn flow_mappings_resolve_to_their_line() {
        let l = Locator::new(DOC);
        let path = p(&[
            "versions",
            "1",
            "distributions",
            "verification",
            "commands",
            "0",
            "binary",
        ]);
        assert_eq!(l.line(&path), 15);
    }

    #[test]
    fn indentless_sequences_are_children_of_the_key() {
        assert_eq!(Locator::new(DOC).line(&p(&["aliases", "0"])), 17);
    }

    #[test]
    fn unknown_paths_fall_back_to_nearest_parent() {
        let l = Locator::new(DOC);
        assert_eq!(l.line(&p(&["versions", "1", "nope"])), 10);
        assert_eq!(l.line(&p(&["nothing"])), 1);
    }

    #[test]
    fn quoted_keys_and_urls_in_values() {
        let l = Locator::new("\"a b\": 1\nurl: http://x:80/y\nc: 2\n");
        assert_eq!(l.line(&p(&["a b"])), 1);
        assert_eq!(l.line(&p(&["c"])), 3);
    }
}
