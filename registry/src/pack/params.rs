//! Action parameters: both accepted styles normalised to one JSON Schema, and checked.
//!
//! Packs written for StackStorm describe parameters as a flat map
//! (`message: {type: string, required: true, default: hi}`); others write a full JSON Schema
//! (`type: object, properties: …, required: […]`). Downstream (runner checks, CLI typing of
//! `key=value`) only ever sees the JSON Schema form.

use attune_nats::name::check_parameter_name;
use serde_json::{json, Map, Value};

use super::problem::name_message;

/// Fields a flat-map parameter may carry besides JSON Schema keywords.
const FLAT_ONLY: &[&str] = &["required", "secret", "immutable", "position"];

/// Why the `parameters` field cannot be read as either style; displays as the author's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The field itself is not a mapping.
    #[error("parameters must be a mapping")]
    NotAMapping,
    /// A flat-map entry is not a mapping.
    #[error("parameter \"{0}\" must be a mapping like {{type: string}}")]
    ParamNotAMapping(String),
    /// A flat-map entry's `required` is not a boolean.
    #[error("parameter \"{0}\": required must be true or false")]
    RequiredNotBool(String),
}

impl ParamsError {
    /// The parameter at fault, so the problem lands on its line; `None` for the field itself.
    pub fn param(&self) -> Option<&str> {
        match self {
            ParamsError::NotAMapping => None,
            ParamsError::ParamNotAMapping(p) | ParamsError::RequiredNotBool(p) => Some(p),
        }
    }
}

/// Turns the `parameters` field into a JSON Schema object, or says what is malformed and at
/// which parameter.
pub fn normalize(params: Option<&Value>) -> Result<Value, ParamsError> {
    let Some(params) = params.filter(|p| !p.is_null()) else {
        return Ok(attune_nats::model::empty_object_schema());
    };
    let Some(map) = params.as_object() else {
        return Err(ParamsError::NotAMapping);
    };
    if map.get("type").and_then(Value::as_str) == Some("object") {
        // Already a full schema.
        return Ok(params.clone());
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, spec) in map {
        let Some(spec) = spec.as_object() else {
            return Err(ParamsError::ParamNotAMapping(name.clone()));
        };
        let mut schema = Map::new();
        for (k, v) in spec {
            match k.as_str() {
                "required" => match v.as_bool() {
                    Some(true) => required.push(Value::String(name.clone())),
                    Some(false) => {}
                    None => return Err(ParamsError::RequiredNotBool(name.clone())),
                },
                // Kept as an annotation: the runner and CLI use it to mask values.
                "secret" => {
                    schema.insert(k.clone(), v.clone());
                }
                k if FLAT_ONLY.contains(&k) => {}
                _ => {
                    schema.insert(k.clone(), v.clone());
                }
            }
        }
        properties.insert(name.clone(), Value::Object(schema));
    }
    let mut schema = json!({ "type": "object", "properties": properties });
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    Ok(schema)
}

/// Checks that every parameter name passes [`check_parameter_name`] (names reach environment
/// variables and files), that `schema` is a valid JSON Schema and that every property default
/// satisfies its own property schema. Returns every problem as `(parameter or None, message)`.
pub fn check_schema(schema: &Value) -> Vec<(Option<String>, String)> {
    let mut problems = Vec::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for name in props.keys() {
            if let Err(e) = check_parameter_name(name) {
                problems.push((Some(name.clone()), name_message("parameter name", name, &e)));
            }
        }
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        let at = e.instance_path().to_string();
        let param = property_of_pointer(&at);
        problems.push((param, format!("invalid parameter schema at \"{at}\": {e}")));
        return problems;
    }
    if jsonschema::validator_for(schema).is_err() {
        problems.push((None, "parameter schema cannot be compiled".into()));
        return problems;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let Some(default) = prop.get("default") else {
                continue;
            };
            if let Ok(v) = jsonschema::validator_for(prop) {
                if let Err(e) = v.validate(default) {
                    problems.push((
                        Some(name.clone()),
                        format!("parameter \"{name}\": default {default} does not match its schema: {e}"),
                    ));
                }
            }
        }
    }
    problems
}

/// `/properties/count/type` → `count`.
fn property_of_pointer(pointer: &str) -> Option<String> {
    let mut parts = pointer.split('/').skip(1);
    (parts.next() == Some("properties"))
        .then(|| parts.next().map(str::to_string))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_map_becomes_json_schema() {
        let flat = json!({
            "message": {"type": "string", "required": true, "description": "what to say"},
            "count": {"type": "integer", "default": 1},
            "token": {"type": "string", "secret": true}
        });
        let schema = normalize(Some(&flat)).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["message"]));
        assert_eq!(schema["properties"]["count"]["default"], 1);
        assert_eq!(schema["properties"]["token"]["secret"], true);
        assert!(schema["properties"]["message"].get("required").is_none());
    }

    #[test]
    fn full_schema_is_kept() {
        let full =
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        assert_eq!(normalize(Some(&full)).unwrap(), full);
    }

    #[test]
    fn a_parameter_named_type_is_still_flat() {
        let flat = json!({"type": {"type": "string"}});
        let schema = normalize(Some(&flat)).unwrap();
        assert_eq!(schema["properties"]["type"]["type"], "string");
    }

    #[test]
    fn missing_parameters_is_an_empty_object() {
        assert_eq!(normalize(None).unwrap()["type"], "object");
    }

    #[test]
    fn malformed_flat_entries_are_rejected() {
        assert!(normalize(Some(&json!({"a": "string"}))).is_err());
        assert!(normalize(Some(&json!({"a": {"required": "yes"}}))).is_err());
        assert!(normalize(Some(&json!(["a"]))).is_err());
    }

    #[test]
    fn malformed_entries_name_their_parameter_in_the_message() {
        let err = normalize(Some(&json!({"a": "string"}))).unwrap_err();
        assert_eq!(err.param(), Some("a"));
        assert_eq!(
            err.to_string(),
            "parameter \"a\" must be a mapping like {type: string}"
        );
        let err = normalize(Some(&json!({"a": {"required": "yes"}}))).unwrap_err();
        assert_eq!(err.param(), Some("a"));
        assert_eq!(
            err.to_string(),
            "parameter \"a\": required must be true or false"
        );
        let err = normalize(Some(&json!(["a"]))).unwrap_err();
        assert_eq!(err.param(), None);
        assert_eq!(err.to_string(), "parameters must be a mapping");
    }

    #[test]
    fn invalid_type_is_reported_with_parameter() {
        let schema = normalize(Some(&json!({"n": {"type": "integr"}}))).unwrap();
        let problems = check_schema(&schema);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0.as_deref(), Some("n"));
    }

    #[test]
    fn default_must_match_its_schema() {
        let schema = normalize(Some(
            &json!({"level": {"type": "string", "enum": ["a", "b"], "default": "c"}}),
        ))
        .unwrap();
        let problems = check_schema(&schema);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].1.contains("default"));
    }

    #[test]
    fn parameter_names_must_be_safe_identifiers() {
        for bad in [
            "x; touch pwned; y",
            "PATH",
            "LD_PRELOAD",
            "a-b",
            "2x",
            "ATTUNE_X",
        ] {
            let schema = normalize(Some(&json!({ bad: {"type": "string"} }))).unwrap();
            let problems = check_schema(&schema);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].0.as_deref(), Some(bad));
            assert!(problems[0].1.starts_with("parameter name"), "{problems:?}");
        }
        let full = json!({"type": "object", "properties": {"bash_env": {"type": "string"}}});
        let problems = check_schema(&full);
        assert!(problems[0].1.contains("reserved"), "{problems:?}");
    }

    #[test]
    fn valid_schema_has_no_problems() {
        let schema = normalize(Some(
            &json!({"n": {"type": "integer", "default": 3, "minimum": 1}}),
        ))
        .unwrap();
        assert!(check_schema(&schema).is_empty());
    }
}
