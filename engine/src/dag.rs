//! The graph of a pipeline: naming cycles, and drawing it (`nsync dag`).

use std::collections::HashSet;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::pipeline::Pipeline;

/// A cycle through (or reachable from) `start`, as node names, first repeated at the end.
pub fn cycle_through(g: &DiGraph<String, ()>, start: NodeIndex) -> Vec<String> {
    let sccs = petgraph::algo::tarjan_scc(g);
    let scc = sccs
        .iter()
        .find(|c| c.contains(&start) && (c.len() > 1 || g.contains_edge(start, start)))
        .or_else(|| {
            sccs.iter()
                .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
        })
        .cloned()
        .unwrap_or_else(|| vec![start]);
    let members: HashSet<NodeIndex> = scc.iter().copied().collect();
    let begin = *scc
        .iter()
        .min_by_key(|i| g[**i].clone())
        .expect("non-empty");
    // Depth-first walk inside the component back to `begin`.
    let mut path = vec![begin];
    let mut seen = HashSet::from([begin]);
    fn walk(
        g: &DiGraph<String, ()>,
        members: &HashSet<NodeIndex>,
        begin: NodeIndex,
        path: &mut Vec<NodeIndex>,
        seen: &mut HashSet<NodeIndex>,
    ) -> bool {
        let cur = *path.last().expect("non-empty");
        let mut next: Vec<NodeIndex> = g
            .edges(cur)
            .map(|e| e.target())
            .filter(|t| members.contains(t))
            .collect();
        next.sort_by_key(|i| g[*i].clone());
        for t in next {
            if t == begin {
                path.push(t);
                return true;
            }
            if seen.insert(t) {
                path.push(t);
                if walk(g, members, begin, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(g, &members, begin, &mut path, &mut seen);
    path.into_iter().map(|i| g[i].clone()).collect()
}

/// Graphviz DOT.
pub fn to_dot(p: &Pipeline) -> String {
    let mut s = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        esc(&p.name)
    );
    for n in &p.nodes {
        s.push_str(&format!(
            "  \"{}\" [label=\"{}\\n({})\"];\n",
            esc(&n.name),
            esc(&n.name),
            esc(&n.kind)
        ));
    }
    for n in &p.nodes {
        for e in &n.inputs {
            s.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{} → {}\"];\n",
                esc(&p.nodes[e.from].name),
                esc(&n.name),
                e.from_port,
                e.port
            ));
        }
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn to_mermaid(p: &Pipeline) -> String {
    let mut s = String::from("flowchart LR\n");
    for n in &p.nodes {
        s.push_str(&format!(
            "  {}[\"{}<br/>({})\"]\n",
            mid(&n.name),
            n.name,
            n.kind
        ));
    }
    for n in &p.nodes {
        for e in &n.inputs {
            s.push_str(&format!(
                "  {} -->|{}| {}\n",
                mid(&p.nodes[e.from].name),
                if e.from_port == e.port {
                    e.port.clone()
                } else {
                    format!("{} → {}", e.from_port, e.port)
                },
                mid(&n.name)
            ));
        }
    }
    s
}

/// JSON: nodes with kinds and ports, and edges.
pub fn to_json(p: &Pipeline) -> serde_json::Value {
    serde_json::json!({
        "pipeline": p.name,
        "nodes": p.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "kind": n.kind,
            "mode": match n.node.exec() { crate::node::Exec::PerItem(_) => "per_item", crate::node::Exec::Whole(_) => "whole" },
            "outputs": n.outputs.iter().map(|o| serde_json::json!({"name": o.name, "type": o.ty.name})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "edges": p.nodes.iter().flat_map(|n| n.inputs.iter().map(|e| serde_json::json!({
            "from": p.nodes[e.from].name, "from_port": e.from_port, "to": n.name, "to_port": e.port, "type": e.ty.name,
        }))).collect::<Vec<_>>(),
    })
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mid(s: &str) -> String {
    s.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_cycle() {
        let mut g: DiGraph<String, ()> = DiGraph::new();
        let a = g.add_node("a".into());
        let b = g.add_node("b".into());
        let c = g.add_node("c".into());
        let d = g.add_node("d".into());
        g.add_edge(a, b, ());
        g.add_edge(b, c, ());
        g.add_edge(c, a, ());
        g.add_edge(c, d, ());
        assert_eq!(cycle_through(&g, b), vec!["a", "b", "c", "a"]);
    }
}
