//! The content-addressed store behind nsync.
//!
//! This crate knows nothing of pipelines or machine learning. It stores bytes under their
//! blake3 digest (`blobs/`), maps opaque keys to small JSON results (`index/`), keeps run
//! records (`runs/`), hands out per-key locks so that concurrent processes never compute the
//! same key twice, and memoises the digests of external files (weights, source images) by
//! their `(device, inode, size, mtime)` so that large files are hashed once.
//!
//! Every write goes through [`atomic`]: a staging file in the same directory, then a rename,
//! so a process killed at any moment leaves either the old state or the new one, never a torn
//! file. Every blob read is verified against its digest, so a corrupt file is never served.

pub mod atomic;
pub mod digest;
pub mod error;
pub mod file_digest;
pub mod gc;
pub mod layout;
pub mod lock;
pub mod store;

pub use digest::{Digest, FramedHasher};
pub use error::CacheError;
pub use file_digest::FileDigester;
pub use gc::{GcReport, Reachable};
pub use lock::{KeyLock, LockOutcome};
pub use store::{Store, StoreStats, VerifyReport};
