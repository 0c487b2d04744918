//! [`Store`]: blobs by content, results by key, run records, locks.
//!
//! Writes go blob first, then the index entry that refers to it, each atomically; an index
//! entry therefore never points at a blob that was not fully written by its writer. Reads
//! verify blob digests, and a blob that fails is moved to `quarantine/` so the next lookup
//! sees it missing and the engine recomputes it.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::atomic::{sync_filesystem, write_atomic, Durability};
use crate::error::IoContext;
use crate::file_digest::FileDigester;
use crate::layout::Layout;
use crate::lock::{self, KeyLock, LockOutcome};
use crate::{CacheError, Digest};

pub struct Store {
    layout: Layout,
    files: FileDigester,
}

#[derive(Debug, Default, Serialize)]
pub struct StoreStats {
    pub root: PathBuf,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub entries: u64,
    pub runs: u64,
    pub quarantined: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    /// Digests whose content did not match; each was moved to `quarantine/`.
    pub corrupt: Vec<String>,
    /// Index entries that could not be parsed; each was removed.
    pub bad_entries: Vec<String>,
}

impl Store {
    /// Open the cache at `root`, creating it if needed.
    pub fn open(root: &Path) -> Result<Store, CacheError> {
        let layout = Layout::open(root)?;
        let files = FileDigester::load(&layout.memo());
        Ok(Store { layout, files })
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Memoised digests of files outside the cache.
    pub fn files(&self) -> &FileDigester {
        &self.files
    }

    // ---- blobs ----

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        Layout::sharded(&self.layout.blobs(), &d.to_hex(), "")
    }

    /// Store `bytes`, returning their digest. Storing existing content is a no-op.
    pub fn put_blob(&self, bytes: &[u8], durability: Durability) -> Result<Digest, CacheError> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        let present = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if !present {
            write_atomic(&path, bytes, durability)?;
        }
        Ok(d)
    }

    /// Read a blob and verify it. A corrupt blob is quarantined and reported as an error.
    pub fn get_blob(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let path = self.blob_path(d);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::MissingBlob {
                    digest: d.to_hex(),
                    path,
                })
            }
            Err(e) => return Err(CacheError::io(path, e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != d {
            self.quarantine(d)?;
            return Err(CacheError::CorruptBlob {
                expected: d.to_hex(),
                actual: actual.to_hex(),
                path,
            });
        }
        Ok(bytes)
    }

    /// Cheap presence check: the blob exists with the expected size.
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(d)).is_ok_and(|m| m.len() == size)
    }

    /// Move a blob out of the way so it is recomputed; keep it for inspection.
    pub fn quarantine(&self, d: &Digest) -> Result<(), CacheError> {
        let from = self.blob_path(d);
        let to = self.layout.quarantine().join(d.to_hex());
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(from, e)),
        }
    }

    // ---- index ----

    fn entry_path(&self, key: &Digest) -> PathBuf {
        Layout::sharded(&self.layout.index(), &key.to_hex(), ".json")
    }

    /// The result stored under `key`, if any. An unreadable entry counts as missing.
    pub fn get_entry(&self, key: &Digest) -> Option<serde_json::Value> {
        let path = self.entry_path(key);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("ignoring unreadable cache entry {}: {e}", path.display());
                None
            }
        }
    }

    pub fn put_entry(
        &self,
        key: &Digest,
        value: &serde_json::Value,
        durability: Durability,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|e| CacheError::Json {
            what: format!("cache entry {key}"),
            source: e,
        })?;
        write_atomic(&self.entry_path(key), &bytes, durability)
    }

    pub fn remove_entry(&self, key: &Digest) -> Result<(), CacheError> {
        let path = self.entry_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(path, e)),
        }
    }

    // ---- runs ----

    pub fn put_run(&self, id: &str, record: &serde_json::Value) -> Result<PathBuf, CacheError> {
        let path = self.layout.runs().join(format!("{id}.json"));
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| CacheError::Json {
            what: format!("run record {id}"),
            source: e,
        })?;
        write_atomic(&path, &bytes, Durability::Fsync)?;
        Ok(path)
    }

    /// Run ids, oldest first (ids sort by time).
    pub fn run_ids(&self) -> Result<Vec<String>, CacheError> {
        let dir = self.layout.runs();
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .at(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn get_run(&self, id: &str) -> Result<Option<serde_json::Value>, CacheError> {
        let path = self.layout.runs().join(format!("{id}.json"));
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CacheError::Json {
                    what: format!("run record {}", path.display()),
                    source: e,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io(path, e)),
        }
    }

    pub fn remove_run(&self, id: &str) -> Result<(), CacheError> {
        let path = self.layout.runs().join(format!("{id}.json"));
        std::fs::remove_file(&path).at(&path)
    }

    // ---- locks ----

    fn lock_path(&self, key: &Digest) -> PathBuf {
        Layout::sharded(&self.layout.locks(), &key.to_hex(), ".lock")
    }

    /// Try to claim `key` for computation without waiting.
    pub fn try_lock_key(&self, key: &Digest) -> Result<LockOutcome, CacheError> {
        lock::try_lock(&self.lock_path(key))
    }

    /// Claim `key`, waiting while another process computes it.
    pub fn lock_key(&self, key: &Digest) -> Result<KeyLock, CacheError> {
        lock::lock(&self.lock_path(key))
    }

    /// Held (shared) by every run for its whole duration; `gc` takes it exclusively.
    pub fn lock_for_run(&self) -> Result<KeyLock, CacheError> {
        lock::lock_mode(&self.layout.base.join("gc.lock"), false)
    }

    pub fn lock_for_gc(&self) -> Result<KeyLock, CacheError> {
        lock::lock_mode(&self.layout.base.join("gc.lock"), true)
    }

    /// Flush batched writes to stable storage.
    pub fn sync(&self) -> Result<(), CacheError> {
        sync_filesystem(&self.layout.base)
    }

    // ---- maintenance ----

    pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(dir) else {
            return out;
        };
        for shard in shards.filter_map(|e| e.ok()) {
            if let Ok(files) = std::fs::read_dir(shard.path()) {
                out.extend(files.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        out
    }

    pub fn stats(&self) -> Result<StoreStats, CacheError> {
        let mut s = StoreStats {
            root: self.layout.root.clone(),
            ..Default::default()
        };
        for p in Self::walk(&self.layout.blobs()) {
            if let Ok(m) = std::fs::metadata(&p) {
                s.blobs += 1;
                s.blob_bytes += m.len();
            }
        }
        s.entries = Self::walk(&self.layout.index()).len() as u64;
        s.runs = self.run_ids()?.len() as u64;
        s.quarantined = std::fs::read_dir(self.layout.quarantine())
            .map(|r| r.count() as u64)
            .unwrap_or(0);
        Ok(s)
    }

    /// Rehash every blob; quarantine the corrupt ones and drop unreadable index entries.
    pub fn verify(&self) -> Result<VerifyReport, CacheError> {
        let blobs = Self::walk(&self.layout.blobs());
        let results: Vec<(u64, Option<String>)> = blobs
            .par_iter()
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                if name.starts_with(".tmp-") {
                    return None;
                }
                let expected: Digest = name.parse().ok()?;
                let bytes = std::fs::read(p).ok()?;
                let ok = Digest::of(&bytes) == expected;
                Some((bytes.len() as u64, (!ok).then(|| expected.to_hex())))
            })
            .collect();
        let mut report = VerifyReport::default();
        for (n, bad) in results {
            report.blobs_checked += 1;
            report.bytes_checked += n;
            if let Some(hex) = bad {
                self.quarantine(&hex.parse()?)?;
                report.corrupt.push(hex);
            }
        }
        for p in Self::walk(&self.layout.index()) {
            let ok = std::fs::read(&p)
                .ok()
                .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
            if !ok && !p.to_string_lossy().contains(".tmp-") {
                let _ = std::fs::remove_file(&p);
                report.bad_entries.push(p.display().to_string());
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_corruption_detection() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c")).unwrap();
        let dg = s.put_blob(b"hello", Durability::Batched).unwrap();
        assert_eq!(s.get_blob(&dg).unwrap(), b"hello");
        assert!(s.has_blob(&dg, 5));
        std::fs::write(s.blob_path(&dg), b"HELLO").unwrap();
        let err = s.get_blob(&dg).unwrap_err();
        assert!(matches!(err, CacheError::CorruptBlob { .. }), "{err}");
        assert!(!s.has_blob(&dg, 5), "corrupt blob was quarantined");
        assert!(matches!(
            s.get_blob(&dg).unwrap_err(),
            CacheError::MissingBlob { .. }
        ));
    }

    #[test]
    fn entries_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("c")).unwrap();
        let k = Digest::of(b"key");
        assert!(s.get_entry(&k).is_none());
        s.put_entry(&k, &serde_json::json!({"a": 1}), Durability::Batched)
            .unwrap();
        assert_eq!(s.get_entry(&k).unwrap()["a"], 1);
        let good = s.put_blob(b"good", Durability::Batched).unwrap();
        let bad = s.put_blob(b"bad", Durability::Batched).unwrap();
        std::fs::write(s.blob_path(&bad), b"bad!").unwrap();
        let r = s.verify().unwrap();
        assert_eq!(r.blobs_checked, 2);
        assert_eq!(r.corrupt, vec![bad.to_hex()]);
        assert!(s.get_blob(&good).is_ok());
    }
}
