//! Running a whole node: one key for all inputs, computed once under a lock.

use std::collections::BTreeMap;

use nsync_cache::atomic::Durability;
use nsync_cache::LockOutcome;

use crate::artifact::{Artifact, OutputRef};
use crate::fingerprint::Fingerprint;
use crate::memo::Memo;
use crate::node::{Checkpoints, Inputs, Whole, WholeCx};
use crate::progress::{Event, NodeStatus};

use super::node_cx::{NodeCx, NodeEntry, NodeResult};
use super::NodeOutcome;

impl NodeCx<'_> {
    pub(super) fn whole(&mut self, w: &dyn Whole, inputs: &Inputs, fp: Fingerprint) -> NodeResult {
        let key = fp.whole_key();
        let lookup = |s: &Self| {
            s.store
                .get_entry(&key)
                .and_then(|v| serde_json::from_value::<NodeEntry>(v).ok())
                .and_then(|e| s.cached_outputs(&e).map(|a| (a, e.memo)))
        };
        let cached = |s: &Self, fp: Fingerprint, (artifacts, memo)| {
            let mut o = s.finish_cached(fp, key, artifacts, 1);
            o.record.memo = memo;
            o
        };
        if let Some(hit) = lookup(self) {
            return Ok(cached(self, fp, hit));
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
        if let Some(hit) = lookup(self) {
            return Ok(cached(self, fp, hit));
        }
        let _device = self.node.node.heavy().then(|| self.device.lock().unwrap());
        let warn = |m: String| self.warn(m);
        let status = |message: String| {
            self.progress.event(&Event::Status {
                node: self.node.name.clone(),
                message,
            });
        };
        let checkpoints = Checkpoints {
            store: self.store,
            key,
        };
        let memo = Memo::new(self.store);
        let outputs = w.run(&WholeCx {
            store: self.store,
            inputs,
            seed: self.p.seed,
            warn: &warn,
            status: &status,
            checkpoint: &checkpoints,
            memo: &memo,
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
        let memo_list = memo.commit_list()?;
        self.store.sync()?;
        let entry = NodeEntry {
            memo: memo_list,
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
        // The result is committed: its partial work is no longer needed.
        checkpoints.clear()?;
        let mut r = self.record(NodeStatus::Executed, fp, key);
        r.outputs = refs;
        r.memo = memo_list;
        r.items_total = 1;
        r.items_computed = 1;
        Ok(NodeOutcome {
            record: r,
            artifacts: Some(artifacts),
            cache_damage: false,
        })
    }
}
