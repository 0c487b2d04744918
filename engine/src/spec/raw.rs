//! The merged pipeline tree read into plain structs, positions kept.
//!
//! Only the pipeline's own structure is checked here (top-level tables, `[pipeline]`
//! fields, each node's `kind`/`inputs`/`salt`); node parameters are checked by their kind
//! in [`super::validate`].

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::diagnostic::{did_you_mean, Diag, Loc};
use super::svalue::{SKind, SValue};
use crate::params::typed_params;

pub const TOP_LEVEL: &[&str] = &["pipeline", "vars", "models", "nodes"];
pub const NODE_RESERVED: &[&str] = &["kind", "inputs", "salt"];

/// The `[pipeline]` table.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineTable {
    /// The pipeline's name; run records, `nsync explain` and `nsync export` find earlier
    /// runs by it. Never part of a cache key.
    #[schemars(example = &"monet", length(min = 1))]
    pub name: String,
    /// Seed for every random choice; per-item seeds derive from it and the item's id, so
    /// adding items never changes the others' results.
    #[serde(default)]
    #[schemars(example = 42)]
    pub seed: u64,
    /// Changes every cache key of this pipeline without changing what is computed: use it
    /// to disown results (e.g. after a hardware fault).
    #[serde(default)]
    #[schemars(example = &"rerun-2026-11")]
    pub salt: Option<String>,
    /// Free text for humans.
    #[serde(default)]
    #[schemars(example = &"Monet, NSYNC default settings")]
    pub description: Option<String>,
    /// Default parameters per node kind, applied to every node of that kind; a node's own
    /// parameters win.
    #[serde(default)]
    #[schemars(example = serde_json::json!({"images": {"on_error": "skip"}}))]
    pub defaults: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// A `[models.<name>]` table: a named model reference.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelTable {
    /// Local folder (diffusers / Hugging Face layout) or file of the weights, relative to
    /// the pipeline file. Its content digest enters the keys of the nodes that use it.
    #[schemars(example = &"/models/stable-diffusion-v1-5")]
    pub path: String,
}

pub struct RawPipeline {
    pub name: String,
    pub seed: u64,
    pub salt: Option<String>,
    pub description: Option<String>,
    /// `[pipeline.defaults.<kind>]`, positions kept.
    pub defaults: IndexMap<String, SValue>,
    pub models: IndexMap<String, RawModel>,
    pub nodes: IndexMap<String, RawNode>,
    /// Where the `[nodes]` table is, for "no nodes" errors.
    pub loc: Loc,
}

pub struct RawModel {
    pub path: String,
    pub loc: Loc,
}

pub struct RawNode {
    pub name: String,
    pub loc: Loc,
    pub kind: String,
    pub kind_loc: Loc,
    /// port → (reference `node` or `node.port`, where written)
    pub inputs: IndexMap<String, (String, Loc)>,
    pub salt: Option<String>,
    /// The node's table without the reserved fields.
    pub params: SValue,
}

fn expect_table<'a>(
    v: &'a SValue,
    what: &str,
    diags: &mut Vec<Diag>,
) -> Option<&'a IndexMap<String, SValue>> {
    match &v.kind {
        SKind::Table(t) => Some(t),
        _ => {
            diags.push(Diag::new(
                format!("{what} must be a table, not a {}", v.type_name()),
                Some(v.loc.clone()),
            ));
            None
        }
    }
}

/// Read a typed table, mapping a failure to the position of the offending field.
fn typed<T: serde::de::DeserializeOwned>(
    v: &SValue,
    what: &str,
    diags: &mut Vec<Diag>,
) -> Option<T> {
    match typed_params::<T>(v.to_json()) {
        Ok(t) => Some(t),
        Err(e) => {
            let unknown = e.message.starts_with("unknown field");
            let loc = v
                .lookup(&e.path)
                .map(|x| if unknown { x.best_loc() } else { x.loc.clone() })
                .unwrap_or_else(|| v.best_loc());
            diags.push(Diag::new(format!("{what}: {}", e.message), Some(loc)).help_opt(e.help));
            None
        }
    }
}

fn unknown_key(key: &str, v: &SValue, known: &[&str], what: &str) -> Diag {
    Diag::new(
        format!("unknown field `{key}` in {what}"),
        Some(v.best_loc()),
    )
    .help_opt(
        did_you_mean(key, known.iter().copied())
            .or_else(|| Some(format!("expected one of: {}", known.join(", ")))),
    )
}

pub fn read(root: &SValue, diags: &mut Vec<Diag>) -> Option<RawPipeline> {
    let top = expect_table(root, "a pipeline file", diags)?;
    for (k, v) in top {
        if !TOP_LEVEL.contains(&k.as_str()) {
            diags.push(unknown_key(
                k,
                v,
                &["extends", "pipeline", "vars", "models", "nodes"],
                "the pipeline file",
            ));
        }
    }
    let mut p = RawPipeline {
        name: String::new(),
        seed: 0,
        salt: None,
        description: None,
        defaults: IndexMap::new(),
        models: IndexMap::new(),
        nodes: IndexMap::new(),
        loc: root.loc.clone(),
    };
    match top.get("pipeline") {
        Some(pv) => {
            if let Some(t) = typed::<PipelineTable>(pv, "[pipeline]", diags) {
                if t.name.trim().is_empty() {
                    diags.push(Diag::new(
                        "`pipeline.name` must not be empty",
                        Some(pv.best_loc()),
                    ));
                }
                p.name = t.name;
                p.seed = t.seed;
                p.salt = t.salt;
                p.description = t.description;
                if let Some(d) = pv
                    .as_table()
                    .and_then(|t| t.get("defaults"))
                    .and_then(|d| d.as_table())
                {
                    p.defaults = d.clone();
                }
            }
        }
        None => diags.push(
            Diag::new(
                "the pipeline has no [pipeline] table",
                Some(Loc {
                    file: root.loc.file,
                    span: 0..0,
                }),
            )
            .help("start the file with\n[pipeline]\nname = \"my-style\"\nseed = 0"),
        ),
    }
    if let Some(t) = top
        .get("vars")
        .and_then(|v| expect_table(v, "[vars]", diags))
    {
        for (k, v) in t {
            if matches!(v.kind, SKind::Table(_) | SKind::Array(_)) {
                diags.push(Diag::new(
                    format!("variable `{k}` must be a string, number or boolean"),
                    Some(v.loc.clone()),
                ));
            }
        }
    }
    if let Some(t) = top
        .get("models")
        .and_then(|v| expect_table(v, "[models]", diags))
    {
        for (name, v) in t {
            if let Some(m) = typed::<ModelTable>(v, &format!("[models.{name}]"), diags) {
                p.models.insert(
                    name.clone(),
                    RawModel {
                        path: m.path,
                        loc: v.best_loc(),
                    },
                );
            }
        }
    }
    match top.get("nodes") {
        Some(nv) => {
            p.loc = nv.best_loc();
            if let Some(t) = expect_table(nv, "[nodes]", diags) {
                for (name, v) in t {
                    if let Some(n) = read_node(name, v, diags) {
                        p.nodes.insert(name.clone(), n);
                    }
                }
            }
        }
        None => diags.push(
            Diag::new("the pipeline has no nodes", Some(root.loc.clone()))
                .help("declare nodes as [nodes.<name>] tables with a `kind`"),
        ),
    }
    Some(p)
}

fn read_node(name: &str, v: &SValue, diags: &mut Vec<Diag>) -> Option<RawNode> {
    let t = expect_table(v, &format!("node `{name}`"), diags)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        diags.push(Diag::new(
            format!("node name `{name}` may only contain letters, digits, `_` and `-`"),
            Some(v.best_loc()),
        ));
    }
    let Some(kind_v) = t.get("kind") else {
        diags.push(
            Diag::new(format!("node `{name}` has no `kind`"), Some(v.best_loc()))
                .help("add e.g. `kind = \"images\"`; `nsync schema` lists the kinds"),
        );
        return None;
    };
    let Some(kind) = kind_v.as_str() else {
        diags.push(Diag::new(
            "`kind` must be a string",
            Some(kind_v.loc.clone()),
        ));
        return None;
    };
    let mut inputs = IndexMap::new();
    if let Some(iv) = t.get("inputs") {
        match &iv.kind {
            SKind::Table(it) => {
                for (port, r) in it {
                    match r.as_str() {
                        Some(s) => {
                            inputs.insert(port.clone(), (s.to_string(), r.loc.clone()));
                        }
                        None => diags.push(
                            Diag::new(format!("input `{port}` must name a node as a string, like \"captions\" or \"captions.texts\""), Some(r.loc.clone())),
                        ),
                    }
                }
            }
            _ => diags.push(
                Diag::new(
                    "`inputs` must be a table of port = \"node\" references",
                    Some(iv.loc.clone()),
                )
                .help("e.g. inputs = { images = \"paintings\" }"),
            ),
        }
    }
    let salt = match t.get("salt") {
        Some(s) => match s.as_str() {
            Some(x) => Some(x.to_string()),
            None => {
                diags.push(Diag::new("`salt` must be a string", Some(s.loc.clone())));
                None
            }
        },
        None => None,
    };
    let mut params = v.clone();
    if let SKind::Table(pt) = &mut params.kind {
        for r in NODE_RESERVED {
            pt.shift_remove(*r);
        }
    }
    Some(RawNode {
        name: name.to_string(),
        loc: v.best_loc(),
        kind: kind.to_string(),
        kind_loc: kind_v.loc.clone(),
        inputs,
        salt,
        params,
    })
}
