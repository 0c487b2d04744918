//! The Markdown report printed on stdout, and how its numbers are formatted.
//!
//! The report is meant to be pasted as is (bench/engine.sh saves it as
//! target/bench-engine.md): the machine, the pipeline timings side by side with DVC, the
//! hashing throughput side by side with `b3sum`, and the targets with PASS or FAIL. A tool
//! that was not given or failed leaves its cells saying so instead of failing the report.

use super::hashing::HashTimes;
use super::machine::machine_rows;
use super::timing::PipelineTimes;
use super::EngineBenchArgs;

const NO_DVC: &str = "not measured (pass --dvc PATH)";
const NO_B3SUM: &str = "not measured (pass --b3sum PATH)";

/// Everything the benchmark measured, for [`report`].
pub(super) struct Results {
    /// Seconds taken to generate the data set.
    pub(super) generated_in: f64,
    pub(super) nsync: PipelineTimes,
    /// `None` without `--dvc`; the error text when the DVC comparison failed.
    pub(super) dvc: Option<Result<PipelineTimes, String>>,
    pub(super) dvc_version: Option<String>,
    pub(super) b3sum_version: Option<String>,
    pub(super) small: HashTimes,
    pub(super) big: HashTimes,
}

impl Results {
    fn dvc_ok(&self) -> Option<&PipelineTimes> {
        self.dvc.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// What the DVC cells say when there are no DVC timings.
    fn dvc_missing(&self) -> String {
        match &self.dvc {
            None => NO_DVC.to_string(),
            Some(Err(_)) => "failed (see stderr)".into(),
            Some(Ok(_)) => String::new(),
        }
    }
}

/// Seconds, as "317 ms", "5.71 s" or "23.6 s".
pub(super) fn fmt_s(t: f64) -> String {
    if !t.is_finite() {
        "n/a".into()
    } else if t < 1.0 {
        format!("{:.0} ms", t * 1000.0)
    } else if t < 10.0 {
        format!("{t:.2} s")
    } else {
        format!("{t:.1} s")
    }
}

/// A ratio, as "0.47×" or "32×".
pub(super) fn fmt_x(r: f64) -> String {
    if !r.is_finite() {
        "n/a".into()
    } else if r < 10.0 {
        format!("{r:.2}×")
    } else {
        format!("{r:.0}×")
    }
}

fn fmt_list(times: &[f64]) -> String {
    times
        .iter()
        .map(|t| fmt_s(*t))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn pass(ok: bool) -> &'static str {
    if ok {
        "**PASS**"
    } else {
        "**FAIL**"
    }
}

/// A hashing time `t` of `h`, with files per second (for many files) and MB/s.
fn throughput(h: &HashTimes, t: f64) -> String {
    if h.files > 1 {
        format!(
            "{} ({:.0} files/s, {:.1} MB/s)",
            fmt_s(t),
            h.files as f64 / t,
            h.bytes as f64 / 1e6 / t
        )
    } else {
        format!("{} ({:.0} MB/s)", fmt_s(t), h.bytes as f64 / 1e6 / t)
    }
}

/// nsync's hashing time over b3sum's, when b3sum was measured.
fn b3sum_ratio(h: &HashTimes) -> Option<f64> {
    match &h.b3sum {
        Some(Ok(b)) => Some(h.nsync / b),
        _ => None,
    }
}

/// The whole report, one Markdown document ending in a newline.
pub(super) fn report(a: &EngineBenchArgs, r: &Results) -> String {
    let mut lines = machine_section(a, r);
    lines.extend(pipeline_section(a, r));
    lines.extend(hashing_section(r));
    lines.extend(targets_section(a, r));
    let mut o = lines.join("\n");
    o.push('\n');
    o
}

fn machine_section(a: &EngineBenchArgs, r: &Results) -> Vec<String> {
    let mut l = vec![
        "## nsync bench engine".into(),
        String::new(),
        "| machine | |".into(),
        "|---|---|".into(),
    ];
    l.extend(machine_rows());
    let version = |v: &Option<String>, missing: &str| v.clone().unwrap_or_else(|| missing.into());
    l.push(format!("| dvc | {} |", version(&r.dvc_version, NO_DVC)));
    l.push(format!(
        "| b3sum | {} |",
        version(&r.b3sum_version, NO_B3SUM)
    ));
    l.push(format!(
        "| data set | {} items (8×8 RGB PNG + one-line caption each; generated in {}), then {} added |",
        a.items,
        fmt_s(r.generated_in),
        a.added
    ));
    l.push(format!(
        "| nsync run | `nsync run pipeline.toml --cache-dir <work>/cache --jobs {} --json` |",
        a.jobs
    ));
    l.push(String::new());
    l
}

fn pipeline_section(a: &EngineBenchArgs, r: &Results) -> Vec<String> {
    let mut l = vec![
        "### Pipeline: images → captions → prompt_template, per item".into(),
        String::new(),
        "| measurement | nsync | dvc repro | dvc / nsync |".into(),
        "|---|---|---|---|".into(),
    ];
    let (nsync, dvc_ok, dvc_missing) = (&r.nsync, r.dvc_ok(), r.dvc_missing());
    let rows: [(String, f64, Option<f64>); 4] = [
        ("cold run".into(), nsync.cold, dvc_ok.map(|d| d.cold)),
        (
            format!("no-op rerun (median of {})", a.repeats.max(1)),
            nsync.noop_median(),
            dvc_ok.map(|d| d.noop_median()),
        ),
        (
            format!("rerun after adding {} items", a.added),
            nsync.added,
            dvc_ok.map(|d| d.added),
        ),
        (
            "no-op rerun after that".into(),
            nsync.noop2,
            dvc_ok.map(|d| d.noop2),
        ),
    ];
    for (what, n, d) in &rows {
        l.push(match d {
            Some(d) => format!(
                "| {what} | {} | {} | {} |",
                fmt_s(*n),
                fmt_s(*d),
                fmt_x(d / n)
            ),
            None => format!("| {what} | {} | {dvc_missing} | |", fmt_s(*n)),
        });
    }
    l.push(format!(
        "| no-op reruns, each | {} | {} | |",
        fmt_list(&nsync.noop),
        dvc_ok.map_or(dvc_missing.clone(), |d| fmt_list(&d.noop))
    ));
    if let Some([cold, noop, add, noop2]) = nsync.computed {
        l.push(format!(
            "| items computed: cold / no-op / after adding / no-op | {cold} / {noop} / {add} / {noop2} (expected {} / 0 / {} / 0) | every stage reruns on all items | |",
            3 * a.items,
            3 * a.added
        ));
    }
    l.push(String::new());
    l
}

fn hashing_section(r: &Results) -> Vec<String> {
    let row = |h: &HashTimes, what: String| match &h.b3sum {
        Some(Ok(b)) => format!(
            "| {what} | {} | {} | {} |",
            throughput(h, h.nsync),
            throughput(h, *b),
            fmt_x(h.nsync / b)
        ),
        Some(Err(_)) => format!(
            "| {what} | {} | failed (see stderr) | |",
            throughput(h, h.nsync)
        ),
        None => format!("| {what} | {} | {NO_B3SUM} | |", throughput(h, h.nsync)),
    };
    vec![
        "### Hashing (blake3), best of 3".into(),
        String::new(),
        "| input | nsync | b3sum | nsync time / b3sum time |".into(),
        "|---|---|---|---|".into(),
        row(
            &r.small,
            format!(
                "{} small files ({:.1} MB); nsync: `FileDigester` on rayon, b3sum: one process, files as args",
                r.small.files,
                r.small.bytes as f64 / 1e6
            ),
        ),
        row(
            &r.big,
            format!(
                "one {} MiB file; nsync: `hash_file` (mmap, rayon), b3sum: `b3sum FILE`",
                r.big.bytes >> 20
            ),
        ),
        String::new(),
    ]
}

fn targets_section(a: &EngineBenchArgs, r: &Results) -> Vec<String> {
    let mut l = vec![
        "### Targets".into(),
        String::new(),
        "| target | measured | result |".into(),
        "|---|---|---|".into(),
    ];
    let nsync = &r.nsync;
    let worst_noop = nsync.noop_median().max(nsync.noop2);
    l.push(format!(
        "| nsync no-op rerun under 1 s | {} (median of {}), {} after adding | {} |",
        fmt_s(nsync.noop_median()),
        a.repeats.max(1),
        fmt_s(nsync.noop2),
        pass(worst_noop < 1.0)
    ));
    l.push(match r.dvc_ok() {
        Some(d) => {
            let x = d.noop_median() / nsync.noop_median();
            format!(
                "| no-op rerun ≥10× faster than `dvc repro` | {} ({} vs {}) | {} |",
                fmt_x(x),
                fmt_s(nsync.noop_median()),
                fmt_s(d.noop_median()),
                pass(x >= 10.0)
            )
        }
        None => format!(
            "| no-op rerun ≥10× faster than `dvc repro` | {} | not measured |",
            r.dvc_missing()
        ),
    });
    if let Some([_, _, add, _]) = nsync.computed {
        l.push(format!(
            "| adding {} items computes only those (3 nodes × {}) | {add} items computed | {} |",
            a.added,
            a.added,
            pass(add == 3 * a.added as u64)
        ));
    }
    for (what, h) in [("small files", &r.small), ("one large file", &r.big)] {
        l.push(match (b3sum_ratio(h), &h.b3sum) {
            (Some(x), _) => format!(
                "| hashing {what} within 2× of b3sum | nsync takes {} b3sum's time | {} |",
                fmt_x(x),
                pass(x <= 2.0)
            ),
            (None, None) => {
                format!("| hashing {what} within 2× of b3sum | {NO_B3SUM} | not measured |")
            }
            (None, Some(_)) => format!(
                "| hashing {what} within 2× of b3sum | b3sum failed (see stderr) | not measured |"
            ),
        });
    }
    l
}
