//! The per-node context shared by whole and per-item execution, and the index entry formats.

use std::collections::BTreeMap;
use std::sync::Mutex;

use nsync_cache::{Digest, Store};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, BlobRef, OutputRef};
use crate::fingerprint::Fingerprint;
use crate::pipeline::{Pipeline, PipelineNode};
use crate::progress::{Event, NodeStatus, Progress};
use crate::run_record::NodeRecord;

use super::schedule::empty_record;
use super::{NodeOutcome, RunOptions};

#[derive(Serialize, Deserialize)]
pub(super) struct ItemEntry {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) outputs: BTreeMap<String, BlobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rejected: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct NodeEntry {
    pub(super) outputs: BTreeMap<String, OutputRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) item_keys: Option<Digest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) rejected: BTreeMap<String, String>,
    pub(super) fingerprint: Fingerprint,
    /// Blob listing the memo pieces a whole node used ([`crate::memo`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) memo: Option<Digest>,
}

pub(super) struct NodeCx<'a> {
    pub(super) p: &'a Pipeline,
    pub(super) node: &'a PipelineNode,
    pub(super) store: &'a Store,
    pub(super) opts: &'a RunOptions,
    pub(super) progress: &'a dyn Progress,
    pub(super) compute: bool,
    pub(super) device: &'a Mutex<()>,
    pub(super) warnings: Mutex<Vec<String>>,
}

pub(super) type NodeResult = Result<NodeOutcome, crate::node::NodeError>;

impl NodeCx<'_> {
    pub(super) fn warn(&self, message: String) {
        if self.compute {
            self.progress.event(&Event::Warning {
                node: Some(self.node.name.clone()),
                message: message.clone(),
            });
        }
        self.warnings.lock().unwrap().push(message);
    }

    pub(super) fn record(&self, status: NodeStatus, fp: Fingerprint, key: Digest) -> NodeRecord {
        let mut r = empty_record(self.node, status);
        r.fingerprint = Some(fp);
        r.key = Some(key);
        r
    }

    /// Load a cached node entry if every blob it refers to is there (and, with `--verify`,
    /// intact).
    pub(super) fn cached_outputs(&self, entry: &NodeEntry) -> Option<BTreeMap<String, Artifact>> {
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

    pub(super) fn finish_cached(
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

    pub(super) fn item_entry(&self, key: &Digest) -> Option<ItemEntry> {
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
}
