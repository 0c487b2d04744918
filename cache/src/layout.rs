//! The cache directory on disk, self-describing and versioned.
//!
//! ```text
//! <cache-dir>/
//!   CACHEDIR.TAG          marks the folder as a cache for backup tools
//!   v1/
//!     FORMAT              {"tool":"nsync","format":1}
//!     blobs/ab/<hex>      content, addressed by blake3
//!     index/ab/<hex>.json key -> result (small JSON), with the key's pre-image
//!     runs/<id>.json      run records
//!     locks/ab/<hex>.lock per-key locks (flock, released by the OS when a process dies)
//!     memo/files.json     digests of external files by (device, inode, size, mtime)
//!     quarantine/         blobs that failed verification, kept for inspection
//! ```
//! A future incompatible format gets `v2/` beside `v1/`, so an older binary never misreads it.

use std::path::{Path, PathBuf};

use crate::atomic::{write_atomic, Durability};
use crate::error::IoContext;
use crate::CacheError;

pub const FORMAT_VERSION: u32 = 1;
const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by nsync.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub base: PathBuf,
}

impl Layout {
    /// Open (creating if needed) the cache at `root`. Refuses a non-empty folder that is not
    /// an nsync cache, so a mistyped `--cache-dir` never scribbles over a user's files.
    pub fn open(root: &Path) -> Result<Layout, CacheError> {
        let tag = root.join("CACHEDIR.TAG");
        let base = root.join(format!("v{FORMAT_VERSION}"));
        if root.exists() && !tag.exists() {
            // Another process may be creating this cache right now: its `v1/` and staging
            // files are expected; anything else means the folder belongs to someone else.
            let foreign = std::fs::read_dir(root)
                .at(root)?
                .filter_map(|e| e.ok())
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    !(name == format!("v{FORMAT_VERSION}")
                        || name.starts_with(".tmp-")
                        || name == "CACHEDIR.TAG")
                });
            if foreign {
                return Err(CacheError::IncompatibleLayout {
                    path: root.to_path_buf(),
                    detail: "the folder is not empty and has no CACHEDIR.TAG".into(),
                });
            }
        }
        std::fs::create_dir_all(&base).at(&base)?;
        if !tag.exists() {
            write_atomic(&tag, TAG.as_bytes(), Durability::Fsync)?;
        }
        let format = base.join("FORMAT");
        let expected = format!("{{\"tool\":\"nsync\",\"format\":{FORMAT_VERSION}}}\n");
        match std::fs::read_to_string(&format) {
            Ok(s) if s == expected => {}
            Ok(s) => {
                return Err(CacheError::IncompatibleLayout {
                    path: format,
                    detail: format!("unexpected FORMAT content {s:?}"),
                })
            }
            Err(_) => write_atomic(&format, expected.as_bytes(), Durability::Fsync)?,
        }
        for sub in ["blobs", "index", "runs", "locks", "memo", "quarantine"] {
            let p = base.join(sub);
            std::fs::create_dir_all(&p).at(&p)?;
        }
        Ok(Layout {
            root: root.to_path_buf(),
            base,
        })
    }

    pub fn blobs(&self) -> PathBuf {
        self.base.join("blobs")
    }
    pub fn index(&self) -> PathBuf {
        self.base.join("index")
    }
    pub fn runs(&self) -> PathBuf {
        self.base.join("runs")
    }
    pub fn locks(&self) -> PathBuf {
        self.base.join("locks")
    }
    pub fn memo(&self) -> PathBuf {
        self.base.join("memo")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.base.join("quarantine")
    }

    /// `<dir>/ab/<hex><ext>`: two-character shards keep directories small.
    pub fn sharded(dir: &Path, hex: &str, ext: &str) -> PathBuf {
        dir.join(&hex[..2]).join(format!("{hex}{ext}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("c");
        let l = Layout::open(&root).unwrap();
        assert!(root.join("CACHEDIR.TAG").exists());
        assert!(l.blobs().is_dir());
        Layout::open(&root).unwrap();
    }

    #[test]
    fn refuses_foreign_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("thesis.tex"), "x").unwrap();
        let err = Layout::open(d.path()).unwrap_err().to_string();
        assert!(err.contains("not an nsync cache"), "{err}");
    }
}
