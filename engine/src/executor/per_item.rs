//! Running a per-item node: item keys, the node-level fast path, batches of missing items
//! claimed with per-key locks and committed one by one, manifests, reject policy.

use std::collections::BTreeMap;

use nsync_cache::atomic::Durability;
use nsync_cache::{CacheError, Digest, LockOutcome};
use rayon::prelude::*;

use crate::artifact::{Artifact, BlobRef};
use crate::fingerprint::Fingerprint;
use crate::node::{Inputs, ItemCx, ItemOutcome, ItemsCx, PerItem, RejectPolicy, WorkItem};
use crate::progress::{Event, NodeStatus};

use super::node_cx::{ItemEntry, NodeCx, NodeEntry, NodeResult};
use super::NodeOutcome;

/// The output artifacts by port, and the rejected items with their reasons.
type Assembled = (BTreeMap<String, Artifact>, BTreeMap<String, String>);

impl NodeCx<'_> {
    pub(super) fn per_item(
        &mut self,
        pi: &dyn PerItem,
        inputs: &Inputs,
        fp: Fingerprint,
    ) -> NodeResult {
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
        // Fast path: the whole node is cached. (A cached result that skipped rejected items
        // does not count once the policy says `fail`: the item path reports them.)
        let entry = self
            .store
            .get_entry(&node_key)
            .and_then(|v| serde_json::from_value::<NodeEntry>(v).ok())
            .filter(|e| e.rejected.is_empty() || pi.reject_policy() == RejectPolicy::Skip);
        if let Some(entry) = entry {
            if let Some(artifacts) = self.cached_outputs(&entry) {
                for (id, why) in &entry.rejected {
                    self.warn(format!("skipped item `{id}`: {why}"));
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
        let found: Vec<Option<ItemEntry>> = keys
            .par_iter()
            .map(|(_, key)| self.item_entry(key))
            .collect();
        for (idx, ((id, _), entry)) in keys.iter().zip(found).enumerate() {
            match entry {
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
            let status = |message: String| {
                self.progress.event(&Event::Status {
                    node: self.node.name.clone(),
                    message,
                });
            };
            let icx = ItemCx {
                store: self.store,
                inputs,
                seed: self.p.seed,
                status: &status,
            };
            let mut worker = pi.open(&icx)?;
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
            memo: None,
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
    ) -> Result<Assembled, crate::node::NodeError> {
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
