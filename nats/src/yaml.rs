//! YAML from untrusted sources, with the cost of alias expansion bounded.
//!
//! A few kilobytes of YAML can describe billions of nodes: each anchor is referenced by several
//! aliases, each of which expands the whole anchored tree again ("billion laughs"). The YAML
//! parser bounds the number of alias jumps, not the nodes they produce, so a 20 KB document can
//! still cost gigabytes and most of a minute. [`check`] first walks the document with a visitor
//! that counts every value it is handed — expanded aliases included — builds nothing, and stops
//! once the budget is spent, so the work is linear in the budget whatever the document says. The
//! pack loader (budget: the file's length plus 1024) and action output parsing ([`MAX_NODES`])
//! both go through it.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde_json::Value;

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

/// Checks that `text` is one YAML document that expands to at most `max_nodes` values, by
/// visiting every value (aliases expanded) and building nothing. Fails as soon as the budget is
/// spent, so the cost is linear in the budget.
pub fn check(text: &str, max_nodes: usize) -> Result<(), YamlError> {
    let left = Cell::new(max_nodes);
    let counter = NodeCounter { left: &left };
    match counter.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(()) => Ok(()),
        Err(_) if left.get() == 0 => Err(YamlError::TooLarge { limit: max_nodes }),
        Err(e) => Err(YamlError::Syntax(e)),
    }
}

/// Parses `text` as one YAML document into JSON, once [`check`] has found it within
/// `max_nodes` values. An empty document is `null`.
pub fn to_json(text: &str, max_nodes: usize) -> Result<Value, YamlError> {
    check(text, max_nodes)?;
    serde_yaml::from_str(text).map_err(YamlError::Syntax)
}

/// Counts the values of a document as the parser hands them over, expanded aliases included.
/// Walks a document as serde_yaml expands it, counting every value down from `left`, and stops
/// with an error when none are left. It builds nothing, so counting costs no memory.
#[derive(Clone, Copy)]
struct NodeCounter<'a> {
    /// Values still allowed.
    left: &'a Cell<usize>,
}

impl NodeCounter<'_> {
    /// Counts one value.
    fn tick<E: de::Error>(self) -> Result<(), E> {
        match self.left.get() {
            0 => Err(E::custom("too many values")),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for NodeCounter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeCounter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.tick()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag, then the value.
        use de::VariantAccess;
        let (_, variant) = data.variant_seed(std::marker::PhantomData::<de::IgnoredAny>)?;
        variant.newtype_variant_seed(self)
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
