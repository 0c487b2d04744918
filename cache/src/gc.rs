//! Garbage collection by reachability.
//!
//! The engine says what is reachable from the runs it keeps (blobs and index keys); the
//! rest goes. GC holds the cache-wide lock exclusively, so it never races a running
//! pipeline, and with `dry_run` it only reports.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::store::Store;
use crate::{CacheError, Digest};

#[derive(Debug, Default)]
pub struct Reachable {
    pub blobs: HashSet<Digest>,
    pub entries: HashSet<Digest>,
    /// Run records to keep; the others are removed.
    pub runs: HashSet<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub entries_removed: u64,
    pub locks_removed: u64,
    pub runs_removed: u64,
    /// Unreachable but younger than the grace period, so kept.
    pub recent_kept: u64,
    pub blobs_kept: u64,
    pub entries_kept: u64,
}

fn digest_of_file(p: &Path, ext: &str) -> Option<Digest> {
    let name = p.file_name()?.to_str()?;
    name.strip_suffix(ext)?.parse().ok()
}

impl Store {
    /// Remove every blob, index entry and run record not in `keep`, except files written
    /// within `grace` (an interrupted run's committed items, kept for its rerun). Staging
    /// files left by killed writers and lock files go too.
    pub fn gc(
        &self,
        keep: &Reachable,
        grace: Duration,
        dry_run: bool,
    ) -> Result<GcReport, CacheError> {
        let _guard = self.lock_for_gc()?;
        let mut r = GcReport {
            dry_run,
            ..Default::default()
        };
        let now = SystemTime::now();
        let recent = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age < grace)
        };
        for id in self.run_ids()? {
            if !keep.runs.contains(&id) {
                r.runs_removed += 1;
                if !dry_run {
                    self.remove_run(&id)?;
                }
            }
        }
        for p in Store::walk(&self.layout().blobs()) {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            match digest_of_file(&p, "") {
                Some(d) if keep.blobs.contains(&d) => r.blobs_kept += 1,
                Some(_) if recent(&p) => r.recent_kept += 1,
                _ => {
                    r.blobs_removed += 1;
                    r.bytes_freed += len;
                    if !dry_run {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
        for p in Store::walk(&self.layout().index()) {
            match digest_of_file(&p, ".json") {
                Some(d) if keep.entries.contains(&d) => r.entries_kept += 1,
                Some(_) if recent(&p) => r.recent_kept += 1,
                _ => {
                    r.entries_removed += 1;
                    if !dry_run {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
        // Safe: every run holds the gc lock shared, and we hold it exclusively.
        for p in Store::walk(&self.layout().locks()) {
            r.locks_removed += 1;
            if !dry_run {
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::Durability;

    #[test]
    fn keeps_reachable_removes_rest() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c")).unwrap();
        let a = s.put_blob(b"a", Durability::Batched).unwrap();
        let b = s.put_blob(b"b", Durability::Batched).unwrap();
        let k = Digest::of(b"k");
        s.put_entry(&k, &serde_json::json!({}), Durability::Batched)
            .unwrap();
        let mut keep = Reachable::default();
        keep.blobs.insert(a);
        let dry = s.gc(&keep, Duration::ZERO, true).unwrap();
        assert_eq!((dry.blobs_removed, dry.entries_removed), (1, 1));
        assert!(s.get_blob(&b).is_ok(), "dry run removes nothing");
        assert_eq!(
            s.gc(&keep, Duration::from_secs(3600), false)
                .unwrap()
                .blobs_removed,
            0,
            "grace"
        );
        let real = s.gc(&keep, Duration::ZERO, false).unwrap();
        assert_eq!(real.blobs_removed, 1);
        assert!(s.get_blob(&a).is_ok());
        assert!(s.get_blob(&b).is_err());
        assert!(s.get_entry(&k).is_none());
    }
}
