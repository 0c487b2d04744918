//! Per-key locks between processes, built on `flock` (via `std::fs::File::lock`).
//!
//! The OS releases a lock when its holder dies, so a `kill -9` never leaves a stale lock
//! and no one ever has to "unlock" the cache by hand. Lock files are empty and are only
//! deleted by `gc`, which first takes the cache-wide lock exclusively while every run holds
//! it shared; that closes the race where a waiter locks a file that was just unlinked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::CacheError;

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
    path: PathBuf,
}

impl KeyLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub enum LockOutcome {
    Acquired(KeyLock),
    /// Another process holds it.
    Busy,
}

fn open(path: &Path) -> Result<File, CacheError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)
}

/// Try to take the exclusive lock at `path` without waiting.
pub fn try_lock(path: &Path) -> Result<LockOutcome, CacheError> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(LockOutcome::Acquired(KeyLock {
            _file: file,
            path: path.to_path_buf(),
        })),
        Err(TryLockError::WouldBlock) => Ok(LockOutcome::Busy),
        Err(TryLockError::Error(e)) => Err(CacheError::io(path, e)),
    }
}

/// Take the exclusive lock at `path`, waiting for the holder to finish.
pub fn lock(path: &Path) -> Result<KeyLock, CacheError> {
    let file = open(path)?;
    file.lock().at(path)?;
    Ok(KeyLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Take the lock at `path` shared (many holders) or, with `exclusive`, alone.
pub fn lock_mode(path: &Path, exclusive: bool) -> Result<KeyLock, CacheError> {
    let file = open(path)?;
    if exclusive {
        file.lock().at(path)?;
    } else {
        file.lock_shared().at(path)?;
    }
    Ok(KeyLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.lock");
        let held = match try_lock(&p).unwrap() {
            LockOutcome::Acquired(l) => l,
            LockOutcome::Busy => panic!("fresh lock busy"),
        };
        assert!(matches!(try_lock(&p).unwrap(), LockOutcome::Busy));
        drop(held);
        assert!(matches!(try_lock(&p).unwrap(), LockOutcome::Acquired(_)));
    }
}
