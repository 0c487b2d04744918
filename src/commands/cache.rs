//! `nsync cache stats|verify|gc`.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::gc::{reachable, KeepPolicy};

use super::{open_store, EXIT_FAILED};
use crate::cli::CacheCommand;

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn cache(cache_dir: &Path, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(cache_dir)?;
    match cmd {
        CacheCommand::Stats { json } => {
            let s = store.stats()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("cache      {}", s.root.display());
                println!("blobs      {} ({})", s.blobs, human(s.blob_bytes));
                println!("entries    {}", s.entries);
                println!("runs       {}", s.runs);
                println!("quarantine {}", s.quarantined);
            }
        }
        CacheCommand::Verify { json } => {
            let r = store.verify()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "checked {} blobs ({})",
                    r.blobs_checked,
                    human(r.bytes_checked)
                );
                for d in &r.corrupt {
                    println!("corrupt: blob {d} (quarantined; the next run recomputes it)");
                }
                for e in &r.bad_entries {
                    println!("unreadable entry removed: {e}");
                }
                if r.corrupt.is_empty() && r.bad_entries.is_empty() {
                    println!("all intact");
                }
            }
            if !r.corrupt.is_empty() || !r.bad_entries.is_empty() {
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
        CacheCommand::Gc {
            dry_run,
            keep_last,
            grace,
            json,
        } => {
            let (kept, reach) = reachable(
                &store,
                &KeepPolicy {
                    keep_last: keep_last.max(1),
                },
            )?;
            let r = store.gc(&reach, grace, dry_run)?;
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["runs_kept"] = kept.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{verb} {} blobs ({}), {} entries, {} run records; kept {} runs, {} blobs, {} entries ({} recent files spared)",
                    r.blobs_removed,
                    human(r.bytes_freed),
                    r.entries_removed,
                    r.runs_removed,
                    kept.len(),
                    r.blobs_kept,
                    r.entries_kept,
                    r.recent_kept
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
