//! Atomic file writes: a staging file in the target's own directory, then a rename.
//!
//! A reader sees either the previous file or the complete new one, whatever happens to the
//! writer (including `kill -9`). With [`Durability::Fsync`] the data also survives a power
//! loss; [`Durability::Batched`] leaves flushing to a later [`sync_filesystem`] call, which
//! is how per-item commits stay cheap: every blob read is verified against its digest, so a
//! blob torn by an OS crash is detected and recomputed, never served.

use std::io::Write;
use std::path::Path;

use crate::error::IoContext;
use crate::CacheError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename.
    Fsync,
    /// No fsync per file; call [`sync_filesystem`] at the end of a batch.
    Batched,
}

/// Write `bytes` to `path` atomically, creating the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), CacheError> {
    let dir = path.parent().expect("atomic write target has a parent");
    let mut tmp = match tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).at(dir)?;
            tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(dir)
                .at(dir)?
        }
        Err(e) => return Err(CacheError::io(dir, e)),
    };
    tmp.write_all(bytes).at(tmp.path())?;
    if durability == Durability::Fsync {
        tmp.as_file().sync_all().at(tmp.path())?;
    }
    // The temporary file is removed on drop if the rename fails.
    tmp.persist(path)
        .map_err(|e| CacheError::io(path, e.error))?;
    Ok(())
}

/// Flush everything written so far on the filesystem that holds `path` to stable storage.
pub fn sync_filesystem(path: &Path) -> Result<(), CacheError> {
    let dir = std::fs::File::open(path).at(path)?;
    #[cfg(target_os = "linux")]
    {
        rustix::fs::syncfs(&dir).map_err(|e| CacheError::io(path, e.into()))?;
    }
    #[cfg(not(target_os = "linux"))]
    {
        dir.sync_all().at(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/file.json");
        write_atomic(&p, b"one", Durability::Fsync).unwrap();
        write_atomic(&p, b"two", Durability::Batched).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        sync_filesystem(dir.path()).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no staging files left: {leftovers:?}");
    }
}
