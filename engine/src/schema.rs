//! The JSON Schema of pipeline files, generated from the node kinds' parameter types.
//!
//! `nsync schema` prints it; editors use it for completion and checking. A test compares
//! it with the committed copy (`schema/pipeline.schema.json`) so the two never drift.

use serde_json::{json, Map, Value};

use crate::registry::Registry;
use crate::spec::raw::{ModelTable, PipelineTable};

/// The schema of a typed table, its definitions hoisted into the shared `$defs`.
fn table_schema<T: schemars::JsonSchema>(defs: &mut Map<String, Value>) -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).expect("schema serialises");
    if let Some(Value::Object(d)) = v.as_object_mut().and_then(|o| o.remove("$defs")) {
        defs.extend(d);
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    v
}

pub fn pipeline_schema(registry: &Registry) -> Value {
    let mut defs = Map::new();
    let mut kinds = Vec::new();
    for k in registry.kinds() {
        let mut params = serde_json::to_value(k.params_schema()).expect("schema serialises");
        if let Some(Value::Object(d)) = params.as_object_mut().and_then(|o| o.remove("$defs")) {
            for (name, def) in d {
                if let Some(prev) = defs.get(&name) {
                    assert_eq!(
                        prev, &def,
                        "two node kinds define different `{name}` schemas"
                    );
                }
                defs.insert(name, def);
            }
        }
        let mut props = params
            .get("properties")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let props = props.as_object_mut().expect("params are an object");
        props.insert(
            "kind".into(),
            json!({"const": k.kind(), "description": k.doc()}),
        );
        props.insert("salt".into(), json!({
            "type": "string",
            "description": "Changes this node's cache keys without changing what it computes: use it to disown results (e.g. after a hardware fault).",
            "examples": ["rerun-2026-11"]
        }));
        let declared = k.declared_inputs();
        let mut inputs = Map::new();
        for i in &declared {
            inputs.insert(
                i.name.clone(),
                json!({
                    "type": "string",
                    "description": format!("{} Takes {} ({}).", i.doc, i.ty.name, i.ty.doc),
                    "examples": ["other_node", "other_node.port"]
                }),
            );
        }
        let required_inputs: Vec<&str> = declared
            .iter()
            .filter(|i| i.required)
            .map(|i| i.name.as_str())
            .collect();
        let mut input_schema = json!({
            "type": "object",
            "description": "Input ports, each naming the node that feeds it (`node` for its default output, `node.port` for another).",
            "properties": inputs,
            "additionalProperties": k.free_inputs(),
        });
        if k.free_inputs() {
            input_schema["additionalProperties"] = json!({"type": "string"});
        }
        if !required_inputs.is_empty() {
            input_schema["required"] = json!(required_inputs);
        }
        props.insert("inputs".into(), input_schema);
        let mut required: Vec<Value> = params
            .get("required")
            .and_then(|r| r.as_array().cloned())
            .unwrap_or_default();
        required.insert(0, json!("kind"));
        if !required_inputs.is_empty() {
            required.push(json!("inputs"));
        }
        kinds.push(json!({
            "title": k.kind(),
            "description": k.doc(),
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        }));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nsync pipeline",
        "description": "A pipeline file: a [pipeline] table, optional [vars] and [models], and [nodes.<name>] tables wired into a DAG by their `inputs`.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "extends": {
                "type": "string",
                "description": "Another pipeline file (relative to this one) to start from; this file's tables are merged over it, key by key.",
                "examples": ["base.toml"]
            },
            "pipeline": table_schema::<PipelineTable>(&mut defs),
            "vars": {
                "type": "object",
                "description": "Variables, used in any string as `${name}` (`$${` for a literal). A string that is exactly `${name}` takes the variable's type.",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
                "examples": [{"style": "monet", "generic": "painting"}]
            },
            "models": {
                "type": "object",
                "description": "Named model references, used by nodes through their `model` parameters.",
                "additionalProperties": table_schema::<ModelTable>(&mut defs),
            },
            "nodes": {
                "type": "object",
                "description": "The nodes, by name (letters, digits, `_`, `-`).",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {"oneOf": kinds}
            }
        },
        "$defs": defs,
    })
}
