//! `nsync bench sd`: the Stable Diffusion 1.5-size UNet in candle, side by side with
//! diffusers / PyTorch on the CPU.
//!
//! Two cases (see [`super::sd_cases`]): one guided sampling step at 512 px and one Textual
//! Inversion training step at 256 px, on random weights (no download). Each case runs in a
//! child process of this binary (the hidden `--case` flag) with `RAYON_NUM_THREADS` set to
//! `--threads`, so that its peak RSS is its own; the children run one after the other.
//! The child prints one JSON line ([`CaseResult`]); `bench/sd_reference.py` prints the same
//! fields for PyTorch, and `--reference-json` puts them side by side in the Markdown report
//! ([`super::sd_report`]). `bench/sd.sh` runs both sides.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::sd_cases::run_case;
use super::sd_report::report;
use super::timing::secs;

#[derive(Args)]
pub struct SdBenchArgs {
    /// Which steps to measure.
    #[arg(long, value_enum, default_value_t = Steps::Both)]
    pub steps_only: Steps,
    /// CPU threads for candle (`RAYON_NUM_THREADS`); give PyTorch the same.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed calls per step, the best reported (after one warm-up call when the first call
    /// takes under 30 s; a slower first call counts as the first repeat).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// PyTorch's measurements (the JSON of `bench/sd_reference.py`), to compare against.
    #[arg(long, value_name = "FILE")]
    pub reference_json: Option<PathBuf>,
    /// Also write nsync's measurements as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Internal: run this one step in this process and print its measurements as JSON.
    #[arg(long, value_enum, hide = true)]
    pub case: Option<Case>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Steps {
    Sample,
    Train,
    Both,
}

impl Steps {
    fn cases(self) -> &'static [Case] {
        match self {
            Steps::Sample => &[Case::Sample],
            Steps::Train => &[Case::Train, Case::TrainCtoa],
            Steps::Both => &[Case::Sample, Case::Train, Case::TrainCtoa],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Case {
    Sample,
    Train,
    /// One NSYNC (`ctoa`) step: three separate passes and the projected update.
    #[value(name = "train_ctoa")]
    TrainCtoa,
}

impl Case {
    pub(super) fn name(self) -> &'static str {
        match self {
            Case::Sample => "sample",
            Case::Train => "train",
            Case::TrainCtoa => "train_ctoa",
        }
    }
}

/// One step's measurements, on either side (the field names are shared with
/// `bench/sd_reference.py`). Times in seconds, memory in KiB.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct CaseResult {
    pub case: String,
    pub threads: usize,
    /// Parameters of the models built (UNet, plus the text encoder for `train`).
    #[serde(default)]
    pub params: u64,
    /// Building the models with random weights.
    pub build_s: f64,
    /// The first call, warm-up or not.
    pub first_s: f64,
    /// Whether the first call was a discarded warm-up.
    pub warmup: bool,
    /// The counted calls.
    pub times_s: Vec<f64>,
    pub best_s: f64,
    /// The best training call's forward pass (text encoder, UNet, loss) and backward pass.
    #[serde(default)]
    pub forward_s: Option<f64>,
    #[serde(default)]
    pub backward_s: Option<f64>,
    /// Resident memory once the models are built, before the first call.
    pub rss_model_kib: u64,
    /// Peak resident memory of the whole process (`VmHWM` / `ru_maxrss`).
    pub peak_rss_kib: u64,
    /// candle only: the tensors and bytes the gradient store holds after `backward()`.
    #[serde(default)]
    pub grad_store_tensors: Option<usize>,
    #[serde(default)]
    pub grad_store_bytes: Option<u64>,
    /// A sanity value: the mean |output| (sample) or the learned row's gradient norm (train).
    #[serde(default)]
    pub check: Option<f64>,
}

/// `bench/sd_reference.py`'s output.
#[derive(Deserialize)]
pub(super) struct Reference {
    pub threads: usize,
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// By case name; a case that failed holds `{"error": "..."}` instead.
    pub cases: BTreeMap<String, serde_json::Value>,
}

impl Reference {
    /// The measurements of `case`, or why there are none.
    pub(super) fn case(&self, case: Case) -> Result<CaseResult, String> {
        match self.cases.get(case.name()) {
            None => Err("not measured".into()),
            Some(v) => match v.get("error").and_then(|e| e.as_str()) {
                Some(e) => Err(format!("failed: {e}")),
                None => serde_json::from_value(v.clone()).map_err(|e| format!("unreadable: {e}")),
            },
        }
    }
}

/// What the parent measured, for the report.
pub(super) struct SdResults {
    /// Per case run: its measurements, or the error text.
    pub nsync: Vec<(Case, Result<CaseResult, String>)>,
    pub reference: Option<Reference>,
    /// `/proc/loadavg` when the benchmark started (the machine may be shared).
    pub loadavg: Option<String>,
}

pub(super) fn sd(a: SdBenchArgs) -> anyhow::Result<ExitCode> {
    if a.threads == 0 || a.repeats == 0 {
        bail!("--threads and --repeats must be at least 1");
    }
    if let Some(case) = a.case {
        return child(case, &a);
    }
    let reference = match &a.reference_json {
        Some(p) => Some(read_reference(p)?),
        None => None,
    };
    if let Some(r) = &reference {
        if r.threads != a.threads {
            eprintln!(
                "warning: the PyTorch results were measured with {} threads, nsync runs with {}",
                r.threads, a.threads
            );
        }
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let exe = std::env::current_exe().context("cannot find the nsync executable")?;
    let mut nsync = Vec::new();
    for &case in a.steps_only.cases() {
        eprintln!(
            "nsync (candle), {} step, {} thread(s)…",
            case.name(),
            a.threads
        );
        let t = Instant::now();
        let r = run_child(&exe, case, &a);
        match &r {
            Ok(_) => eprintln!("  done in {:.1} s (process)", secs(t.elapsed())),
            Err(e) => eprintln!("warning: the nsync {} step failed: {e}", case.name()),
        }
        nsync.push((case, r));
    }
    if let Some(path) = &a.json_out {
        let ok: BTreeMap<&str, &CaseResult> = nsync
            .iter()
            .filter_map(|(c, r)| r.as_ref().ok().map(|r| (c.name(), r)))
            .collect();
        let v = serde_json::json!({"side": "nsync", "threads": a.threads, "cases": ok});
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let results = SdResults {
        nsync,
        reference,
        loadavg,
    };
    print!("{}", report(&a, &results));
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// In the child: measure `case` and print its [`CaseResult`] as one JSON line.
fn child(case: Case, a: &SdBenchArgs) -> anyhow::Result<ExitCode> {
    let threads = a.threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(threads.as_str()) {
        // Before any tensor work, hence before rayon's pool exists and while this process
        // has one thread.
        std::env::set_var("RAYON_NUM_THREADS", &threads);
    }
    let r = run_case(case, a.threads, a.repeats)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

/// Run `nsync bench sd --case CASE` as a child process; its stderr (progress) passes
/// through, its stdout is the JSON result.
fn run_child(exe: &Path, case: Case, a: &SdBenchArgs) -> Result<CaseResult, String> {
    let out = Command::new(exe)
        .args(["bench", "sd", "--case", case.name()])
        .args(["--threads", &a.threads.to_string()])
        .args(["--repeats", &a.repeats.to_string()])
        .env("RAYON_NUM_THREADS", a.threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!("the child process failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unreadable result `{line}`: {e}"))
}

fn read_reference(path: &Path) -> anyhow::Result<Reference> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not the JSON of bench/sd_reference.py", path.display()))
}
