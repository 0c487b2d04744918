//! Running (and planning) a pipeline: scheduling nodes, resolving keys against the cache,
//! computing only what is missing, committing each result as soon as it exists.
//!
//! Nodes run on `jobs` worker threads as soon as their inputs are ready; nodes that hold a
//! large model take a device lock so two of them never share the device. Per-item nodes
//! plan every item's key, load their model only when something is missing, process missing
//! items in batches, and commit each item (blob, then index entry) before the next batch.
//! Each missing key is claimed with an OS lock so concurrent processes never compute the
//! same key twice; a killed process drops its locks and loses only its current batch.

mod node_cx;
mod per_item;
mod schedule;
mod whole;

use std::collections::{BTreeMap, HashMap};

use nsync_cache::{CacheError, Store};

use crate::artifact::Artifact;
use crate::fingerprint::KEY_VERSION;
use crate::pipeline::Pipeline;
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

pub(crate) struct NodeOutcome {
    pub(crate) record: NodeRecord,
    pub(crate) artifacts: Option<BTreeMap<String, Artifact>>,
    pub(crate) cache_damage: bool,
}

/// What a run would do now, computing nothing (`nsync plan`, `explain`, `export`).
pub fn plan(p: &Pipeline, store: &Store) -> Result<RunOutcome, EngineError> {
    let opts = RunOptions {
        jobs: 2,
        ..Default::default()
    };
    execute(p, store, &opts, &crate::progress::Silent, Mode::Plan)
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
    let mut outcomes = schedule::schedule(p, store, opts, progress, mode, &selected);
    if mode == Mode::Run && outcomes.iter().any(|o| o.cache_damage) {
        progress.event(&Event::Warning {
            node: None,
            message:
                "damaged cache entries were found and quarantined; running again to recompute them"
                    .into(),
        });
        outcomes = schedule::schedule(p, store, opts, progress, mode, &selected);
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
