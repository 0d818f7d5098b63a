//! The templates of a rule's parameters: `{{ trigger.<path> }}` with Jinja's common filters.
//!
//! This is the part of Jinja that StackStorm rules use to pass a payload on to an action, and no
//! more: an expression is a payload path followed by filters (`default`, `lower`, `upper`, `int`,
//! `string`, `tojson`). Anything else (`{% %}` blocks, other filters, arithmetic) is refused when
//! the pack loads rather than misread when an event arrives. A string that is exactly one
//! expression yields the value itself, keeping the payload's type; text around or between
//! expressions makes a string.

use serde_json::Value;

use super::path::{quoted, PayloadPath};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// `trigger.<path> | filter | …`
#[derive(Debug, Clone, PartialEq)]
struct Expr {
    path: PayloadPath,
    filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    /// `default(v)`, or `default(v, true)` to replace null, false, 0 and "" as well.
    Default {
        value: Value,
        falsy: bool,
    },
    Lower,
    Upper,
    Int,
    Str,
    ToJson,
}

/// The filters a template may use, for messages and docs.
pub const FILTERS: &str = "default, lower, upper, int, string, tojson";

/// Why a template was refused at load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Why a template could not be rendered for one event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// The path leads nowhere in this payload and no `default` was given.
    #[error("{0} is not in the event's payload (add `| default(…)` to make it optional)")]
    Missing(String),
}

impl Template {
    /// Parses `src`; a string without `{{` is a template of plain text.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let err = |m: String| Err(TemplateError(format!("\"{src}\": {m}")));
        if src.contains("{%") || src.contains("{#") {
            return err(
                "only {{ … }} expressions are supported, not {% … %} blocks or {# … #} comments"
                    .into(),
            );
        }
        let mut parts = Vec::new();
        let mut rest = 0;
        while let Some(open) = src[rest..].find("{{").map(|o| rest + o) {
            if open > rest {
                parts.push(Part::Text(src[rest..open].to_string()));
            }
            let (expr, end) = match parse_expr(src, open + 2) {
                Ok(x) => x,
                Err(m) => return err(m),
            };
            parts.push(Part::Expr(expr));
            rest = end;
        }
        if rest < src.len() {
            if src[rest..].contains("}}") {
                return err("\"}}\" without a matching \"{{\"".into());
            }
            parts.push(Part::Text(src[rest..].to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether it has any expression (plain text renders as itself).
    pub fn is_plain(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders it against an event's payload: the value itself when the template is one
    /// expression, else the text with each expression's value written in.
    pub fn render(&self, payload: &Value) -> Result<Value, RenderError> {
        if let [Part::Expr(e)] = self.parts.as_slice() {
            return e.eval(payload);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => out.push_str(&text(&e.eval(payload)?)),
            }
        }
        Ok(Value::String(out))
    }
}

impl Expr {
    fn eval(&self, payload: &Value) -> Result<Value, RenderError> {
        let mut v = self.path.get(payload).cloned();
        for f in &self.filters {
            v = match (f, v) {
                (Filter::Default { value, .. }, None) => Some(value.clone()),
                (Filter::Default { value, falsy: true }, Some(x)) if !truthy(&x) => {
                    Some(value.clone())
                }
                (Filter::Default { .. }, x) => x,
                (_, None) => return Err(RenderError::Missing(self.path.as_str().to_string())),
                (Filter::Lower, Some(x)) => Some(Value::String(text(&x).to_lowercase())),
                (Filter::Upper, Some(x)) => Some(Value::String(text(&x).to_uppercase())),
                (Filter::Str, Some(x)) => Some(Value::String(text(&x))),
                (Filter::ToJson, Some(x)) => Some(Value::String(x.to_string())),
                (Filter::Int, Some(x)) => Some(Value::from(int(&x))),
            };
        }
        v.ok_or_else(|| RenderError::Missing(self.path.as_str().to_string()))
    }
}

/// A value as text: a string as itself, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Jinja's `int`: numbers truncated, numeric text parsed, `true` 1, anything else 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))
            .unwrap_or(0),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| f.trunc() as i64)
                })
                .unwrap_or(0)
        }
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

/// Python's truth: null, false, 0, "" and empty collections are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Parses an expression starting at byte `at` (after `{{`), through its `}}`.
fn parse_expr(src: &str, at: usize) -> Result<(Expr, usize), String> {
    let mut i = skip_ws(src, at);
    let (path, end) = PayloadPath::parse_at(src, i).map_err(|e| e.0)?;
    i = skip_ws(src, end);
    let mut filters = Vec::new();
    loop {
        let rest = &src[i..];
        if rest.starts_with("}}") {
            return Ok((Expr { path, filters }, i + 2));
        }
        if !rest.starts_with('|') {
            return Err(match rest.chars().next() {
                None => "\"{{\" is not closed with \"}}\"".into(),
                Some(_) => format!(
                    "unexpected \"{}\" in an expression (supported: a payload path and the filters {FILTERS})",
                    rest.split("}}").next().unwrap_or(rest).trim()
                ),
            });
        }
        i = skip_ws(src, i + 1);
        let name_end = src[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(src.len(), |n| i + n);
        let name = &src[i..name_end];
        i = skip_ws(src, name_end);
        let args = if src[i..].starts_with('(') {
            let (args, end) = parse_args(src, i + 1)?;
            i = skip_ws(src, end);
            Some(args)
        } else {
            None
        };
        filters.push(filter(name, args)?);
    }
}

/// The filter `name` with its arguments, if it is one we support.
fn filter(name: &str, args: Option<Vec<Value>>) -> Result<Filter, String> {
    let no_args = |f: Filter| match &args {
        None => Ok(f),
        Some(_) => Err(format!("the filter {name} takes no arguments")),
    };
    match name {
        "default" | "d" => match args.as_deref() {
            Some([value]) => Ok(Filter::Default {
                value: value.clone(),
                falsy: false,
            }),
            Some([value, Value::Bool(falsy)]) => Ok(Filter::Default {
                value: value.clone(),
                falsy: *falsy,
            }),
            _ => Err("default takes a value and, optionally, true or false: default('x'), default(0, true)".into()),
        },
        "lower" => no_args(Filter::Lower),
        "upper" => no_args(Filter::Upper),
        "int" => no_args(Filter::Int),
        "string" => no_args(Filter::Str),
        "tojson" => no_args(Filter::ToJson),
        "" => Err("a filter name must follow '|'".into()),
        other => Err(format!(
            "the filter \"{other}\" is not supported (supported: {FILTERS})"
        )),
    }
}

/// Parses literal arguments after `(` up to the matching `)`; returns them and the byte after `)`.
fn parse_args(src: &str, at: usize) -> Result<(Vec<Value>, usize), String> {
    let mut args = Vec::new();
    let mut i = skip_ws(src, at);
    if src[i..].starts_with(')') {
        return Ok((args, i + 1));
    }
    loop {
        let (v, end) = literal(src, i)?;
        args.push(v);
        i = skip_ws(src, end);
        match src[i..].chars().next() {
            Some(',') => i = skip_ws(src, i + 1),
            Some(')') => return Ok((args, i + 1)),
            _ => return Err("expected ',' or ')' in a filter's arguments".into()),
        }
    }
}

/// A literal argument: a quoted string, a number, true/false (any case), or none/null.
fn literal(src: &str, at: usize) -> Result<(Value, usize), String> {
    let rest = &src[at..];
    if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let (s, used) = quoted(rest, q)?;
        return Ok((Value::String(s), at + used));
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._".contains(c)))
        .unwrap_or(rest.len());
    let word = &rest[..end];
    let value = match word.to_ascii_lowercase().as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "none" | "null" => Value::Null,
        _ => {
            if let Ok(n) = word.parse::<i64>() {
                Value::from(n)
            } else if let Some(n) = word
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(n)
            } else {
                return Err(format!(
                    "\"{word}\": a filter argument must be a quoted string, a number, true, false or none"
                ));
            }
        }
    };
    Ok((value, at + end))
}

fn skip_ws(src: &str, mut i: usize) -> usize {
    let b = src.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, payload: &Value) -> Result<Value, RenderError> {
        Template::parse(t).unwrap().render(payload)
    }

    #[test]
    fn one_expression_keeps_the_payload_type() {
        let p = json!({"n": 3, "f": 2.5, "b": true, "l": [1, 2], "o": {"k": "v"}, "z": null});
        for (path, want) in [
            ("n", json!(3)),
            ("f", json!(2.5)),
            ("b", json!(true)),
            ("l", json!([1, 2])),
            ("o", json!({"k": "v"})),
            ("z", Value::Null),
        ] {
            assert_eq!(
                render(&format!("{{{{ trigger.{path} }}}}"), &p).unwrap(),
                want
            );
            assert_eq!(
                render(&format!("{{{{trigger.{path}}}}}"), &p).unwrap(),
                want
            );
        }
    }

    #[test]
    fn text_around_expressions_makes_a_string() {
        let p = json!({"host": "db1", "n": 3, "o": {"k": "v"}});
        assert_eq!(
            render(
                "{{ trigger.host }} has {{ trigger.n }} alerts: {{ trigger.o }}",
                &p
            )
            .unwrap(),
            json!("db1 has 3 alerts: {\"k\":\"v\"}")
        );
        assert_eq!(render("plain", &p).unwrap(), json!("plain"));
        assert!(Template::parse("plain").unwrap().is_plain());
        assert_eq!(render(" {{ trigger.n }}", &p).unwrap(), json!(" 3"));
    }

    #[test]
    fn filters() {
        let p = json!({"s": "MiXed", "n": "42", "f": 7.9, "o": {"a": [1]}, "e": "", "t": "x"});
        let cases = [
            ("{{ trigger.s | lower }}", json!("mixed")),
            ("{{ trigger.s | upper }}", json!("MIXED")),
            ("{{ trigger.n | int }}", json!(42)),
            ("{{ trigger.f | int }}", json!(7)),
            ("{{ trigger.s | int }}", json!(0)),
            ("{{ trigger.f | string }}", json!("7.9")),
            ("{{ trigger.o | tojson }}", json!("{\"a\":[1]}")),
            ("{{ trigger.missing | default('none') }}", json!("none")),
            ("{{ trigger.missing | default(5) | string }}", json!("5")),
            ("{{ trigger.e | default('x') }}", json!("")),
            ("{{ trigger.e | default('x', true) }}", json!("x")),
            ("{{ trigger.t | default('y', true) | upper }}", json!("X")),
            ("{{ trigger.missing | d(\"a}}b\") }}", json!("a}}b")),
            ("{{ trigger.missing | default(none) }}", Value::Null),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &p).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn a_missing_value_without_default_is_an_error_naming_the_path() {
        let e = render("x {{ trigger.a.b | lower }}", &json!({})).unwrap_err();
        assert_eq!(e, RenderError::Missing("trigger.a.b".into()));
        assert!(e.to_string().contains("default"));
    }

    #[test]
    fn unsupported_templates_are_refused_saying_why() {
        for (bad, says) in [
            ("{% if x %}y{% endif %}", "not {% … %} blocks"),
            (
                "{{ trigger.a | title }}",
                "the filter \"title\" is not supported",
            ),
            ("{{ trigger.a + 1 }}", "unexpected \"+ 1\""),
            ("{{ payload.a }}", "starts with \"trigger\""),
            ("{{ trigger.a ", "not closed"),
            ("{{ trigger.a | lower(1) }}", "takes no arguments"),
            ("{{ trigger.a | default }}", "default takes a value"),
            ("{{ trigger.a | default(x) }}", "must be a quoted string"),
            ("{{ trigger.a | }}", "a filter name must follow"),
            ("a }} b", "without a matching"),
            ("{{ trigger.a | default('x' }}", "expected ',' or ')'"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(
                e.contains(bad),
                "{bad}: the message quotes the template: {e}"
            );
        }
    }
}
