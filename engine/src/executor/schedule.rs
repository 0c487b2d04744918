//! Scheduling nodes on worker threads as their inputs complete, and running one node:
//! gathering its inputs, building its fingerprint, and handing it to [`super::node_cx`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use nsync_cache::Store;

use crate::fingerprint::{canonical, Fingerprint, KEY_VERSION};
use crate::node::{Exec, Inputs};
use crate::pipeline::{Pipeline, PipelineNode};
use crate::progress::{Event, NodeStatus, Progress};
use crate::run_record::NodeRecord;

use super::node_cx::NodeCx;
use super::{Mode, NodeOutcome, RunOptions};

pub(super) fn schedule(
    p: &Pipeline,
    store: &Store,
    opts: &RunOptions,
    progress: &dyn Progress,
    mode: Mode,
    selected: &[bool],
) -> Vec<NodeOutcome> {
    let n = p.nodes.len();
    let results: Vec<Mutex<Option<NodeOutcome>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (i, node) in p.nodes.iter().enumerate() {
        let mut ups: Vec<usize> = node.inputs.iter().map(|e| e.from).collect();
        ups.sort();
        ups.dedup();
        pending[i] = ups.len();
        for u in ups {
            dependents[u].push(i);
        }
    }
    let device = Mutex::new(());
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<usize>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
    for (i, d) in pending.iter().enumerate() {
        if *d == 0 {
            ready_tx.send(i).expect("channel open");
        }
    }
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, n.max(1)) {
            let ready_rx = ready_rx.clone();
            let done_tx = done_tx.clone();
            let results = &results;
            let device = &device;
            s.spawn(move || {
                while let Ok(i) = ready_rx.recv() {
                    let outcome = run_node(
                        p,
                        i,
                        store,
                        opts,
                        progress,
                        mode,
                        selected[i],
                        results,
                        device,
                    );
                    *results[i].lock().unwrap() = Some(outcome);
                    if done_tx.send(i).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for _ in 0..n {
            let Ok(i) = done_rx.recv() else { break };
            for &d in &dependents[i] {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready_tx.send(d).expect("channel open");
                }
            }
        }
        drop(ready_tx);
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every node ran"))
        .collect()
}

pub(super) fn empty_record(node: &PipelineNode, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        kind: node.kind.clone(),
        status,
        key: None,
        fingerprint: None,
        item_keys: None,
        memo: None,
        outputs: BTreeMap::new(),
        items_total: 0,
        items_computed: 0,
        items_cached: 0,
        items_rejected: 0,
        seconds: 0.0,
        error: None,
        warnings: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_node(
    p: &Pipeline,
    i: usize,
    store: &Store,
    opts: &RunOptions,
    progress: &dyn Progress,
    mode: Mode,
    selected: bool,
    results: &[Mutex<Option<NodeOutcome>>],
    device: &Mutex<()>,
) -> NodeOutcome {
    let node = &p.nodes[i];
    let start = Instant::now();
    // Gather inputs from upstream outcomes.
    let mut inputs = Inputs::default();
    // (upstream name, whether it failed) for the first input that has no artifact.
    let mut missing: Option<(String, bool)> = None;
    for e in &node.inputs {
        let up = results[e.from].lock().unwrap();
        let up = up.as_ref().expect("upstream finished first");
        match up.artifacts.as_ref().and_then(|a| a.get(&e.from_port)) {
            Some(a) => {
                inputs.ports.insert(e.port.clone(), a.clone());
            }
            None => {
                let failed = up.record.status == NodeStatus::Failed || up.record.error.is_some();
                missing.get_or_insert((p.nodes[e.from].name.clone(), failed));
            }
        }
    }
    let compute = mode == Mode::Run && selected;
    if let Some((up, up_failed)) = missing {
        let (status, error) = if mode == Mode::Plan {
            (NodeStatus::WillRun, None)
        } else if !selected {
            (NodeStatus::Skipped, None)
        } else if up_failed {
            (
                NodeStatus::Skipped,
                Some(format!("not run: upstream node `{up}` failed")),
            )
        } else {
            (
                NodeStatus::Failed,
                Some(format!(
                    "input from node `{up}` is not computed yet; run without --only (or with --until {}) first",
                    node.name
                )),
            )
        };
        return early_outcome(node, status, error, mode == Mode::Run && selected, progress);
    }

    let mut models = BTreeMap::new();
    for name in node.node.models() {
        let path = &p.models[&name];
        match crate::model_digest::model_digest(store.files(), path) {
            Ok(d) => {
                models.insert(name, d);
            }
            Err(e) => {
                let error = format!("model `{name}`: {e} (set `path` under [models.{name}])");
                return early_outcome(
                    node,
                    NodeStatus::Failed,
                    Some(error),
                    mode == Mode::Run && selected,
                    progress,
                );
            }
        }
    }
    let fingerprint = Fingerprint {
        key_version: KEY_VERSION,
        kind: node.kind.clone(),
        version: node.node.version(),
        params: canonical(&node.node.key_params()),
        seed: node.node.uses_seed().then_some(p.seed),
        salts: p.salt.iter().chain(node.salt.iter()).cloned().collect(),
        models,
        inputs: inputs
            .ports
            .iter()
            .map(|(k, a)| (k.clone(), a.digest()))
            .collect(),
    };
    let mut cx = NodeCx {
        p,
        node,
        store,
        opts,
        progress,
        compute,
        device,
        warnings: Mutex::new(Vec::new()),
    };
    let result = match node.node.exec() {
        Exec::PerItem(pi) => cx.per_item(pi, &inputs, fingerprint),
        Exec::Whole(w) => cx.whole(w, &inputs, fingerprint),
    };
    let mut outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let mut record = empty_record(node, NodeStatus::Failed);
            record.error = Some(e.message.clone());
            NodeOutcome {
                record,
                artifacts: None,
                cache_damage: e.cache_damage,
            }
        }
    };
    if !selected && mode == Mode::Run {
        outcome.record.status = NodeStatus::Skipped;
    }
    outcome.record.seconds = start.elapsed().as_secs_f64();
    outcome
        .record
        .warnings
        .extend(std::mem::take(&mut *cx.warnings.lock().unwrap()));
    if mode == Mode::Run && selected {
        emit_finished(progress, &node.name, &outcome.record);
    }
    outcome
}

/// The outcome of a node that ends before it is keyed (missing input, missing model).
fn early_outcome(
    node: &PipelineNode,
    status: NodeStatus,
    error: Option<String>,
    report: bool,
    progress: &dyn Progress,
) -> NodeOutcome {
    let mut record = empty_record(node, status);
    record.error = error;
    if report {
        emit_finished(progress, &node.name, &record);
    }
    NodeOutcome {
        record,
        artifacts: None,
        cache_damage: false,
    }
}

fn emit_finished(progress: &dyn Progress, name: &str, r: &NodeRecord) {
    progress.event(&Event::NodeFinished {
        node: name.to_string(),
        status: r.status,
        items_total: r.items_total,
        items_computed: r.items_computed,
        items_cached: r.items_cached,
        items_rejected: r.items_rejected,
        seconds: r.seconds,
        error: r.error.clone(),
    });
}
