//! YAML from untrusted sources, with the cost of alias expansion bounded.
//!
//! A few kilobytes of YAML can describe billions of nodes: each anchor is referenced by several
//! aliases, each of which expands the whole anchored tree again ("billion laughs"). The YAML
//! parser bounds the number of alias jumps, not the nodes they produce, so a 20 KB document can
//! still cost gigabytes and most of a minute. [`to_json`] deserializes through a visitor that
//! counts every node it is handed — expanded aliases included — and stops with an error once
//! [`MAX_NODES`] (or a caller's budget) is passed, so the work is linear in the budget whatever
//! the document says.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The most nodes (scalars, sequences, mappings, with aliases expanded) one document may have.
pub const MAX_NODES: usize = 1_000_000;

/// Why a YAML document was refused.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The document is not valid YAML, or not representable as JSON.
    #[error("{0}")]
    Syntax(#[source] serde_yaml::Error),
    /// The document expands to more nodes than allowed (usually through aliases).
    #[error("it expands to more than {limit} nodes (aliases of aliases?); refused")]
    TooLarge {
        /// The node budget that was passed.
        limit: usize,
    },
}

/// Parses `text` as one YAML document into JSON, refusing it once it expands past `max_nodes`
/// nodes. An empty document is `null`.
pub fn to_json(text: &str, max_nodes: usize) -> Result<Value, YamlError> {
    let budget = Budget {
        left: Cell::new(max_nodes),
        exceeded: Cell::new(false),
    };
    let de = serde_yaml::Deserializer::from_str(text);
    match (Node { budget: &budget }).deserialize(de) {
        Ok(v) => Ok(v),
        Err(_) if budget.exceeded.get() => Err(YamlError::TooLarge { limit: max_nodes }),
        Err(e) => Err(YamlError::Syntax(e)),
    }
}

/// The nodes a document may still produce.
struct Budget {
    /// Nodes left.
    left: Cell<usize>,
    /// Set when the budget ran out (to tell that error from a syntax error).
    exceeded: Cell<bool>,
}

impl Budget {
    /// Takes one node from the budget.
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("node budget exceeded"))
            }
        }
    }
}

/// Deserializes one node (and everything below it) as JSON, counting every node.
#[derive(Clone, Copy)]
struct Node<'b> {
    /// The shared budget.
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take()?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} cannot be represented in JSON")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                // JSON keys are strings: other scalars keep their text.
                Value::Number(_) | Value::Bool(_) | Value::Null => key.to_string(),
                _ => return Err(de::Error::custom("a mapping key must be a scalar")),
            };
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinary_documents_become_json() {
        assert_eq!(
            to_json("a: 1\nb: [x, 2.5, true, null]\n", MAX_NODES).unwrap(),
            json!({"a": 1, "b": ["x", 2.5, true, null]})
        );
        assert_eq!(to_json("", MAX_NODES).unwrap(), Value::Null);
        assert_eq!(
            to_json("base: &b {x: 1}\ncopy: *b\n", MAX_NODES).unwrap(),
            json!({"base": {"x": 1}, "copy": {"x": 1}})
        );
        assert_eq!(to_json("1: one\n", MAX_NODES).unwrap(), json!({"1": "one"}));
        assert!(matches!(
            to_json("a: [", MAX_NODES),
            Err(YamlError::Syntax(_))
        ));
    }

    /// `levels` levels of ten aliases each over a list of `leaves` scalars, after `padding`
    /// plain scalars (which raise the parser's own alias-jump allowance, as a real file would).
    fn alias_bomb(leaves: usize, levels: usize, padding: usize) -> String {
        let mut doc = format!("pad: [{}]\n", vec!["p"; padding].join(", "));
        doc.push_str(&format!("a0: &a0 [{}]\n", vec!["lol"; leaves].join(", ")));
        for i in 1..=levels {
            let prev = format!("*a{}", i - 1);
            doc.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                [prev.as_str(); 10].join(", ")
            ));
        }
        doc
    }

    #[test]
    fn alias_bombs_are_refused_by_the_node_budget() {
        // Ten million nodes from about 5 KB, within the parser's alias-jump allowance.
        let doc = alias_bomb(100, 5, 1200);
        assert!(doc.len() < 8 * 1024, "{}", doc.len());
        let err = to_json(&doc, MAX_NODES).unwrap_err();
        assert!(matches!(err, YamlError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than 1000000 nodes"), "{err}");
    }

    #[test]
    fn the_classic_billion_laughs_is_refused() {
        assert!(to_json(&alias_bomb(10, 9, 0), MAX_NODES).is_err());
    }
}
