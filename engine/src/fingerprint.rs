//! Cache keys, from an explicit and versioned [`Fingerprint`].
//!
//! A key is a blake3 digest over length-framed, domain-separated fields: the key format
//! version, the node kind and its implementation version, the canonical parameters (sorted
//! keys, typed values), the seed when the node uses one, salts, model digests and the
//! *content* digests of the inputs. Never hashed: run ids, timestamps, absolute paths,
//! pipeline or node names, thread counts, batch sizes. The fingerprint itself is stored beside
//! each result, so `nsync explain` can show exactly which field changed.
//!
//! Key version history (bump [`KEY_VERSION`] whenever the encoding below changes):
//! - 1: initial format.

use std::collections::BTreeMap;

use nsync_cache::{Digest, FramedHasher};
use serde::{Deserialize, Serialize};

use crate::node::WorkItem;

pub const KEY_VERSION: u64 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub key_version: u64,
    pub kind: String,
    pub version: u32,
    /// Canonical JSON (sorted keys).
    pub params: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Pipeline salt and node salt, when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub salts: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Digest>,
    /// Input port → digest of the artifact connected to it (a manifest or a blob).
    pub inputs: BTreeMap<String, Digest>,
}

// Field tags: never reuse a number for another meaning.
const T_VERSION: u8 = 1;
const T_KIND: u8 = 2;
const T_IMPL: u8 = 3;
const T_PARAMS: u8 = 4;
const T_SEED: u8 = 5;
const T_SALT: u8 = 6;
const T_MODEL: u8 = 7;
const T_INPUT: u8 = 8;
const T_ITEM_ID: u8 = 9;
const T_ITEM_FIELD: u8 = 10;
const T_ITEM_KEY: u8 = 11;

impl Fingerprint {
    /// Everything but the inputs. Destructures `self` so a new field cannot be forgotten.
    fn hasher(&self, domain: &str) -> FramedHasher {
        let Fingerprint {
            key_version,
            kind,
            version,
            params,
            seed,
            salts,
            models,
            inputs: _,
        } = self;
        let mut h = FramedHasher::new(domain);
        h.u64(T_VERSION, *key_version)
            .str(T_KIND, kind)
            .u64(T_IMPL, *version as u64)
            .field(T_PARAMS, &canonical_bytes(params));
        if let Some(s) = seed {
            h.u64(T_SEED, *s);
        }
        for s in salts {
            h.str(T_SALT, s);
        }
        for (name, d) in models {
            h.str(T_MODEL, name).digest(T_MODEL, d);
        }
        h
    }

    /// The key of a whole node: all fields, inputs included.
    pub fn whole_key(&self) -> Digest {
        let mut h = self.hasher("nsync.whole-node.v1");
        for (port, d) in &self.inputs {
            h.str(T_INPUT, port).digest(T_INPUT, d);
        }
        h.finish()
    }

    /// The key of one item of a per-item node: the node's fields (not its whole-collection
    /// inputs) plus the item's own input digests, and its id when the node is seeded.
    pub fn item_key(&self, item: &WorkItem) -> Digest {
        let mut h = self.hasher("nsync.item.v1");
        if self.seed.is_some() {
            h.str(T_ITEM_ID, &item.id);
        }
        for (name, d) in &item.fields {
            h.str(T_ITEM_FIELD, name).digest(T_ITEM_FIELD, d);
        }
        h.finish()
    }

    /// The key of a per-item node as a whole: its item ids and item keys.
    pub fn items_key(&self, items: &[(String, Digest)]) -> Digest {
        let mut h = self.hasher("nsync.per-item-node.v1");
        for (id, k) in items {
            h.str(T_ITEM_ID, id).digest(T_ITEM_KEY, k);
        }
        h.finish()
    }
}

/// Sort object keys recursively and normalise `-0.0`, so equal parameters hash equally.
pub fn canonical(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            J::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        J::Array(a) => J::Array(a.iter().map(canonical).collect()),
        J::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => J::from(0.0),
        other => other.clone(),
    }
}

pub fn canonical_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&canonical(v)).expect("JSON serialises")
}

/// Flatten JSON to `a.b.c = value` lines, for value-level diffs.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(params: serde_json::Value) -> Fingerprint {
        Fingerprint {
            key_version: KEY_VERSION,
            kind: "k".into(),
            version: 1,
            params,
            seed: None,
            salts: vec![],
            models: BTreeMap::new(),
            inputs: BTreeMap::new(),
        }
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = fp(serde_json::json!({"a": 1, "b": {"x": 1.5, "y": "s"}}));
        let b = fp(serde_json::json!({"b": {"y": "s", "x": 1.5}, "a": 1}));
        assert_eq!(a.whole_key(), b.whole_key());
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = fp(serde_json::json!({"lr": 0.1}));
        let k = base.whole_key();
        let mut v = base.clone();
        v.version = 2;
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.params = serde_json::json!({"lr": 0.2});
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.seed = Some(0);
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.salts = vec!["x".into()];
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.models.insert("m".into(), Digest::of(b"w"));
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.inputs.insert("p".into(), Digest::of(b"i"));
        assert_ne!(v.whole_key(), k);
        let mut v = base.clone();
        v.kind = "other".into();
        assert_ne!(v.whole_key(), k);
    }

    #[test]
    fn item_id_enters_only_seeded_keys() {
        let mut f = fp(serde_json::json!({}));
        let item = |id: &str| WorkItem {
            id: id.into(),
            fields: BTreeMap::from([("x".to_string(), Digest::of(b"c"))]),
            source: None,
            inline: None,
        };
        assert_eq!(f.item_key(&item("a")), f.item_key(&item("b")));
        f.seed = Some(1);
        assert_ne!(f.item_key(&item("a")), f.item_key(&item("b")));
    }

    #[test]
    fn negative_zero_is_zero() {
        assert_eq!(
            canonical_bytes(&serde_json::json!({"x": -0.0})),
            canonical_bytes(&serde_json::json!({"x": 0.0}))
        );
    }
}
