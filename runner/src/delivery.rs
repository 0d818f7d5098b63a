//! How parameters reach an action: serialised in the action's `parameter_format` (JSON, dotenv,
//! YAML), then written to its stdin or to a private file (see [`crate::execute`]).

use attune_nats::model::ParameterFormat;
use serde_json::{Map, Value};

/// Serialises parameters in the action's `parameter_format`.
pub fn format_parameters(params: &Map<String, Value>, format: ParameterFormat) -> Vec<u8> {
    match format {
        ParameterFormat::Json => serde_json::to_vec(params).expect("a JSON map serialises"),
        ParameterFormat::Yaml => serde_yaml::to_string(params)
            .expect("a JSON map serialises as YAML")
            .into_bytes(),
        ParameterFormat::Dotenv => {
            let mut out = String::new();
            for (k, v) in params {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                // Single quotes keep the value literal for `. file` in sh; a quote inside is
                // closed, escaped and reopened.
                out.push_str(&format!("{k}='{}'\n", text.replace('\'', r"'\''")));
            }
            out.into_bytes()
        }
    }
}

/// The file extension used for a parameters file of `format`.
pub fn params_extension(format: ParameterFormat) -> &'static str {
    match format {
        ParameterFormat::Json => "json",
        ParameterFormat::Dotenv => "env",
        ParameterFormat::Yaml => "yaml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_serialise_in_each_format() {
        let p = json!({"name": "it's", "n": 3}).as_object().unwrap().clone();
        assert_eq!(
            format_parameters(&p, ParameterFormat::Json),
            br#"{"n":3,"name":"it's"}"#
        );
        assert_eq!(
            String::from_utf8(format_parameters(&p, ParameterFormat::Dotenv)).unwrap(),
            "n='3'\nname='it'\\''s'\n"
        );
        let yaml = String::from_utf8(format_parameters(&p, ParameterFormat::Yaml)).unwrap();
        assert!(
            yaml.contains("name: it's") && yaml.contains("n: 3"),
            "{yaml}"
        );
    }
}
