//! Running (and planning) a pipeline: scheduling nodes, resolving keys against the cache,
//! computing only what is missing, committing each result as soon as it exists.
//!
//! Nodes run on `jobs` worker threads as soon as their inputs are ready; nodes that hold a
//! large model take a device lock so two of them never share the device. Per-item nodes
//! plan every item's key, load their model only when something is missing, process missing
//! items in batches, and commit each item (blob, then index entry) before the next batch.
//! Each missing key is claimed with an OS lock so concurrent processes never compute the
//! same key twice; a killed process drops its locks and loses only its current batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use nsync_cache::atomic::Durability;
use nsync_cache::{CacheError, Digest, LockOutcome, Store};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, BlobRef, OutputRef};
use crate::fingerprint::{canonical, Fingerprint, KEY_VERSION};
use crate::node::{
    Exec, Inputs, ItemCx, ItemOutcome, ItemsCx, PerItem, RejectPolicy, Whole, WholeCx, WorkItem,
};
use crate::pipeline::{Pipeline, PipelineNode};
use crate::progress::{Event, NodeStatus, Progress};
use crate::run_record::{new_run_id, now_rfc3339, Hardware, NodeRecord, RunRecord};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Nodes run at once (at least 1).
    pub jobs: usize,
    /// Run only these nodes (their inputs must already be cached).
    pub only: Vec<String>,
    /// Run this node and what it depends on, nothing downstream.
    pub until: Option<String>,
    /// Rehash every cached blob a cached node hands out, not just check its presence.
    pub verify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Run,
    /// Resolve keys and count cached items; compute nothing, record nothing.
    Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown node `{name}` in {flag}{}", help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownNode {
        name: String,
        flag: &'static str,
        help: Option<String>,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The outcome of a run or plan.
pub struct RunOutcome {
    pub record: RunRecord,
    pub ok: bool,
    /// Artifacts of the nodes that have them (for export).
    pub artifacts: HashMap<String, BTreeMap<String, Artifact>>,
}

struct NodeOutcome {
    record: NodeRecord,
    artifacts: Option<BTreeMap<String, Artifact>>,
    cache_damage: bool,
}

#[derive(Serialize, Deserialize)]
struct ItemEntry {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    outputs: BTreeMap<String, BlobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct NodeEntry {
    outputs: BTreeMap<String, OutputRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item_keys: Option<Digest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rejected: BTreeMap<String, String>,
    fingerprint: Fingerprint,
}

/// Run (or plan) `p` against `store`. A node whose cached input turns out corrupt makes the
/// executor run once more: the damaged blob was quarantined, so it is recomputed.
pub fn execute(
    p: &Pipeline,
    store: &Store,
    opts: &RunOptions,
    progress: &dyn Progress,
    mode: Mode,
) -> Result<RunOutcome, EngineError> {
    let selected = selection(p, opts)?;
    let _run_lock = if mode == Mode::Run {
        Some(store.lock_for_run()?)
    } else {
        None
    };
    let run_id = new_run_id();
    let started = now_rfc3339();
    if mode == Mode::Run {
        progress.event(&Event::RunStarted {
            run_id: run_id.clone(),
            pipeline: p.name.clone(),
            nodes: p.nodes.len(),
        });
    }
    let mut outcomes = schedule(p, store, opts, progress, mode, &selected);
    if mode == Mode::Run && outcomes.iter().any(|o| o.cache_damage) {
        progress.event(&Event::Warning {
            node: None,
            message:
                "damaged cache entries were found and quarantined; running again to recompute them"
                    .into(),
        });
        outcomes = schedule(p, store, opts, progress, mode, &selected);
    }
    let _ = store.files().save();
    let ok = outcomes
        .iter()
        .all(|o| o.record.status != NodeStatus::Failed);
    let mut artifacts = HashMap::new();
    let mut nodes = indexmap::IndexMap::new();
    for (n, o) in p.nodes.iter().zip(outcomes) {
        if let Some(a) = o.artifacts {
            artifacts.insert(n.name.clone(), a);
        }
        nodes.insert(n.name.clone(), o.record);
    }
    let record = RunRecord {
        run_id,
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        started,
        finished: now_rfc3339(),
        status: if ok { "ok".into() } else { "failed".into() },
        nsync_version: env!("CARGO_PKG_VERSION").to_string(),
        key_version: KEY_VERSION,
        hardware: Hardware::current(),
        jobs: opts.jobs.max(1),
        pinned: false,
        resolved: p.resolved.clone(),
        nodes,
    };
    if mode == Mode::Run {
        record.save(store)?;
    }
    Ok(RunOutcome {
        record,
        ok,
        artifacts,
    })
}

fn selection(p: &Pipeline, opts: &RunOptions) -> Result<Vec<bool>, EngineError> {
    let find = |name: &str, flag: &'static str| {
        p.index_of(name).ok_or_else(|| EngineError::UnknownNode {
            name: name.to_string(),
            flag,
            help: crate::spec::diagnostic::did_you_mean(name, p.node_names()),
        })
    };
    let mut mask = vec![true; p.nodes.len()];
    if let Some(u) = &opts.until {
        mask = p.ancestors(find(u, "--until")?);
    }
    if !opts.only.is_empty() {
        let mut only = vec![false; p.nodes.len()];
        for o in &opts.only {
            only[find(o, "--only")?] = true;
        }
        for (m, o) in mask.iter_mut().zip(only) {
            *m &= o;
        }
    }
    Ok(mask)
}

fn schedule(
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

fn empty_record(node: &PipelineNode, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        kind: node.kind.clone(),
        status,
        key: None,
        fingerprint: None,
        item_keys: None,
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
        let mut record = empty_record(node, status);
        record.error = error;
        if mode == Mode::Run && selected {
            emit_finished(progress, &node.name, &record);
        }
        return NodeOutcome {
            record,
            artifacts: None,
            cache_damage: false,
        };
    }

    let fingerprint = Fingerprint {
        key_version: KEY_VERSION,
        kind: node.kind.clone(),
        version: node.node.version(),
        params: canonical(&node.node.key_params()),
        seed: node.node.uses_seed().then_some(p.seed),
        salts: p.salt.iter().chain(node.salt.iter()).cloned().collect(),
        models: BTreeMap::new(),
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

struct NodeCx<'a> {
    p: &'a Pipeline,
    node: &'a PipelineNode,
    store: &'a Store,
    opts: &'a RunOptions,
    progress: &'a dyn Progress,
    compute: bool,
    device: &'a Mutex<()>,
    warnings: Mutex<Vec<String>>,
}

type NodeResult = Result<NodeOutcome, crate::node::NodeError>;

impl NodeCx<'_> {
    fn warn(&self, message: String) {
        if self.compute {
            self.progress.event(&Event::Warning {
                node: Some(self.node.name.clone()),
                message: message.clone(),
            });
        }
        self.warnings.lock().unwrap().push(message);
    }

    fn record(&self, status: NodeStatus, fp: Fingerprint, key: Digest) -> NodeRecord {
        let mut r = empty_record(self.node, status);
        r.fingerprint = Some(fp);
        r.key = Some(key);
        r
    }

    /// Load a cached node entry if every blob it refers to is there (and, with `--verify`,
    /// intact).
    fn cached_outputs(&self, entry: &NodeEntry) -> Option<BTreeMap<String, Artifact>> {
        let mut out = BTreeMap::new();
        for (port, o) in &entry.outputs {
            let a = Artifact::load(self.store, o).ok()?;
            let intact = if self.opts.verify {
                match &a {
                    Artifact::Items { items, .. } => items
                        .values()
                        .all(|b| self.store.get_blob(&b.digest).is_ok()),
                    Artifact::Blob { output } => self.store.get_blob(&output.digest).is_ok(),
                }
            } else {
                a.present(self.store)
            };
            if !intact {
                return None;
            }
            out.insert(port.clone(), a);
        }
        Some(out)
    }

    fn whole(&mut self, w: &dyn Whole, inputs: &Inputs, fp: Fingerprint) -> NodeResult {
        let key = fp.whole_key();
        let lookup = |s: &Self| {
            s.store
                .get_entry(&key)
                .and_then(|v| serde_json::from_value::<NodeEntry>(v).ok())
                .and_then(|e| s.cached_outputs(&e))
        };
        if let Some(artifacts) = lookup(self) {
            return Ok(self.finish_cached(fp, key, artifacts, 1));
        }
        if !self.compute {
            let mut r = self.record(NodeStatus::WillRun, fp, key);
            r.items_total = 1;
            return Ok(NodeOutcome {
                record: r,
                artifacts: None,
                cache_damage: false,
            });
        }
        self.progress.event(&Event::NodeStarted {
            node: self.node.name.clone(),
            kind: self.node.kind.clone(),
            mode: "whole",
            items_total: 1,
            items_cached: 0,
            items_to_compute: 1,
        });
        let _claim = match self.store.try_lock_key(&key)? {
            LockOutcome::Acquired(l) => l,
            LockOutcome::Busy => {
                self.progress.event(&Event::Waiting {
                    node: self.node.name.clone(),
                    message: "another nsync process is computing this node; waiting for it".into(),
                });
                self.store.lock_key(&key)?
            }
        };
        if let Some(artifacts) = lookup(self) {
            return Ok(self.finish_cached(fp, key, artifacts, 1));
        }
        let _device = self.node.node.heavy().then(|| self.device.lock().unwrap());
        let warn = |m: String| self.warn(m);
        let outputs = w.run(&WholeCx {
            store: self.store,
            inputs,
            seed: self.p.seed,
            warn: &warn,
        })?;
        let mut refs = BTreeMap::new();
        let mut artifacts = BTreeMap::new();
        for spec in &self.node.outputs {
            let bytes = outputs.get(spec.name).ok_or_else(|| {
                crate::node::NodeError::msg(format!(
                    "internal error: node produced no `{}` output",
                    spec.name
                ))
            })?;
            let digest = self.store.put_blob(bytes, Durability::Batched)?;
            let o = OutputRef {
                ty: spec.ty.name.to_string(),
                per_item: false,
                digest,
                size: bytes.len() as u64,
                items: None,
            };
            artifacts.insert(spec.name.to_string(), Artifact::Blob { output: o.clone() });
            refs.insert(spec.name.to_string(), o);
        }
        self.store.sync()?;
        let entry = NodeEntry {
            outputs: refs.clone(),
            item_keys: None,
            rejected: BTreeMap::new(),
            fingerprint: fp.clone(),
        };
        self.store.put_entry(
            &key,
            &serde_json::to_value(&entry).expect("entry serialises"),
            Durability::Fsync,
        )?;
        let mut r = self.record(NodeStatus::Executed, fp, key);
        r.outputs = refs;
        r.items_total = 1;
        r.items_computed = 1;
        Ok(NodeOutcome {
            record: r,
            artifacts: Some(artifacts),
            cache_damage: false,
        })
    }

    fn finish_cached(
        &self,
        fp: Fingerprint,
        key: Digest,
        artifacts: BTreeMap<String, Artifact>,
        total: usize,
    ) -> NodeOutcome {
        let mut r = self.record(NodeStatus::Cached, fp, key);
        r.outputs = artifacts
            .iter()
            .map(|(k, a)| (k.clone(), a.output().clone()))
            .collect();
        r.items_total = total;
        r.items_cached = total;
        if self.compute {
            self.progress.event(&Event::NodeStarted {
                node: self.node.name.clone(),
                kind: self.node.kind.clone(),
                mode: if total == 1 && artifacts.values().all(|a| a.items().is_none()) {
                    "whole"
                } else {
                    "per_item"
                },
                items_total: total,
                items_cached: total,
                items_to_compute: 0,
            });
        }
        NodeOutcome {
            record: r,
            artifacts: Some(artifacts),
            cache_damage: false,
        }
    }

    fn item_entry(&self, key: &Digest) -> Option<ItemEntry> {
        let e: ItemEntry = serde_json::from_value(self.store.get_entry(key)?).ok()?;
        let present = e
            .outputs
            .values()
            .all(|b| self.store.has_blob(&b.digest, b.size))
            && (e.rejected.is_some()
                || self
                    .node
                    .outputs
                    .iter()
                    .all(|o| e.outputs.contains_key(o.name)));
        present.then_some(e)
    }

    fn per_item(&mut self, pi: &dyn PerItem, inputs: &Inputs, fp: Fingerprint) -> NodeResult {
        let warn = |m: String| self.warn(m);
        let items = pi.items(&ItemsCx {
            inputs,
            files: self.store.files(),
            warn: &warn,
        })?;
        {
            let mut seen = std::collections::HashSet::new();
            for w in &items {
                if !seen.insert(w.id.as_str()) {
                    return Err(crate::node::NodeError::msg(format!(
                        "two items share the id `{}`; item ids (file names without extension) must be unique",
                        w.id
                    )));
                }
            }
        }
        let keys: Vec<(String, Digest)> = items
            .iter()
            .map(|w| (w.id.clone(), fp.item_key(w)))
            .collect();
        let node_key = fp.items_key(&keys);
        let total = items.len();
        // The item keys, for explain and gc.
        let key_blob = self.store.put_blob(
            &serde_json::to_vec(&keys).expect("keys serialise"),
            Durability::Batched,
        )?;
        // Fast path: the whole node is cached.
        if let Some(entry) = self
            .store
            .get_entry(&node_key)
            .and_then(|v| serde_json::from_value::<NodeEntry>(v).ok())
        {
            if let Some(artifacts) = self.cached_outputs(&entry) {
                if pi.reject_policy() == RejectPolicy::Skip {
                    for (id, why) in &entry.rejected {
                        self.warn(format!("skipped item `{id}`: {why}"));
                    }
                }
                let mut o = self.finish_cached(fp, node_key, artifacts, total);
                o.record.items_rejected = entry.rejected.len();
                o.record.item_keys = Some(key_blob);
                return Ok(o);
            }
        }
        // Item by item.
        let mut done: BTreeMap<String, ItemEntry> = BTreeMap::new();
        let mut todo: Vec<usize> = Vec::new();
        for (idx, (id, key)) in keys.iter().enumerate() {
            match self.item_entry(key) {
                Some(e) => {
                    done.insert(id.clone(), e);
                }
                None => todo.push(idx),
            }
        }
        let cached = done.len();
        if !self.compute {
            let mut r = self.record(
                if todo.is_empty() {
                    NodeStatus::Cached
                } else {
                    NodeStatus::WillRun
                },
                fp,
                node_key,
            );
            r.item_keys = Some(key_blob);
            r.items_total = total;
            r.items_cached = cached;
            // A plan whose items are all cached can still hand artifacts downstream.
            let artifacts = if todo.is_empty() {
                self.assemble(&done, pi, false).ok().map(|(a, _)| a)
            } else {
                None
            };
            return Ok(NodeOutcome {
                record: r,
                artifacts,
                cache_damage: false,
            });
        }
        self.progress.event(&Event::NodeStarted {
            node: self.node.name.clone(),
            kind: self.node.kind.clone(),
            mode: "per_item",
            items_total: total,
            items_cached: cached,
            items_to_compute: todo.len(),
        });
        let mut computed = 0usize;
        let mut errors: Vec<String> = Vec::new();
        let mut damage = false;
        if !todo.is_empty() {
            let _device = self.node.node.heavy().then(|| self.device.lock().unwrap());
            let mut worker = pi.open()?;
            let icx = ItemCx {
                store: self.store,
                inputs,
                seed: self.p.seed,
            };
            let mut deferred: Vec<usize> = Vec::new();
            let mut progressed = 0usize;
            let batch = pi.batch_size().max(1);
            for chunk in todo.chunks(batch) {
                let mut claimed = Vec::new();
                let mut locks = Vec::new();
                for &idx in chunk {
                    match self.store.try_lock_key(&keys[idx].1)? {
                        LockOutcome::Acquired(l) => {
                            // Another process may have finished it since we looked.
                            if let Some(e) = self.item_entry(&keys[idx].1) {
                                done.insert(keys[idx].0.clone(), e);
                            } else {
                                claimed.push(idx);
                                locks.push(l);
                            }
                        }
                        LockOutcome::Busy => deferred.push(idx),
                    }
                }
                let (n, errs, dmg) =
                    self.compute_batch(&claimed, &items, &keys, worker.as_mut(), &icx, &mut done)?;
                computed += n;
                damage |= dmg;
                errors.extend(errs);
                drop(locks);
                progressed += chunk.len();
                self.progress.event(&Event::NodeProgress {
                    node: self.node.name.clone(),
                    items_done: progressed - deferred.len(),
                    items_to_compute: todo.len(),
                });
            }
            if !deferred.is_empty() {
                self.progress.event(&Event::Waiting {
                    node: self.node.name.clone(),
                    message: format!(
                        "{} items are being computed by another nsync process; waiting for them",
                        deferred.len()
                    ),
                });
            }
            for idx in deferred {
                let _l = self.store.lock_key(&keys[idx].1)?;
                if let Some(e) = self.item_entry(&keys[idx].1) {
                    done.insert(keys[idx].0.clone(), e);
                } else {
                    let (n, errs, dmg) = self.compute_batch(
                        &[idx],
                        &items,
                        &keys,
                        worker.as_mut(),
                        &icx,
                        &mut done,
                    )?;
                    computed += n;
                    damage |= dmg;
                    errors.extend(errs);
                }
                progressed += 1;
                self.progress.event(&Event::NodeProgress {
                    node: self.node.name.clone(),
                    items_done: progressed,
                    items_to_compute: todo.len(),
                });
            }
        }
        let mut r = self.record(NodeStatus::Executed, fp.clone(), node_key);
        r.items_total = total;
        // Items another process finished while we ran count as cached.
        r.items_cached = total.saturating_sub(computed + errors.len());
        r.items_computed = computed;
        if !errors.is_empty() {
            let shown: Vec<&String> = errors.iter().take(5).collect();
            let more = if errors.len() > 5 {
                format!(" (and {} more)", errors.len() - 5)
            } else {
                String::new()
            };
            r.status = NodeStatus::Failed;
            r.error = Some(format!(
                "{} of {total} items failed{more}; the {} that succeeded are cached:\n  {}",
                errors.len(),
                total - errors.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
            return Ok(NodeOutcome {
                record: r,
                artifacts: None,
                cache_damage: damage,
            });
        }
        let (artifacts, rejected) = self.assemble(&done, pi, true)?;
        r.items_rejected = rejected.len();
        r.item_keys = Some(key_blob);
        r.outputs = artifacts
            .iter()
            .map(|(k, a)| (k.clone(), a.output().clone()))
            .collect();
        self.store.sync()?;
        let entry = NodeEntry {
            outputs: r.outputs.clone(),
            item_keys: Some(key_blob),
            rejected,
            fingerprint: fp,
        };
        self.store.put_entry(
            &node_key,
            &serde_json::to_value(&entry).expect("entry serialises"),
            Durability::Fsync,
        )?;
        Ok(NodeOutcome {
            record: r,
            artifacts: Some(artifacts),
            cache_damage: false,
        })
    }

    /// Compute and commit one batch. Returns (items computed, item errors, cache damage).
    #[allow(clippy::too_many_arguments)]
    fn compute_batch(
        &self,
        batch: &[usize],
        items: &[WorkItem],
        keys: &[(String, Digest)],
        worker: &mut dyn crate::node::ItemWorker,
        icx: &ItemCx,
        done: &mut BTreeMap<String, ItemEntry>,
    ) -> Result<(usize, Vec<String>, bool), CacheError> {
        if batch.is_empty() {
            return Ok((0, Vec::new(), false));
        }
        let work: Vec<&WorkItem> = batch.iter().map(|&i| &items[i]).collect();
        let results = worker.process(&work, icx);
        let mut errors = Vec::new();
        let mut damage = false;
        let mut n = 0;
        for (&idx, res) in batch.iter().zip(results) {
            let (id, key) = &keys[idx];
            let entry = match res {
                Ok(ItemOutcome::Done(outputs)) => {
                    let mut refs = BTreeMap::new();
                    for spec in &self.node.outputs {
                        let Some(bytes) = outputs.get(spec.name) else {
                            errors.push(format!(
                                "item `{id}`: internal error: no `{}` output",
                                spec.name
                            ));
                            continue;
                        };
                        let digest = self.store.put_blob(bytes, Durability::Batched)?;
                        refs.insert(
                            spec.name.to_string(),
                            BlobRef {
                                digest,
                                size: bytes.len() as u64,
                            },
                        );
                    }
                    ItemEntry {
                        outputs: refs,
                        rejected: None,
                    }
                }
                Ok(ItemOutcome::Rejected(why)) => ItemEntry {
                    outputs: BTreeMap::new(),
                    rejected: Some(why),
                },
                Err(e) => {
                    damage |= e.cache_damage;
                    errors.push(format!("item `{id}`: {}", e.message));
                    continue;
                }
            };
            self.store.put_entry(
                key,
                &serde_json::to_value(&entry).expect("entry serialises"),
                Durability::Batched,
            )?;
            done.insert(id.clone(), entry);
            n += 1;
        }
        self.store.sync()?;
        Ok((n, errors, damage))
    }

    /// Build the output manifests; apply the reject policy.
    fn assemble(
        &self,
        done: &BTreeMap<String, ItemEntry>,
        pi: &dyn PerItem,
        report: bool,
    ) -> Result<(BTreeMap<String, Artifact>, BTreeMap<String, String>), crate::node::NodeError>
    {
        let rejected: BTreeMap<String, String> = done
            .iter()
            .filter_map(|(id, e)| e.rejected.as_ref().map(|r| (id.clone(), r.clone())))
            .collect();
        if !rejected.is_empty() && report {
            match pi.reject_policy() {
                RejectPolicy::Skip => {
                    for (id, why) in &rejected {
                        self.warn(format!("skipped item `{id}`: {why}"));
                    }
                }
                RejectPolicy::Fail => {
                    let list: Vec<String> = rejected
                        .iter()
                        .take(10)
                        .map(|(id, why)| format!("`{id}`: {why}"))
                        .collect();
                    return Err(crate::node::NodeError::msg(format!(
                        "{} item(s) were rejected:\n  {}\n(set `on_error = \"skip\"` on the node to leave them out with a warning)",
                        rejected.len(),
                        list.join("\n  ")
                    )));
                }
            }
        }
        let mut artifacts = BTreeMap::new();
        for spec in &self.node.outputs {
            let items: BTreeMap<String, BlobRef> = done
                .iter()
                .filter_map(|(id, e)| e.outputs.get(spec.name).map(|b| (id.clone(), *b)))
                .collect();
            artifacts.insert(
                spec.name.to_string(),
                Artifact::store_items(self.store, spec.ty.name, items)?,
            );
        }
        Ok((artifacts, rejected))
    }
}
