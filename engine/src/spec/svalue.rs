//! A TOML value that remembers where it was written.
//!
//! `toml` deserialisation loses positions once values are merged across `extends` files, so
//! the loader converts each file into this tree (file id and byte span on every value and
//! key), merges trees, and only then converts to plain JSON for typed deserialisation. When
//! a typed field fails, its path leads back here to the exact file, line and column.

use indexmap::IndexMap;
use toml_edit::{Item, Value};

use super::diagnostic::{FileId, Loc};

#[derive(Clone, Debug)]
pub struct SValue {
    pub kind: SKind,
    /// Where the value was written (falls back to the key for implicit tables).
    pub loc: Loc,
    /// Where its key was written, if it has one.
    pub key_loc: Option<Loc>,
}

#[derive(Clone, Debug)]
pub enum SKind {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<SValue>),
    Table(IndexMap<String, SValue>),
}

impl SValue {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SKind::String(_) => "string",
            SKind::Integer(_) => "integer",
            SKind::Float(_) => "float",
            SKind::Bool(_) => "boolean",
            SKind::Datetime(_) => "datetime",
            SKind::Array(_) => "array",
            SKind::Table(_) => "table",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            SKind::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_table(&self) -> Option<&IndexMap<String, SValue>> {
        match &self.kind {
            SKind::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Location of the key if known, else the value: the best place to point at.
    pub fn best_loc(&self) -> Loc {
        self.key_loc.clone().unwrap_or_else(|| self.loc.clone())
    }

    /// Plain JSON, for typed deserialisation and for hashing.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            SKind::String(s) | SKind::Datetime(s) => J::String(s.clone()),
            SKind::Integer(i) => J::from(*i),
            SKind::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            SKind::Bool(b) => J::Bool(*b),
            SKind::Array(a) => J::Array(a.iter().map(SValue::to_json).collect()),
            SKind::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// Follow a path of keys and array indices (as produced by serde_path_to_error).
    pub fn lookup<'a>(&'a self, path: &[String]) -> Option<&'a SValue> {
        let mut cur = self;
        for seg in path {
            cur = match &cur.kind {
                SKind::Table(t) => t.get(seg)?,
                SKind::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Convert a parsed document into a tree.
    pub fn from_document(table: &toml_edit::Table, file: FileId) -> SValue {
        let loc = Loc {
            file,
            span: table.span().unwrap_or(0..0),
        };
        SValue {
            kind: SKind::Table(convert_table(
                table.iter().map(|(k, _)| k),
                table,
                file,
                &loc,
            )),
            loc,
            key_loc: None,
        }
    }
}

fn span_loc(span: Option<std::ops::Range<usize>>, file: FileId, fallback: &Loc) -> Loc {
    match span {
        Some(span) => Loc { file, span },
        None => fallback.clone(),
    }
}

fn convert_table<'a>(
    keys: impl Iterator<Item = &'a str>,
    table: &toml_edit::Table,
    file: FileId,
    parent: &Loc,
) -> IndexMap<String, SValue> {
    let mut out = IndexMap::new();
    for k in keys {
        let Some((key, item)) = table.get_key_value(k) else {
            continue;
        };
        let key_loc = key.span().map(|span| Loc { file, span });
        let fallback = key_loc.clone().unwrap_or_else(|| parent.clone());
        if let Some(v) = convert_item(item, file, &fallback) {
            out.insert(
                k.to_string(),
                SValue {
                    key_loc: key_loc.or_else(|| Some(v.loc.clone())),
                    ..v
                },
            );
        }
    }
    out
}

fn convert_item(item: &Item, file: FileId, fallback: &Loc) -> Option<SValue> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(convert_value(v, file, fallback)),
        Item::Table(t) => {
            let loc = span_loc(t.span(), file, fallback);
            Some(SValue {
                kind: SKind::Table(convert_table(t.iter().map(|(k, _)| k), t, file, &loc)),
                loc,
                key_loc: None,
            })
        }
        Item::ArrayOfTables(a) => {
            let loc = span_loc(a.span(), file, fallback);
            let items = a
                .iter()
                .map(|t| {
                    let tl = span_loc(t.span(), file, &loc);
                    SValue {
                        kind: SKind::Table(convert_table(t.iter().map(|(k, _)| k), t, file, &tl)),
                        loc: tl,
                        key_loc: None,
                    }
                })
                .collect();
            Some(SValue {
                kind: SKind::Array(items),
                loc,
                key_loc: None,
            })
        }
    }
}

fn convert_value(v: &Value, file: FileId, fallback: &Loc) -> SValue {
    let loc = span_loc(v.span(), file, fallback);
    let kind = match v {
        Value::String(s) => SKind::String(s.value().clone()),
        Value::Integer(i) => SKind::Integer(*i.value()),
        Value::Float(f) => SKind::Float(*f.value()),
        Value::Boolean(b) => SKind::Bool(*b.value()),
        Value::Datetime(d) => SKind::Datetime(d.value().to_string()),
        Value::Array(a) => SKind::Array(a.iter().map(|x| convert_value(x, file, &loc)).collect()),
        Value::InlineTable(t) => {
            let mut out = IndexMap::new();
            for (k, _) in t.iter() {
                if let Some((key, item)) = t.get_key_value(k) {
                    let key_loc = key.span().map(|span| Loc { file, span });
                    if let Some(val) = item.as_value() {
                        let mut sv = convert_value(val, file, &loc);
                        sv.key_loc = key_loc.or_else(|| Some(sv.loc.clone()));
                        out.insert(k.to_string(), sv);
                    }
                }
            }
            SKind::Table(out)
        }
    };
    SValue {
        kind,
        loc,
        key_loc: None,
    }
}
