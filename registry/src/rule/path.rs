//! Paths into an event's payload, as rules write them: `trigger.a.b`, `trigger.items[0]`,
//! `trigger.headers['X-Token']`, or `trigger` for the whole payload.
//!
//! Criteria keys and template expressions share this one syntax, so a path that works in one
//! works in the other.

use serde_json::Value;

/// The name every path starts with: it stands for the payload.
pub const ROOT: &str = "trigger";

/// A parsed path: what follows `trigger`.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadPath {
    text: String,
    segs: Vec<Seg>,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    /// `.name` or `['name']`; on a list, a name of digits is an index.
    Key(String),
    /// `[3]`.
    Index(usize),
}

/// Why a path could not be read; the message quotes the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

impl PayloadPath {
    /// Parses a whole string as a path.
    pub fn parse(text: &str) -> Result<PayloadPath, PathError> {
        let (path, end) = PayloadPath::parse_at(text, 0)?;
        if end != text.len() {
            return Err(PathError(format!(
                "\"{text}\": unexpected \"{}\" after the path",
                &text[end..]
            )));
        }
        Ok(path)
    }

    /// Parses a path that starts at byte `start` of `src` and returns it with the byte where it
    /// ends; what follows is left to the caller (a template's filters).
    pub fn parse_at(src: &str, start: usize) -> Result<(PayloadPath, usize), PathError> {
        let bytes = src.as_bytes();
        let word_end = |from: usize| {
            let mut i = from;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"_-".contains(&bytes[i]))
            {
                i += 1;
            }
            i
        };
        let end = word_end(start);
        if &src[start..end] != ROOT {
            return Err(PathError(format!(
                "\"{}\": a path starts with \"{ROOT}\" (the event's payload), as in \"{ROOT}.field\"",
                &src[start..]
            )));
        }
        let mut i = end;
        let mut segs = Vec::new();
        loop {
            match bytes.get(i) {
                Some(b'.') => {
                    let e = word_end(i + 1);
                    if e == i + 1 {
                        return Err(PathError(format!(
                            "\"{}\": a name must follow '.' (use ['…'] for keys with other characters)",
                            &src[start..]
                        )));
                    }
                    segs.push(Seg::Key(src[i + 1..e].to_string()));
                    i = e;
                }
                Some(b'[') => {
                    let (seg, e) = bracket(src, i)
                        .map_err(|why| PathError(format!("\"{}\": {why}", &src[start..])))?;
                    segs.push(seg);
                    i = e;
                }
                _ => break,
            }
        }
        Ok((
            PayloadPath {
                text: src[start..i].to_string(),
                segs,
            },
            i,
        ))
    }

    /// The value the path leads to in `payload`, if any.
    pub fn get<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        let mut v = payload;
        for seg in &self.segs {
            v = match (seg, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Key(k), Value::Array(a)) => a.get(k.parse::<usize>().ok()?)?,
                (Seg::Index(n), Value::Array(a)) => a.get(*n)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Reads `[3]`, `['key']` or `["key"]` at `open` (the '['); returns the step and the byte after `]`.
fn bracket(src: &str, open: usize) -> Result<(Seg, usize), String> {
    let rest = &src[open + 1..];
    if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let (text, used) = quoted(rest, q)?;
        if !rest[used..].starts_with(']') {
            return Err("expected ']' after the quoted key".into());
        }
        return Ok((Seg::Key(text), open + 1 + used + 1));
    }
    let close = rest
        .find(']')
        .ok_or_else(|| "'[' is not closed".to_string())?;
    let inner = rest[..close].trim();
    let n = inner
        .parse::<usize>()
        .map_err(|_| format!("[{inner}]: expected an index (a number) or a quoted key"))?;
    Ok((Seg::Index(n), open + 1 + close + 1))
}

/// Reads a string quoted with `q` at the start of `s` (backslash escapes `\\`, `\'`, `\"`, `\n`,
/// `\t`); returns its text and the bytes consumed, quotes included.
pub fn quoted(s: &str, q: char) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('\\' | '\'' | '"'))) => out.push(c),
                Some((_, c)) => return Err(format!("unknown escape \\{c} in a quoted string")),
                None => break,
            },
            c if c == q => return Ok((out, i + c.len_utf8())),
            c => out.push(c),
        }
    }
    Err(format!("a string opened with {q} is not closed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_keys_indexes_and_odd_keys() {
        let p = json!({"a": {"b": [10, {"c": "x"}]}, "X-Token": "t", "n": null});
        let get = |s: &str| PayloadPath::parse(s).unwrap().get(&p).cloned();
        assert_eq!(get("trigger"), Some(p.clone()));
        assert_eq!(get("trigger.a.b[0]"), Some(json!(10)));
        assert_eq!(get("trigger.a.b.1.c"), Some(json!("x")));
        assert_eq!(get("trigger['X-Token']"), Some(json!("t")));
        assert_eq!(get("trigger[\"a\"].b[1]['c']"), Some(json!("x")));
        assert_eq!(get("trigger.n"), Some(Value::Null));
        assert_eq!(get("trigger.missing"), None);
        assert_eq!(get("trigger.a.b[5]"), None);
        assert_eq!(get("trigger.a.b.c"), None);
    }

    #[test]
    fn malformed_paths_say_what_is_wrong() {
        for (bad, says) in [
            ("payload.a", "starts with \"trigger\""),
            ("trigger.", "a name must follow"),
            ("trigger[x]", "expected an index"),
            ("trigger['a'", "expected ']'"),
            ("trigger['a", "not closed"),
            ("trigger.a b", "unexpected \" b\""),
        ] {
            let e = PayloadPath::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
