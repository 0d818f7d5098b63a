//! How an action's stdout becomes its result, per its `output_format` (text, JSON, YAML, JSONL).
//!
//! Output is hostile input too. Its size is already capped by the capture (the runner's output
//! cap); YAML alias expansion is bounded by a node budget ([`attune_nats::yaml`]); and output
//! larger than [`INLINE_PARSE_LIMIT`] is parsed on a blocking thread, so parsing never holds up
//! the threads that serve requests and heartbeats.

/// Outputs up to this many bytes are parsed where the invocation runs; larger ones are handed
/// to a blocking thread.
pub const INLINE_PARSE_LIMIT: usize = 64 * 1024;

use attune_nats::model::OutputFormat;
use serde_json::Value;

/// Turns stdout into the result per `output_format`. `Err` carries why the output did not parse;
/// the caller reports it and returns `null` as the result.
pub fn parse_output(stdout: &str, format: OutputFormat) -> Result<Value, String> {
    match format {
        OutputFormat::Text => Ok(Value::String(
            stdout.strip_suffix('\n').unwrap_or(stdout).to_string(),
        )),
        OutputFormat::Json => {
            let all = stdout.trim();
            if all.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(all).or_else(|whole| {
                let last = all
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                serde_json::from_str(last.trim())
                    .map_err(|_| format!("stdout is not JSON, nor is its last line: {whole}"))
            })
        }
        OutputFormat::Yaml => {
            if stdout.trim().is_empty() {
                return Ok(Value::Null);
            }
            attune_nats::yaml::to_json(stdout, attune_nats::yaml::MAX_NODES)
                .map_err(|e| format!("stdout is not acceptable YAML: {e}"))
        }
        OutputFormat::Jsonl => stdout
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| format!("stdout line {}: not JSON: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_parses_per_format() {
        assert_eq!(
            parse_output("hi\n", OutputFormat::Text).unwrap(),
            json!("hi")
        );
        assert_eq!(
            parse_output("{\"a\":1}\n", OutputFormat::Json).unwrap(),
            json!({"a":1})
        );
        assert_eq!(
            parse_output("log line\n{\"a\":2}\n", OutputFormat::Json).unwrap(),
            json!({"a":2})
        );
        assert!(parse_output("not json\n", OutputFormat::Json).is_err());
        assert_eq!(
            parse_output("a: 1\n", OutputFormat::Yaml).unwrap(),
            json!({"a":1})
        );
        assert_eq!(
            parse_output("1\n\n{\"b\":2}\n", OutputFormat::Jsonl).unwrap(),
            json!([1, {"b":2}])
        );
        assert!(parse_output("1\nx\n", OutputFormat::Jsonl).is_err());
        let bomb = format!(
            "pad: [{}]\na0: &a0 [{}]\n{}",
            vec!["p"; 1200].join(", "),
            vec!["lol"; 100].join(", "),
            (1..=5)
                .map(|i| format!(
                    "a{i}: &a{i} [{}]\n",
                    vec![format!("*a{}", i - 1); 10].join(", ")
                ))
                .collect::<String>()
        );
        let err = parse_output(&bomb, OutputFormat::Yaml).unwrap_err();
        assert!(err.contains("nodes"), "{err}");
    }
}
