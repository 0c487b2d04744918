//! The nsync side of the pipeline comparison: timed runs of this very binary.
//!
//! The benchmark runs `nsync run --json` as a child process rather than calling the engine
//! in process, so that the times include start-up, spec loading and cache opening, exactly
//! what a user waits for, and compare fairly with `dvc repro`. The JSON summary also says
//! how many items each run computed, which shows whether a rerun did only the new work.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use super::dataset::write_items;
use super::timing::{timed, PipelineTimes};
use super::EngineBenchArgs;

/// One timed `nsync run`: seconds and items computed (summed over nodes, from `--json`).
fn nsync_run(work: &Path, jobs: usize, what: &str) -> anyhow::Result<(f64, u64)> {
    let exe = std::env::current_exe().context("cannot find the nsync executable")?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(work)
        .arg("run")
        .arg(work.join("pipeline.toml"))
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .args(["--jobs", &jobs.to_string(), "--json"]);
    let (t, stdout) = timed(cmd, what)?;
    let text = String::from_utf8_lossy(&stdout);
    let summary: serde_json::Value = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("{what}: no JSON summary on stdout"))?;
    if summary["status"] != "ok" {
        bail!("{what}: run status {}", summary["status"]);
    }
    let computed = summary["nodes"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|n| n["items_computed"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok((t, computed))
}

/// Time the cold run, the no-op reruns, the rerun after adding items and one more no-op
/// rerun, on the data set and pipeline already in `work`.
pub(super) fn bench_nsync(a: &EngineBenchArgs, work: &Path) -> anyhow::Result<PipelineTimes> {
    let mut r = PipelineTimes::default();
    eprintln!("nsync cold run…");
    let (t, c_cold) = nsync_run(work, a.jobs, "nsync cold run")?;
    r.cold = t;
    eprintln!("  {t:.3} s, {c_cold} items computed");
    let mut c_noop = 0;
    for k in 1..=a.repeats.max(1) {
        eprintln!("nsync no-op rerun {k}/{}…", a.repeats.max(1));
        let (t, c) = nsync_run(work, a.jobs, "nsync no-op rerun")?;
        eprintln!("  {t:.3} s, {c} items computed");
        c_noop = c_noop.max(c);
        r.noop.push(t);
    }
    eprintln!("adding {} items…", a.added);
    write_items(&[work.join("data/img")], a.items..a.items + a.added, false)?;
    eprintln!("nsync rerun after adding {} items…", a.added);
    let (t, c_add) = nsync_run(work, a.jobs, "nsync rerun after adding items")?;
    eprintln!("  {t:.3} s, {c_add} items computed");
    r.added = t;
    eprintln!("nsync second no-op rerun…");
    let (t, c_noop2) = nsync_run(work, a.jobs, "nsync second no-op rerun")?;
    eprintln!("  {t:.3} s, {c_noop2} items computed");
    r.noop2 = t;
    r.computed = Some([c_cold, c_noop, c_add, c_noop2]);
    Ok(r)
}
