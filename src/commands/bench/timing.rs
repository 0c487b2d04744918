//! Timing child processes, and summarising repeated timings.
//!
//! Both sides of the pipeline comparison (nsync and `dvc repro`) and `b3sum` are timed the
//! same way: as whole processes, wall clock, from start to exit, so that start-up costs
//! count on both sides. A failed process fails the measurement with the tail of its output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Wall-clock times of one pipeline, in seconds, from the cold run to the last no-op rerun.
#[derive(Default)]
pub(super) struct PipelineTimes {
    pub(super) cold: f64,
    pub(super) noop: Vec<f64>,
    pub(super) added: f64,
    pub(super) noop2: f64,
    /// Items computed by nsync in the runs: cold, no-ops (max), after adding, second no-op.
    pub(super) computed: Option<[u64; 4]>,
}

impl PipelineTimes {
    pub(super) fn noop_median(&self) -> f64 {
        median(&self.noop)
    }
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}

/// The shortest of `n` timings by `f`, in seconds.
pub(super) fn best_of<F: FnMut() -> anyhow::Result<f64>>(
    n: usize,
    mut f: F,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..n {
        best = best.min(f()?);
    }
    Ok(best)
}

/// The last `n` lines of `bytes`, as text.
fn tail(bytes: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run `cmd` to completion; the wall time, and stdout. Fails on a non-zero exit.
pub(super) fn timed(mut cmd: Command, what: &str) -> anyhow::Result<(f64, Vec<u8>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let el = secs(t.elapsed());
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout, 10),
            tail(&out.stderr, 20)
        );
    }
    Ok((el, out.stdout))
}
