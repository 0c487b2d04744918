//! Where the cache lives: `--cache-dir`, else `$NSYNC_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/nsync`, else `~/.cache/nsync` (the usual place for per-user caches on
//! Linux), else `.nsync-cache` in the current folder.

use std::path::PathBuf;

pub fn resolve(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("NSYNC_CACHE_DIR").filter(|s| !s.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(p).join("nsync");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(h).join(".cache").join("nsync");
    }
    PathBuf::from(".nsync-cache")
}
