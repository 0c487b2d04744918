//! Digests of external files (source images, model weights), hashed once.
//!
//! A file's digest is memoised under its absolute path with its `(device, inode, size,
//! mtime_ns)`; any change to those rehashes it. A file modified within the last two seconds
//! is not memoised, because a second write in the same mtime tick would otherwise go
//! unnoticed (the "racy git" problem). Large files are hashed memory-mapped on all cores,
//! like `b3sum`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::atomic::{write_atomic, Durability};
use crate::error::IoContext;
use crate::{CacheError, Digest};

const MMAP_THRESHOLD: u64 = 1 << 20;
const RACY_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemoEntry {
    stamp: Stamp,
    digest: Digest,
}

/// Hashes files, remembering digests across runs in `memo/files.json`.
pub struct FileDigester {
    memo_path: Option<PathBuf>,
    memo: Mutex<HashMap<PathBuf, MemoEntry>>,
    dirty: Mutex<bool>,
}

/// Hash a file's content with blake3 (memory-mapped and multi-threaded for large files).
pub fn hash_file(path: &Path, size: u64) -> Result<Digest, CacheError> {
    let mut h = blake3::Hasher::new();
    if size >= MMAP_THRESHOLD {
        h.update_mmap_rayon(path).at(path)?;
    } else {
        let bytes = std::fs::read(path).at(path)?;
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

impl FileDigester {
    /// A digester that remembers nothing between calls (for benchmarks and tests).
    pub fn unmemoised() -> Self {
        FileDigester {
            memo_path: None,
            memo: Mutex::new(HashMap::new()),
            dirty: Mutex::new(false),
        }
    }

    pub(crate) fn load(memo_dir: &Path) -> Self {
        let memo_path = memo_dir.join("files.json");
        let memo = std::fs::read(&memo_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<HashMap<PathBuf, MemoEntry>>(&b).ok())
            .unwrap_or_default();
        FileDigester {
            memo_path: Some(memo_path),
            memo: Mutex::new(memo),
            dirty: Mutex::new(false),
        }
    }

    /// The digest and size of the file at `path`.
    pub fn digest(&self, path: &Path) -> Result<(Digest, u64), CacheError> {
        let abs = std::path::absolute(path).at(path)?;
        let meta = std::fs::metadata(&abs).at(&abs)?;
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        };
        if self.memo_path.is_some() {
            if let Some(e) = self.memo.lock().unwrap().get(&abs) {
                if e.stamp == stamp {
                    return Ok((e.digest, stamp.size));
                }
            }
        }
        let digest = hash_file(&abs, stamp.size)?;
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > RACY_WINDOW);
        if self.memo_path.is_some() && settled {
            self.memo
                .lock()
                .unwrap()
                .insert(abs, MemoEntry { stamp, digest });
            *self.dirty.lock().unwrap() = true;
        }
        Ok((digest, stamp.size))
    }

    /// Persist new memo entries, merged with what other processes saved meanwhile.
    pub fn save(&self) -> Result<(), CacheError> {
        let Some(path) = &self.memo_path else {
            return Ok(());
        };
        if !*self.dirty.lock().unwrap() {
            return Ok(());
        }
        let mut merged = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<HashMap<PathBuf, MemoEntry>>(&b).ok())
            .unwrap_or_default();
        // Drop entries for files that no longer exist, so the memo does not grow forever.
        merged.retain(|p, _| p.exists());
        merged.extend(
            self.memo
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let bytes = serde_json::to_vec(&merged).map_err(|e| CacheError::Json {
            what: "file digest memo".into(),
            source: e,
        })?;
        write_atomic(path, &bytes, Durability::Batched)?;
        *self.dirty.lock().unwrap() = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_content_and_notices_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("w.bin");
        std::fs::write(&f, b"weights").unwrap();
        let fd = FileDigester::load(d.path());
        let (a, n) = fd.digest(&f).unwrap();
        assert_eq!(a, Digest::of(b"weights"));
        assert_eq!(n, 7);
        std::fs::write(&f, b"weights2").unwrap();
        assert_eq!(fd.digest(&f).unwrap().0, Digest::of(b"weights2"));
    }

    #[test]
    fn large_files_hash_like_small_ones() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("big.bin");
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&f, &data).unwrap();
        let fd = FileDigester::unmemoised();
        assert_eq!(fd.digest(&f).unwrap().0, Digest::of(&data));
    }
}
