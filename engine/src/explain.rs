//! Why a node would rerun: its current fingerprint against the one recorded by the last run
//! of the same pipeline, as one line per difference (`params.lr: 0.0005 → 0.0008`,
//! `input captions: 3 of 250 items changed`).

use std::collections::BTreeMap;

use nsync_cache::{Digest, Store};

use crate::artifact::parse_manifest;
use crate::executor::EngineError;
use crate::fingerprint::{flatten, Fingerprint};
use crate::pipeline::Pipeline;
use crate::progress::NodeStatus;
use crate::run_record::RunRecord;

pub struct Explanation {
    pub node: String,
    /// What `run` would do now.
    pub status: NodeStatus,
    /// The run compared against, if any.
    pub previous_run: Option<String>,
    pub reasons: Vec<String>,
}

pub fn explain(p: &Pipeline, store: &Store, node: &str) -> Result<Explanation, EngineError> {
    let Some(idx) = p.index_of(node) else {
        return Err(EngineError::UnknownNode {
            name: node.to_string(),
            flag: "explain",
            help: crate::spec::diagnostic::did_you_mean(node, p.node_names()),
        });
    };
    let plan = crate::executor::plan(p, store)?;
    let now = &plan.record.nodes[node];
    let prev_run = RunRecord::latest_with(store, &p.name, Some(node))?;
    let mut reasons = Vec::new();
    let prev = prev_run.as_ref().and_then(|r| r.nodes.get(node));
    match (&now.fingerprint, prev.and_then(|r| r.fingerprint.as_ref())) {
        (None, _) => {
            // Inputs not known yet: some upstream node has to run first.
            for e in &p.nodes[idx].inputs {
                let up = &p.nodes[e.from].name;
                let st = plan.record.nodes[up.as_str()].status;
                if st == NodeStatus::WillRun {
                    reasons.push(format!(
                        "input {}: upstream node `{up}` will run first, so its output may change",
                        e.port
                    ));
                }
            }
        }
        (Some(_), None) => reasons.push(format!(
            "no earlier run of pipeline `{}` computed this node",
            p.name
        )),
        (Some(cur), Some(old)) => {
            reasons.extend(diff_fingerprints(store, old, cur));
            if let (Some(a), Some(b)) = (prev.and_then(|r| r.item_keys), now.item_keys) {
                if a != b {
                    if let Some(line) = diff_item_lists(store, &a, &b) {
                        reasons.push(line);
                    }
                }
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(match now.status {
            NodeStatus::Cached => "up to date: every result is in the cache".to_string(),
            _ => "same key as the last run, but its results are no longer (all) in the cache; they will be recomputed".to_string(),
        });
    }
    if now.status == NodeStatus::WillRun && now.items_total > 0 {
        reasons.push(format!(
            "{} of {} items cached, {} to compute",
            now.items_cached,
            now.items_total,
            now.items_total - now.items_cached
        ));
    }
    Ok(Explanation {
        node: node.to_string(),
        status: now.status,
        previous_run: prev_run.map(|r| r.run_id),
        reasons,
    })
}

/// One line per field that differs.
pub fn diff_fingerprints(store: &Store, old: &Fingerprint, new: &Fingerprint) -> Vec<String> {
    let mut out = Vec::new();
    if old.key_version != new.key_version {
        out.push(format!(
            "cache key format: {} → {} (nsync was upgraded)",
            old.key_version, new.key_version
        ));
    }
    if old.kind != new.kind {
        out.push(format!("kind: {} → {}", old.kind, new.kind));
    }
    if old.version != new.version {
        out.push(format!(
            "implementation version of `{}`: {} → {}",
            new.kind, old.version, new.version
        ));
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("params", &old.params, &mut a);
    flatten("params", &new.params, &mut b);
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => out.push(format!("{k}: {x} → {y}")),
            (Some(x), None) => out.push(format!("{k}: {x} → (unset)")),
            (None, Some(y)) => out.push(format!("{k}: (unset) → {y}")),
            _ => {}
        }
    }
    if old.seed != new.seed {
        out.push(format!("seed: {} → {}", opt(&old.seed), opt(&new.seed)));
    }
    if old.salts != new.salts {
        out.push(format!("salt: {:?} → {:?}", old.salts, new.salts));
    }
    for k in old
        .models
        .keys()
        .chain(new.models.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if old.models.get(k) != new.models.get(k) {
            out.push(format!("model {k}: weights changed"));
        }
    }
    for port in old
        .inputs
        .keys()
        .chain(new.inputs.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (old.inputs.get(port), new.inputs.get(port)) {
            (Some(x), Some(y)) if x != y => out.push(describe_input_change(store, port, x, y)),
            (Some(_), None) => out.push(format!("input {port}: disconnected")),
            (None, Some(_)) => out.push(format!("input {port}: newly connected")),
            _ => {}
        }
    }
    out
}

/// (changed, added, removed) items between two maps of item id → digest.
fn count_changes<V: PartialEq>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
) -> (usize, usize, usize) {
    let changed = a
        .iter()
        .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
        .count();
    let added = b.keys().filter(|k| !a.contains_key(*k)).count();
    let removed = a.keys().filter(|k| !b.contains_key(*k)).count();
    (changed, added, removed)
}

fn opt(v: &Option<u64>) -> String {
    v.map_or("(none)".into(), |s| s.to_string())
}

fn describe_input_change(store: &Store, port: &str, old: &Digest, new: &Digest) -> String {
    let load = |d: &Digest| store.get_blob(d).ok().and_then(|b| parse_manifest(&b).ok());
    match (load(old), load(new)) {
        (Some(a), Some(b)) => {
            let (changed, added, removed) = count_changes(&a, &b);
            let mut s = format!("input {port}: {changed} of {} items changed", b.len());
            if added > 0 || removed > 0 {
                s.push_str(&format!(", {added} added, {removed} removed"));
            }
            s
        }
        _ => format!(
            "input {port}: content changed ({} → {})",
            old.short(),
            new.short()
        ),
    }
}

fn diff_item_lists(store: &Store, old: &Digest, new: &Digest) -> Option<String> {
    let load = |d: &Digest| -> Option<BTreeMap<String, Digest>> {
        let b = store.get_blob(d).ok()?;
        let v: Vec<(String, Digest)> = serde_json::from_slice(&b).ok()?;
        Some(v.into_iter().collect())
    };
    let (a, b) = (load(old)?, load(new)?);
    let (changed, added, removed) = count_changes(&a, &b);
    if changed + added + removed == 0 {
        return None;
    }
    Some(format!(
        "items: {changed} of {} changed, {added} added, {removed} removed",
        b.len()
    ))
}
