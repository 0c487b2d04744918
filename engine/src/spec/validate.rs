//! From the raw tree to a [`Pipeline`]: kinds, parameters, edges, port types, cycles.
//!
//! Every problem is collected (not just the first) with its position and a hint, and the
//! result is an error unless there are none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};

use super::diagnostic::{did_you_mean, Diag, PipelineError};
use super::load::Loaded;
use super::raw::{self, RawNode};
use crate::node::{BuildCx, Node};
use crate::pipeline::{Edge, Pipeline, PipelineNode};
use crate::registry::Registry;

/// Load, merge and validate the pipeline at `path`.
pub fn load_pipeline(path: &Path, registry: &Registry) -> Result<Pipeline, PipelineError> {
    let loaded = super::load::load(path)?;
    validate(loaded, registry)
}

pub fn validate(loaded: Loaded, registry: &Registry) -> Result<Pipeline, PipelineError> {
    let mut diags = Vec::new();
    let raw = raw::read(&loaded.root, &mut diags);
    let Some(raw) = raw else {
        return Err(PipelineError {
            sources: loaded.sources,
            diags,
        });
    };
    // Absolute once here, so that nodes never resolve the working directory per file.
    let dir = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = std::path::absolute(&dir).unwrap_or(dir);

    for (kind, d) in &raw.defaults {
        if registry.get(kind).is_none() {
            diags.push(
                Diag::new(
                    format!("[pipeline.defaults] names unknown node kind `{kind}`"),
                    Some(d.best_loc()),
                )
                .help_opt(did_you_mean(kind, registry.kind_names())),
            );
        }
    }
    let models: IndexMap<String, PathBuf> = raw
        .models
        .iter()
        .map(|(k, m)| (k.clone(), dir.join(&m.path)))
        .collect();

    // Build every node from its parameters.
    let mut built: IndexMap<String, (Box<dyn Node>, &RawNode)> = IndexMap::new();
    for n in raw.nodes.values() {
        let Some(kind) = registry.get(&n.kind) else {
            diags.push(
                Diag::new(
                    format!("unknown node kind `{}` in node `{}`", n.kind, n.name),
                    Some(n.kind_loc.clone()),
                )
                .help_opt(did_you_mean(&n.kind, registry.kind_names()).or_else(
                    || {
                        Some(format!(
                            "known kinds: {}",
                            registry.kind_names().collect::<Vec<_>>().join(", ")
                        ))
                    },
                )),
            );
            continue;
        };
        let connected: Vec<String> = n.inputs.keys().cloned().collect();
        let cx = BuildCx {
            pipeline_dir: &dir,
            connected_inputs: &connected,
            models: &models,
        };
        // `[pipeline.defaults.<kind>]` first, the node's own parameters over it.
        let params = match raw.defaults.get(&n.kind) {
            Some(d) => {
                let mut merged = d.clone();
                super::load::deep_merge(&mut merged, n.params.clone());
                merged
            }
            None => n.params.clone(),
        };
        match kind.build(params.to_json(), &cx) {
            Ok(node) => {
                built.insert(n.name.clone(), (node, n));
            }
            Err(e) => {
                // Point at the key for unknown fields, at the value for wrong values.
                let unknown = e.message.starts_with("unknown field");
                let loc = params
                    .lookup(&e.path)
                    .map(|v| if unknown { v.best_loc() } else { v.loc.clone() })
                    .unwrap_or_else(|| n.loc.clone());
                let named = e
                    .path
                    .last()
                    .is_some_and(|l| e.message.contains(&format!("`{l}`")));
                let what = if e.path.is_empty() || named {
                    String::new()
                } else {
                    format!(" (`{}`)", e.path.join("."))
                };
                diags.push(
                    Diag::new(
                        format!("node `{}` ({}): {}{what}", n.name, n.kind, e.message),
                        Some(loc),
                    )
                    .help_opt(e.help),
                );
            }
        }
    }

    // Every model a node uses must be declared.
    for (name, (node, rn)) in &built {
        for m in node.models() {
            if !models.contains_key(&m) {
                diags.push(
                    Diag::new(
                        format!(
                            "node `{name}` uses model `{m}`, which is not declared under [models]"
                        ),
                        Some(rn.loc.clone()),
                    )
                    .help_opt(
                        did_you_mean(&m, models.keys().map(String::as_str)).or_else(|| {
                            Some(format!("add\n[models.{m}]\npath = \"/path/to/weights\""))
                        }),
                    ),
                );
            }
        }
    }

    // Every reference must name a node, whether or not its own node built.
    let names: Vec<&str> = raw.nodes.keys().map(String::as_str).collect();
    for rn in raw.nodes.values() {
        for (port, (reference, loc)) in &rn.inputs {
            let target = reference
                .split_once('.')
                .map_or(reference.as_str(), |(a, _)| a);
            if !raw.nodes.contains_key(target) {
                diags.push(
                    Diag::new(
                        format!(
                            "input `{port}` of node `{}` refers to unknown node `{target}`",
                            rn.name
                        ),
                        Some(loc.clone()),
                    )
                    .help_opt(
                        did_you_mean(target, names.iter().copied().filter(|n| *n != rn.name))
                            .or_else(|| {
                                Some(format!("nodes in this pipeline: {}", names.join(", ")))
                            }),
                    ),
                );
            }
        }
    }

    // Resolve edges and check port types.
    let mut edges: HashMap<String, Vec<(Edge, String)>> = HashMap::new();
    for (name, (node, rn)) in &built {
        let specs = node.inputs();
        for (port, (reference, loc)) in &rn.inputs {
            let Some(spec) = specs.iter().find(|s| &s.name == port) else {
                diags.push(
                    Diag::new(
                        format!("node `{name}` ({}) has no input `{port}`", rn.kind),
                        Some(loc.clone()),
                    )
                    .help_opt(
                        did_you_mean(port, specs.iter().map(|s| s.name.as_str())).or_else(|| {
                            Some(format!(
                                "its inputs: {}",
                                specs
                                    .iter()
                                    .map(|s| s.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }),
                    ),
                );
                continue;
            };
            let (target, tport) = match reference.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (reference.as_str(), None),
            };
            let Some((tnode, _)) = built.get(target) else {
                continue;
            };
            let outs = tnode.outputs();
            let out = match tport {
                None => outs.first(),
                Some(p) => outs.iter().find(|o| o.name == p),
            };
            let Some(out) = out else {
                diags.push(
                    Diag::new(
                        format!("node `{target}` has no output `{}`", tport.unwrap_or("")),
                        Some(loc.clone()),
                    )
                    .help_opt(
                        did_you_mean(tport.unwrap_or(""), outs.iter().map(|o| o.name)).or_else(
                            || {
                                Some(format!(
                                    "its outputs: {}",
                                    outs.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
                                ))
                            },
                        ),
                    ),
                );
                continue;
            };
            if out.ty != spec.ty {
                diags.push(
                    Diag::new(
                        format!(
                            "type mismatch: input `{port}` of node `{name}` takes {}, but `{target}.{}` produces {}",
                            spec.ty.name, out.name, out.ty.name
                        ),
                        Some(loc.clone()),
                    )
                    .help(format!("connect a node whose output is {} ({})", spec.ty.name, spec.ty.doc)),
                );
                continue;
            }
            edges.entry(name.clone()).or_default().push((
                Edge {
                    port: port.clone(),
                    from: usize::MAX,
                    from_port: out.name.to_string(),
                    ty: out.ty,
                },
                target.to_string(),
            ));
        }
        for s in specs.iter().filter(|s| s.required) {
            if !rn.inputs.contains_key(&s.name) {
                diags.push(
                    Diag::new(
                        format!(
                            "node `{name}` ({}) needs input `{}` ({})",
                            rn.kind, s.name, s.doc
                        ),
                        Some(rn.loc.clone()),
                    )
                    .help(format!(
                        "add `inputs = {{ {} = \"<node>\" }}` naming a node that produces {}",
                        s.name, s.ty.name
                    )),
                );
            }
        }
    }

    // Cycles, then a deterministic topological order.
    let mut g: DiGraph<String, ()> = DiGraph::new();
    let idx: HashMap<String, NodeIndex> = built
        .keys()
        .map(|n| (n.clone(), g.add_node(n.clone())))
        .collect();
    for (name, es) in &edges {
        for (_, target) in es {
            g.add_edge(idx[target], idx[name], ());
        }
    }
    if let Err(cycle) = petgraph::algo::toposort(&g, None) {
        let path = crate::dag::cycle_through(&g, cycle.node_id());
        let first = &path[0];
        let second = path.get(1).unwrap_or(first);
        let loc = built[second.as_str()]
            .1
            .inputs
            .values()
            .find(|(r, _)| r.split('.').next() == Some(first.as_str()))
            .map(|(_, l)| l.clone());
        diags.push(
            Diag::new(
                format!("the pipeline has a cycle: {}", path.join(" → ")),
                loc,
            )
            .help("a node cannot depend on its own output, directly or through other nodes"),
        );
    }
    if !diags.is_empty() {
        return Err(PipelineError {
            sources: loaded.sources,
            diags,
        });
    }

    let order = kahn_in_declaration_order(&built, &edges);
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut nodes = Vec::with_capacity(order.len());
    let mut built = built;
    for name in &order {
        let (node, rn) = built.shift_remove(name.as_str()).expect("built");
        let mut inputs: Vec<Edge> = edges
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .map(|(mut e, target)| {
                e.from = position[target.as_str()];
                e
            })
            .collect();
        inputs.sort_by(|a, b| a.port.cmp(&b.port));
        nodes.push(PipelineNode {
            name: name.clone(),
            kind: rn.kind.clone(),
            outputs: node.outputs(),
            node,
            inputs,
            salt: rn.salt.clone(),
            loc: rn.loc.clone(),
        });
    }
    Ok(Pipeline {
        name: raw.name,
        seed: raw.seed,
        salt: raw.salt,
        description: raw.description,
        file: loaded.path.clone(),
        dir,
        models,
        nodes,
        resolved: loaded.root.to_json(),
        sources: loaded.sources,
    })
}

fn kahn_in_declaration_order(
    built: &IndexMap<String, (Box<dyn Node>, &RawNode)>,
    edges: &HashMap<String, Vec<(Edge, String)>>,
) -> Vec<String> {
    let mut indeg: IndexMap<&str, usize> = built.keys().map(|k| (k.as_str(), 0)).collect();
    for (name, es) in edges {
        *indeg.get_mut(name.as_str()).expect("node") += es.len();
    }
    let mut order = Vec::new();
    while order.len() < built.len() {
        let next = indeg
            .iter()
            .find(|(_, d)| **d == 0)
            .map(|(k, _)| *k)
            .expect("acyclic");
        indeg.shift_remove(next);
        order.push(next.to_string());
        for (name, es) in edges {
            for (_, t) in es {
                if t == next {
                    if let Some(d) = indeg.get_mut(name.as_str()) {
                        *d -= 1;
                    }
                }
            }
        }
    }
    order
}
