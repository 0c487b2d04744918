//! `nsync bench`: benchmarks that print comparison tables.
//!
//! `nsync bench engine` generates a data set of small items, times the real binary on a
//! 3-node per-item pipeline (cold run, no-op reruns, rerun after adding items), measures
//! blake3 file hashing, and, when given the tools, does the same with `dvc repro` and
//! `b3sum` side by side. It prints one Markdown report on stdout and progress on stderr.
//!
//! `nsync bench sd` runs the Stable Diffusion 1.5-size UNet (random weights) for one guided
//! sampling step and one Textual Inversion step, each in a child process, and compares
//! them with diffusers / PyTorch ([`sd`], [`sd_cases`], [`sd_report`]; `bench/sd.sh`).
//!
//! This file holds the options and the order of the steps; each step lives in the module
//! named after it, and [`report`] turns the measurements into the Markdown.

mod dataset;
mod dvc_side;
mod hashing;
mod machine;
mod nsync_side;
mod report;
pub mod sd;
mod sd_cases;
mod sd_report;
mod timing;
mod work_dir;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use crate::cli::BenchCommand;

use self::dataset::{write_items, PIPELINE};
use self::machine::tool_version;
use self::report::{report, Results};
use self::timing::secs;
use self::work_dir::WorkDir;

#[derive(Args)]
pub struct EngineBenchArgs {
    /// Items in the generated data set.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Items added before the incremental rerun.
    #[arg(long, default_value_t = 10)]
    pub added: usize,
    /// Work folder [default: a fresh temporary folder, removed at the end unless --keep].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Leave the work folder (data set, caches, DVC project) in place.
    #[arg(long)]
    pub keep: bool,
    /// The `dvc` executable, to time `dvc repro` on the same work side by side.
    #[arg(long, value_name = "PATH")]
    pub dvc: Option<PathBuf>,
    /// The `b3sum` executable, to compare hashing throughput.
    #[arg(long, value_name = "PATH")]
    pub b3sum: Option<PathBuf>,
    /// `--jobs` given to `nsync run`.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Size of the large file hashed, in MiB.
    #[arg(long, default_value_t = 512, value_name = "MIB")]
    pub big_mib: u64,
    /// How many no-op reruns to time (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Engine(a) => engine(a),
        BenchCommand::Sd(a) => sd::sd(a),
    }
}

fn engine(mut a: EngineBenchArgs) -> anyhow::Result<ExitCode> {
    if a.items == 0 || a.added == 0 {
        bail!("--items and --added must be at least 1");
    }
    // A tool given as a path (not a bare name looked up in PATH) must exist, and is made
    // absolute: the tools run with the work folder or the DVC project as current folder.
    for (flag, p) in [("--dvc", &mut a.dvc), ("--b3sum", &mut a.b3sum)] {
        if let Some(p) = p.as_mut().filter(|p| p.components().count() > 1) {
            if !p.exists() {
                bail!("{flag} {}: no such file", p.display());
            }
            *p = std::path::absolute(&*p)?;
        }
    }
    let work = WorkDir::new(a.work_dir.clone(), a.keep)?;
    let w = work.path.clone();
    eprintln!("work folder: {}", w.display());

    eprintln!("generating {} items…", a.items);
    let t = Instant::now();
    write_items(&[w.join("data/img")], 0..a.items, true)?;
    std::fs::write(w.join("pipeline.toml"), PIPELINE)?;
    let generated_in = secs(t.elapsed());
    eprintln!("  {generated_in:.2} s");

    // The data set was just written, so it is in the page cache for both hashers.
    let small = hashing::bench_hash_small(&a, &w)?;

    let nsync = nsync_side::bench_nsync(&a, &w)?;

    let dvc = a.dvc.as_ref().map(|d| {
        let r = dvc_side::bench_dvc(&a, d, &w).map_err(|e| format!("{e:#}"));
        if let Err(e) = &r {
            eprintln!("warning: the DVC comparison failed: {e}");
        }
        r
    });
    let dvc_version = a
        .dvc
        .as_ref()
        .map(|d| format!("{} (`{}`)", tool_version(d, &w.join("dvc")), d.display()));
    let b3sum_version = a
        .b3sum
        .as_ref()
        .map(|b| format!("{} (`{}`)", tool_version(b, &w), b.display()));

    let big = hashing::bench_hash_big(&a, &w)?;

    let results = Results {
        generated_in,
        nsync,
        dvc,
        dvc_version,
        b3sum_version,
        small,
        big,
    };
    print!("{}", report(&a, &results));
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}
