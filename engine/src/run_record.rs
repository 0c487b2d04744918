//! Run records: what each `nsync run` did, kept in the cache for `runs`, `explain`,
//! `export` and `gc`.
//!
//! A record holds the pipeline as resolved, each node's fingerprint (the pre-image of its
//! key), key, output digests, status, item counts and timings, plus versions and hardware.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use nsync_cache::{CacheError, Digest, Store};
use serde::{Deserialize, Serialize};

use crate::artifact::OutputRef;
use crate::fingerprint::Fingerprint;
use crate::progress::NodeStatus;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    /// The pipeline file as given (informational; never part of a key).
    pub file: String,
    pub started: String,
    pub finished: String,
    /// "ok" or "failed".
    pub status: String,
    pub nsync_version: String,
    pub key_version: u64,
    pub hardware: Hardware,
    pub jobs: usize,
    #[serde(default)]
    pub pinned: bool,
    pub resolved: serde_json::Value,
    pub nodes: IndexMap<String, NodeRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub kind: String,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Blob listing `(item id, item key)` of a per-item node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_keys: Option<Digest>,
    /// Blob listing the memo pieces of a whole node (index entries and blobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<Digest>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRef>,
    pub items_total: usize,
    pub items_computed: usize,
    pub items_cached: usize,
    pub items_rejected: usize,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hardware {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
}

impl Hardware {
    pub fn current() -> Self {
        Hardware {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A new, time-sortable run id: `20261129T172812123Z-3f9a`.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now();
    let ts: String = humantime::format_rfc3339_millis(now)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let salt = nsync_cache::FramedHasher::new("nsync.run-id.v1")
        .u64(1, std::process::id() as u64)
        .str(2, &format!("{now:?}"))
        .finish();
    format!("{ts}-{}", &salt.to_hex()[..4])
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl RunRecord {
    pub fn save(&self, store: &Store) -> Result<(), CacheError> {
        let v = serde_json::to_value(self).map_err(|e| CacheError::Json {
            what: "run record".into(),
            source: e,
        })?;
        store.put_run(&self.run_id, &v)?;
        Ok(())
    }

    pub fn load(store: &Store, id: &str) -> Result<Option<RunRecord>, CacheError> {
        match store.get_run(id)? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| CacheError::Json {
                    what: format!("run record {id}"),
                    source: e,
                }),
            None => Ok(None),
        }
    }

    /// All readable records, oldest first. Unreadable ones are skipped.
    pub fn all(store: &Store) -> Result<Vec<RunRecord>, CacheError> {
        Ok(store
            .run_ids()?
            .iter()
            .filter_map(|id| RunRecord::load(store, id).ok().flatten())
            .collect())
    }

    /// The newest record of `pipeline` in which `node` was computed or found cached.
    pub fn latest_with(
        store: &Store,
        pipeline: &str,
        node: Option<&str>,
    ) -> Result<Option<RunRecord>, CacheError> {
        let ids = store.run_ids()?;
        for id in ids.iter().rev() {
            if let Some(r) = RunRecord::load(store, id).ok().flatten() {
                // Only runs in which the node really produced (or reused) results count.
                let produced = |n: &str| {
                    r.nodes.get(n).is_some_and(|x| {
                        x.fingerprint.is_some()
                            && matches!(x.status, NodeStatus::Executed | NodeStatus::Cached)
                    })
                };
                if r.pipeline == pipeline && node.is_none_or(produced) {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Resolve a user-given id: exact, unique prefix, or `latest`.
    pub fn resolve_id(store: &Store, given: &str) -> Result<Option<String>, CacheError> {
        let ids = store.run_ids()?;
        if given == "latest" || given == "last" {
            return Ok(ids.last().cloned());
        }
        if ids.iter().any(|i| i == given) {
            return Ok(Some(given.to_string()));
        }
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(given)).collect();
        Ok(match matches.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        })
    }
}
