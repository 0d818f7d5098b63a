//! A rule's criteria: one comparison of one payload value with a pattern, per criterion.
//!
//! The operators are StackStorm's, with its meanings, so a rule written for it matches the same
//! events here. Where StackStorm would fail on a type it cannot compare (a number given to
//! `startswith`), the criterion does not hold. A criterion on a path the payload lacks holds only
//! for `nexists` and `nequals`.

use attune_nats::{Criterion, CriterionOp};
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::path::PayloadPath;

/// The largest compiled regular expression a criterion may have; bounds the memory and time a
/// pattern from an uploaded pack can cost.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// A criterion ready to evaluate: its path parsed and its regular expression compiled.
#[derive(Debug, Clone)]
pub struct Check {
    path: PayloadPath,
    op: CriterionOp,
    pattern: Value,
    regex: Option<Regex>,
}

impl Check {
    /// Checks a criterion keyed by `key`; the error says what is wrong with the key or the
    /// pattern, quoting it.
    pub fn new(key: &str, c: &Criterion) -> Result<Check, String> {
        let path = PayloadPath::parse(key).map_err(|e| e.0)?;
        let op = c.op;
        let pattern = match (&c.pattern, op.needs_pattern()) {
            (Some(p), _) => p.clone(),
            (None, false) => Value::Null,
            (None, true) => return Err(format!("{} needs a pattern", name(op))),
        };
        if let Value::String(s) = &pattern {
            if s.contains("{{") {
                return Err(format!(
                    "pattern \"{s}\": templates in patterns are not supported; compare with a literal value"
                ));
            }
        }
        let wants = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{} compares with {what}, not {pattern}", name(op)))
            }
        };
        use CriterionOp::*;
        match op {
            Iequals | Icontains | Incontains | Startswith | Istartswith | Endswith | Iendswith
            | Matchregex | Regex | Iregex => wants(pattern.is_string(), "a string")?,
            Lessthan | Greaterthan => wants(
                pattern.is_number() || pattern.is_string(),
                "a number or a string",
            )?,
            Inside | Ninside => wants(
                pattern.is_array() || pattern.is_string() || pattern.is_object(),
                "a list, a string or an object",
            )?,
            Equals | Nequals | Contains | Ncontains | Exists | Nexists => {}
        }
        let regex = match (op, &pattern) {
            (Matchregex | Regex | Iregex, Value::String(p)) => {
                // `matchregex` is Python's re.match with DOTALL: anchored at the start, '.'
                // crossing newlines.
                let source = match op {
                    Matchregex => format!(r"\A(?:{p})"),
                    _ => p.clone(),
                };
                let re = RegexBuilder::new(&source)
                    .dot_matches_new_line(op == Matchregex)
                    .case_insensitive(op == Iregex)
                    .size_limit(MAX_REGEX_BYTES)
                    .build()
                    .map_err(|e| {
                        format!("pattern \"{p}\" is not a valid regular expression: {e}")
                    })?;
                Some(re)
            }
            _ => None,
        };
        Ok(Check {
            path,
            op,
            pattern,
            regex,
        })
    }

    /// Whether it holds for this payload.
    pub fn holds(&self, payload: &Value) -> bool {
        use CriterionOp::*;
        let value = self.path.get(payload).filter(|v| !v.is_null());
        let Some(v) = value else {
            return matches!(self.op, Nexists | Nequals);
        };
        let p = &self.pattern;
        let strs = || Some((v.as_str()?, p.as_str()?));
        let lower = || strs().map(|(a, b)| (a.to_lowercase(), b.to_lowercase()));
        match self.op {
            Exists => true,
            Nexists => false,
            Equals => same(v, p),
            Nequals => !same(v, p),
            Iequals => lower().is_some_and(|(a, b)| a == b),
            Lessthan => order(v, p) == Some(std::cmp::Ordering::Less),
            Greaterthan => order(v, p) == Some(std::cmp::Ordering::Greater),
            Matchregex | Regex | Iregex => match (v.as_str(), &self.regex) {
                (Some(s), Some(re)) => re.is_match(s),
                _ => false,
            },
            Contains => contains(v, p) == Some(true),
            Ncontains => contains(v, p) == Some(false),
            Icontains => lower().is_some_and(|(a, b)| a.contains(&b)),
            Incontains => lower().is_some_and(|(a, b)| !a.contains(&b)),
            Startswith => strs().is_some_and(|(a, b)| a.starts_with(b)),
            Istartswith => lower().is_some_and(|(a, b)| a.starts_with(&b)),
            Endswith => strs().is_some_and(|(a, b)| a.ends_with(b)),
            Iendswith => lower().is_some_and(|(a, b)| a.ends_with(&b)),
            Inside => contains(p, v) == Some(true),
            Ninside => contains(p, v) == Some(false),
        }
    }
}

/// The long name of an operator.
pub fn name(op: CriterionOp) -> &'static str {
    CriterionOp::ALL
        .iter()
        .find(|(_, o)| *o == op)
        .map_or("?", |(n, _)| n)
}

/// Equality as JSON values, with numbers compared by value (1 == 1.0).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// The order of two numbers or two strings; `None` for anything else.
fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Whether `whole` contains `part`: a substring of a string, an element of a list, a key of an
/// object; `None` when they cannot be compared that way.
fn contains(whole: &Value, part: &Value) -> Option<bool> {
    match (whole, part) {
        (Value::String(w), Value::String(p)) => Some(w.contains(p.as_str())),
        (Value::Array(w), p) => Some(w.iter().any(|x| same(x, p))),
        (Value::Object(w), Value::String(p)) => Some(w.contains_key(p)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(key: &str, op: &str, pattern: Option<Value>) -> Result<Check, String> {
        let c: Criterion = serde_json::from_value(match pattern {
            Some(p) => json!({"type": op, "pattern": p}),
            None => json!({"type": op}),
        })
        .unwrap();
        Check::new(key, &c)
    }

    fn holds(op: &str, pattern: Value, value: Value) -> bool {
        check("trigger.v", op, Some(pattern))
            .unwrap()
            .holds(&json!({ "v": value }))
    }

    #[test]
    fn each_operator_case_by_case() {
        let t = true;
        let f = false;
        let cases: &[(&str, Value, Value, bool)] = &[
            ("equals", json!(1), json!(1.0), t),
            ("eq", json!("a"), json!("a"), t),
            ("equals", json!("1"), json!(1), f),
            ("equals", json!({"a": [1]}), json!({"a": [1.0]}), t),
            ("nequals", json!("a"), json!("b"), t),
            ("neq", json!(2), json!(2), f),
            ("iequals", json!("WatchEvent"), json!("watchevent"), t),
            ("ieq", json!("a"), json!(1), f),
            ("lessthan", json!(10), json!(9.5), t),
            ("lt", json!(10), json!(10), f),
            ("lessthan", json!("b"), json!("a"), t),
            ("lessthan", json!(10), json!("9"), f),
            ("greaterthan", json!(10), json!(11), t),
            ("gt", json!(10), json!(10), f),
            ("matchregex", json!("^db[0-9]+$"), json!("db12"), t),
            ("matchregex", json!("b"), json!("ab"), f),
            ("matchregex", json!("a.b"), json!("a\nb"), t),
            ("matchregex", json!("a"), json!(1), f),
            ("regex", json!("b"), json!("ab"), t),
            ("iregex", json!("B"), json!("ab"), t),
            ("contains", json!("err"), json!("an error"), t),
            ("contains", json!(2), json!([1, 2.0]), t),
            ("contains", json!("k"), json!({"k": 1}), t),
            ("contains", json!("x"), json!(5), f),
            ("icontains", json!("ERR"), json!("an error"), t),
            ("ncontains", json!("err"), json!("fine"), t),
            ("ncontains", json!("err"), json!("error"), f),
            ("ncontains", json!("x"), json!(5), f),
            ("incontains", json!("ERR"), json!("fine"), t),
            ("startswith", json!("db"), json!("db1"), t),
            ("startswith", json!("db"), json!("xdb"), f),
            ("istartswith", json!("DB"), json!("db1"), t),
            ("endswith", json!(".log"), json!("a.log"), t),
            ("iendswith", json!(".LOG"), json!("a.log"), t),
            ("endswith", json!("1"), json!(1), f),
            ("inside", json!(["a", "b"]), json!("b"), t),
            ("in", json!("abc"), json!("bc"), t),
            ("inside", json!(["a"]), json!("c"), f),
            ("ninside", json!(["a"]), json!("c"), t),
            ("nin", json!(["a"]), json!("a"), f),
        ];
        for (op, pattern, value, want) in cases {
            assert_eq!(
                holds(op, pattern.clone(), value.clone()),
                *want,
                "{value} {op} {pattern}"
            );
        }
    }

    #[test]
    fn exists_and_missing_values() {
        let exists = check("trigger.a.b", "exists", None).unwrap();
        let nexists = check("trigger.a.b", "nexists", None).unwrap();
        for (payload, there) in [
            (json!({"a": {"b": 0}}), true),
            (json!({"a": {"b": false}}), true),
            (json!({"a": {"b": null}}), false),
            (json!({"a": {}}), false),
            (json!({}), false),
            (json!("not an object"), false),
        ] {
            assert_eq!(exists.holds(&payload), there, "{payload}");
            assert_eq!(nexists.holds(&payload), !there, "{payload}");
        }
        // Only nexists and nequals hold on a missing value.
        for op in [
            "equals",
            "contains",
            "ncontains",
            "lessthan",
            "startswith",
            "ninside",
        ] {
            let p = if op == "ninside" {
                json!(["x"])
            } else {
                json!("x")
            };
            assert!(
                !check("trigger.z", op, Some(p)).unwrap().holds(&json!({})),
                "{op}"
            );
        }
        assert!(check("trigger.z", "nequals", Some(json!("x")))
            .unwrap()
            .holds(&json!({})));
    }

    #[test]
    fn bad_criteria_are_refused_saying_why() {
        for (key, op, pattern, says) in [
            (
                "payload.a",
                "equals",
                Some(json!(1)),
                "starts with \"trigger\"",
            ),
            ("trigger.a", "equals", None, "equals needs a pattern"),
            (
                "trigger.a",
                "matchregex",
                Some(json!("(")),
                "not a valid regular expression",
            ),
            (
                "trigger.a",
                "startswith",
                Some(json!(1)),
                "startswith compares with a string, not 1",
            ),
            (
                "trigger.a",
                "lessthan",
                Some(json!([1])),
                "a number or a string",
            ),
            (
                "trigger.a",
                "inside",
                Some(json!(1)),
                "a list, a string or an object",
            ),
            (
                "trigger.a",
                "equals",
                Some(json!("{{ trigger.b }}")),
                "templates in patterns",
            ),
            (
                "trigger.a",
                "regex",
                Some(json!("a{1000}{1000}")),
                "not a valid regular expression",
            ),
        ] {
            let e = check(key, op, pattern).unwrap_err();
            assert!(e.contains(says), "{key} {op}: {e}");
        }
    }
}
