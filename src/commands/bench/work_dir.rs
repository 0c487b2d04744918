//! The benchmark's work folder, as a guard that cleans up after itself.
//!
//! The benchmark writes a data set, caches, a DVC project and a large file. With
//! `--work-dir` it may run inside a folder that holds other things, so it only ever removes
//! the names it creates itself ([`OWNED`]); a folder it created is removed as a whole.
//! `--keep` leaves everything in place for inspection.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

/// Names this benchmark creates inside the work folder; only these are ever removed.
const OWNED: &[&str] = &["data", "cache", "dvc", "pipeline.toml", "big.bin"];

pub(super) struct WorkDir {
    pub(super) path: PathBuf,
    keep: bool,
    /// Whether the folder itself was created by us (then it is removed as a whole).
    created: bool,
}

impl WorkDir {
    pub(super) fn new(given: Option<PathBuf>, keep: bool) -> anyhow::Result<Self> {
        let (path, created) = match given {
            Some(p) => {
                let created = !p.exists();
                std::fs::create_dir_all(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                // Leftovers of an earlier run with the same --work-dir.
                for name in OWNED {
                    remove_any(&p.join(name))?;
                }
                (p, created)
            }
            None => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let p = std::env::temp_dir()
                    .join(format!("nsync-bench-{}-{nanos:x}", std::process::id()));
                std::fs::create_dir_all(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                (p, true)
            }
        };
        let path = std::path::absolute(&path)?;
        Ok(WorkDir {
            path,
            keep,
            created,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("work folder kept: {}", self.path.display());
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            for name in OWNED {
                let _ = remove_any(&self.path.join(name));
            }
        }
    }
}

/// Remove a file, link or folder at `p`; nothing there is not an error.
fn remove_any(p: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display())),
        Err(_) => Ok(()),
    }
}
