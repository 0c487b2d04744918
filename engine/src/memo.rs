//! Sub-results of a whole node, cached by their own content keys across runs.
//!
//! A whole node (an evaluation, say) computes one result from all of its inputs, so the
//! engine caches it as one unit. Some of its work is per piece of content, though: the
//! features of one image under one network do not change when another image is added.
//! A [`Memo`] lets the node cache such pieces under keys it derives from content only
//! (e.g. extractor, preprocessing and image digest), so adding 10 generated images costs
//! 10 feature extractions, not all of them again.
//!
//! Every key the node reads or writes is listed in a blob recorded with the node's result
//! and its run record, which keeps the pieces reachable for `cache gc` as long as the run
//! is kept. Writes are batched (the executor syncs once when the node finishes); a piece
//! lost to a crash is a digest mismatch on read, which counts as a miss.

use std::collections::BTreeMap;
use std::sync::Mutex;

use nsync_cache::atomic::Durability;
use nsync_cache::{CacheError, Digest, FramedHasher, Store};

pub struct Memo<'a> {
    store: &'a Store,
    used: Mutex<BTreeMap<Digest, Digest>>,
}

impl<'a> Memo<'a> {
    pub fn new(store: &'a Store) -> Self {
        Memo {
            store,
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// The index key of a memo key: a separate domain, so a memo key never collides with
    /// a node or item key.
    fn entry_key(key: &Digest) -> Digest {
        FramedHasher::new("nsync.memo.v1").digest(1, key).finish()
    }

    /// The bytes cached under `key`, verified; `None` if absent or damaged.
    pub fn get(&self, key: &Digest) -> Option<Vec<u8>> {
        let entry_key = Self::entry_key(key);
        let entry = self.store.get_entry(&entry_key)?;
        let blob: Digest = entry.get("blob")?.as_str()?.parse().ok()?;
        let bytes = self.store.get_blob(&blob).ok()?;
        self.used.lock().unwrap().insert(entry_key, blob);
        Some(bytes)
    }

    /// Cache `bytes` under `key`.
    pub fn put(&self, key: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        let entry_key = Self::entry_key(key);
        let blob = self.store.put_blob(bytes, Durability::Batched)?;
        let entry = serde_json::json!({ "blob": blob, "size": bytes.len() });
        self.store
            .put_entry(&entry_key, &entry, Durability::Batched)?;
        self.used.lock().unwrap().insert(entry_key, blob);
        Ok(())
    }

    /// How many pieces were read or written.
    pub fn len(&self) -> usize {
        self.used.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Store the list of `(index entry, blob)` pairs used, for the node's entry and run
    /// record; `None` if the node used no memo.
    pub fn commit_list(&self) -> Result<Option<Digest>, CacheError> {
        let used = self.used.lock().unwrap();
        if used.is_empty() {
            return Ok(None);
        }
        let list: Vec<(Digest, Digest)> = used.iter().map(|(k, b)| (*k, *b)).collect();
        let bytes = serde_json::to_vec(&list).expect("memo list serialises");
        Ok(Some(self.store.put_blob(&bytes, Durability::Batched)?))
    }
}

/// The `(index entry, blob)` pairs of a committed memo list.
pub fn parse_list(bytes: &[u8]) -> Option<Vec<(Digest, Digest)>> {
    serde_json::from_slice(bytes).ok()
}
