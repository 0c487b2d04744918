//! What the cache must keep: everything reachable from the runs we keep.
//!
//! Kept runs are the newest `keep_last` runs of each pipeline plus every pinned run. From
//! each, the node keys, the output manifests and their item blobs, and the per-item keys
//! are reachable. Everything else may go; recently written files are spared by the cache's
//! grace period so an interrupted run's committed items survive until it is rerun.

use std::collections::HashMap;

use nsync_cache::{CacheError, Digest, Reachable, Store};

use crate::artifact::parse_manifest;
use crate::memo::parse_list;
use crate::run_record::RunRecord;

pub struct KeepPolicy {
    pub keep_last: usize,
}

/// The runs kept by `policy` (ids) and what they reach.
pub fn reachable(
    store: &Store,
    policy: &KeepPolicy,
) -> Result<(Vec<String>, Reachable), CacheError> {
    let runs = RunRecord::all(store)?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut kept = Vec::new();
    for r in runs.iter().rev() {
        let n = seen.entry(r.pipeline.as_str()).or_default();
        if *n < policy.keep_last || r.pinned {
            kept.push(r);
        }
        *n += 1;
    }
    let mut reach = Reachable::default();
    for r in &kept {
        for node in r.nodes.values() {
            if let Some(k) = node.key {
                reach.entries.insert(k);
            }
            for o in node.outputs.values() {
                reach.blobs.insert(o.digest);
                if o.per_item {
                    if let Ok(b) = store.get_blob(&o.digest) {
                        if let Ok(items) = parse_manifest(&b) {
                            reach.blobs.extend(items.values().map(|x| x.digest));
                        }
                    }
                }
            }
            if let Some(m) = node.memo {
                reach.blobs.insert(m);
                if let Some(list) = store.get_blob(&m).ok().and_then(|b| parse_list(&b)) {
                    for (entry, blob) in list {
                        reach.entries.insert(entry);
                        reach.blobs.insert(blob);
                    }
                }
            }
            if let Some(k) = node.item_keys {
                reach.blobs.insert(k);
                if let Ok(b) = store.get_blob(&k) {
                    if let Ok(list) = serde_json::from_slice::<Vec<(String, Digest)>>(&b) {
                        reach.entries.extend(list.into_iter().map(|(_, d)| d));
                    }
                }
            }
        }
    }
    reach.runs = kept.iter().map(|r| r.run_id.clone()).collect();
    Ok((kept.iter().map(|r| r.run_id.clone()).collect(), reach))
}
