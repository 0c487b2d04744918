//! The Markdown report of `nsync bench sd`: the machine, one row per step with nsync and
//! PyTorch side by side against the targets, and the details behind the numbers (model
//! build, first call, forward / backward split, what candle's gradient store holds).
//! A side that was not measured or failed leaves its cells saying so.

use super::machine::machine_rows;
use super::report::{fmt_s, fmt_x, pass};
use super::sd::{Case, CaseResult, SdBenchArgs, SdResults};
use super::sd_cases::WARMUP_UNDER_S;

const NO_REFERENCE: &str = "not measured (pass --reference-json; bench/sd.sh does)";

/// Time and peak-memory targets of a step, as ratios nsync / PyTorch.
fn targets(case: Case) -> (f64, f64) {
    match case {
        Case::Sample => (1.0, 1.2),
        Case::Train | Case::TrainCtoa => (1.5, 1.2),
    }
}

fn describe(case: Case) -> &'static str {
    match case {
        Case::Sample => "sample: one guided UNet call, 512 px (latents 2×4×64×64, context 2×77×768)",
        Case::Train => "train: one TI step, 256 px (text encoder → UNet 1×4×32×32 → MSE → backward to the learned row)",
        Case::TrainCtoa => "train_ctoa: one NSYNC (ctoa) step, 256 px: positive, negative and anchor passes, each with its own backward, then the projected update",
    }
}

/// KiB as "7.91 GiB".
fn fmt_gib(kib: u64) -> String {
    format!("{:.2} GiB", kib as f64 / (1024.0 * 1024.0))
}

fn fmt_opt_s(t: Option<f64>) -> String {
    t.map_or("—".into(), fmt_s)
}

pub(super) fn report(a: &SdBenchArgs, r: &SdResults) -> String {
    let mut l = machine_section(a, r);
    l.extend(results_section(r));
    l.extend(nsync_cost_section(r));
    l.extend(details_section(r));
    let mut o = l.join("\n");
    o.push('\n');
    o
}

fn machine_section(a: &SdBenchArgs, r: &SdResults) -> Vec<String> {
    let mut l = vec![
        "## nsync bench sd".into(),
        String::new(),
        "| machine | |".into(),
        "|---|---|".into(),
    ];
    l.extend(machine_rows());
    if let Some(load) = &r.loadavg {
        l.push(format!("| load average at start (1, 5, 15 min) | {load} |"));
    }
    l.push(format!(
        "| threads | nsync: `RAYON_NUM_THREADS={}` (candle); PyTorch: {} |",
        a.threads,
        r.reference
            .as_ref()
            .map_or(NO_REFERENCE.into(), |p| format!(
                "`torch.set_num_threads({})`",
                p.threads
            ))
    ));
    if let Some(p) = &r.reference {
        let mut v: Vec<String> = p.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        // Which attention diffusers ran (`AttnProcessor2_0`: fused scaled_dot_product_attention).
        let attn = p
            .cases
            .values()
            .find_map(|c| c.get("attn_processor").and_then(|a| a.as_str()));
        if let Some(a) = attn {
            v.push(format!("UNet attention `{a}`"));
        }
        l.push(format!("| PyTorch side | {} |", v.join(", ")));
    }
    l.push("| models | SD 1.5-size UNet (320/640/1280/1280, 2 layers per block, 8 heads, context 768) and CLIP ViT-L/14 text encoder (768 wide, 12 layers), random weights, f32 |".into());
    l.push(format!(
        "| timing | best of {} call(s) per step; the first call is a discarded warm-up when it takes under {WARMUP_UNDER_S:.0} s (same rule on both sides); each step in a fresh process |",
        a.repeats
    ));
    l.push(String::new());
    l
}

fn results_section(r: &SdResults) -> Vec<String> {
    let mut l = vec![
        "### nsync (candle) vs diffusers (PyTorch), CPU, f32".into(),
        String::new(),
        "| case | nsync time | PyTorch time | ratio | nsync peak RSS | PyTorch peak RSS | ratio | target | result |".into(),
        "|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for (case, n) in &r.nsync {
        let (t_target, m_target) = targets(*case);
        let target = format!("time ≤ {t_target:.1}×, peak RSS ≤ {m_target:.1}×");
        let p = r
            .reference
            .as_ref()
            .map_or(Err(NO_REFERENCE.to_string()), |p| p.case(*case));
        let row = match (n, &p) {
            (Ok(n), Ok(p)) => {
                let (tx, mx) = (
                    n.best_s / p.best_s,
                    n.peak_rss_kib as f64 / p.peak_rss_kib as f64,
                );
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {target} | time {}, memory {} |",
                    describe(*case),
                    fmt_s(n.best_s),
                    fmt_s(p.best_s),
                    fmt_x(tx),
                    fmt_gib(n.peak_rss_kib),
                    fmt_gib(p.peak_rss_kib),
                    fmt_x(mx),
                    pass(tx <= t_target),
                    pass(mx <= m_target)
                )
            }
            (Ok(n), Err(e)) => format!(
                "| {} | {} | {e} | | {} | {e} | | {target} | not measured |",
                describe(*case),
                fmt_s(n.best_s),
                fmt_gib(n.peak_rss_kib)
            ),
            (Err(e), Ok(p)) => format!(
                "| {} | failed: {e} | {} | | failed | {} | | {target} | **FAIL** |",
                describe(*case),
                fmt_s(p.best_s),
                fmt_gib(p.peak_rss_kib)
            ),
            (Err(e), Err(pe)) => format!(
                "| {} | failed: {e} | {pe} | | failed | {pe} | | {target} | **FAIL** |",
                describe(*case)
            ),
        };
        l.push(row);
    }
    l.push(String::new());
    l.push("Ratios are nsync / PyTorch: above 1× nsync is slower or larger. Peak RSS is the whole process (weights included).".into());
    l.push(String::new());
    l
}

/// NSYNC's cost over Textual Inversion on this side: three passes against one.
fn nsync_cost_section(r: &SdResults) -> Vec<String> {
    let get = |c: Case| {
        r.nsync
            .iter()
            .find(|(k, _)| *k == c)
            .and_then(|(_, v)| v.as_ref().ok())
    };
    let (Some(ti), Some(ctoa)) = (get(Case::Train), get(Case::TrainCtoa)) else {
        return Vec::new();
    };
    let tx = ctoa.best_s / ti.best_s;
    let mx = ctoa.peak_rss_kib as f64 / ti.peak_rss_kib as f64;
    vec![
        "### NSYNC step vs Textual Inversion step (nsync, same machine)".into(),
        String::new(),
        "| | TI step | CTOA step | ratio | target | result |".into(),
        "|---|---|---|---|---|---|".into(),
        format!(
            "| time | {} | {} | {} | ≤ 3.0× (3 passes / 1 pass); the paper's GPU: 1 h 45 min / 1 h 05 min ≈ 1.6× | {} |",
            fmt_s(ti.best_s),
            fmt_s(ctoa.best_s),
            fmt_x(tx),
            pass(tx <= 3.0)
        ),
        format!(
            "| peak RSS | {} | {} | {} | — | — |",
            fmt_gib(ti.peak_rss_kib),
            fmt_gib(ctoa.peak_rss_kib),
            fmt_x(mx)
        ),
        String::new(),
    ]
}

fn details_section(r: &SdResults) -> Vec<String> {
    let mut cols: Vec<(String, Result<CaseResult, String>)> = Vec::new();
    for (case, n) in &r.nsync {
        cols.push((format!("nsync {}", case.name()), n.clone()));
        if let Some(p) = &r.reference {
            cols.push((format!("PyTorch {}", case.name()), p.case(*case)));
        }
    }
    let mut l = vec![
        "### Details".into(),
        String::new(),
        format!(
            "| | {} |",
            cols.iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        format!("|---|{}", "---|".repeat(cols.len())),
    ];
    type Cell = fn(&CaseResult) -> String;
    let rows: [(&str, Cell); 10] = [
        ("parameters", |c| format!("{:.1} M", c.params as f64 / 1e6)),
        ("building the models (random init)", |c| fmt_s(c.build_s)),
        ("RSS with the models built", |c| fmt_gib(c.rss_model_kib)),
        ("first call", |c| {
            format!(
                "{} ({})",
                fmt_s(c.first_s),
                if c.warmup { "warm-up" } else { "counted" }
            )
        }),
        ("counted calls", |c| {
            c.times_s
                .iter()
                .map(|t| fmt_s(*t))
                .collect::<Vec<_>>()
                .join(", ")
        }),
        ("best call: forward", |c| fmt_opt_s(c.forward_s)),
        ("best call: backward", |c| fmt_opt_s(c.backward_s)),
        ("peak RSS", |c| fmt_gib(c.peak_rss_kib)),
        ("gradients held after backward", |c| {
            match (c.grad_store_tensors, c.grad_store_bytes) {
                (Some(n), Some(b)) => format!(
                    "{n} tensors, {} (all but the learned row's are frozen weights' and inputs')",
                    fmt_gib(b / 1024)
                ),
                _ => "—".into(),
            }
        }),
        ("check: mean abs output / learned-row grad norm", |c| {
            c.check.map_or("—".into(), |v| format!("{v:.4e}"))
        }),
    ];
    for (what, f) in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|(_, c)| match c {
                Ok(c) => f(c),
                Err(e) => e.clone(),
            })
            .collect();
        l.push(format!("| {what} | {} |", cells.join(" | ")));
    }
    l.push(String::new());
    l.push("The check values differ between the sides (different random weights); they only show that each step computed something finite, and that a gradient reached the learned row.".into());
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::sd::{Reference, Steps};

    fn nsync_case(case: &str, best: f64, peak_gib: f64) -> CaseResult {
        CaseResult {
            case: case.into(),
            threads: 2,
            best_s: best,
            first_s: best,
            times_s: vec![best],
            peak_rss_kib: (peak_gib * 1024.0 * 1024.0) as u64,
            ..CaseResult::default()
        }
    }

    #[test]
    fn report_compares_with_the_reference_and_judges_the_targets() {
        // What bench/sd_reference.py prints: extra fields are ignored, a failed case is
        // an object with `error`.
        let reference: Reference = serde_json::from_str(
            r#"{"side": "pytorch", "threads": 2, "versions": {"torch": "2.x"},
                "cases": {
                  "sample": {"case": "sample", "threads": 2, "attn_processor": "AttnProcessor2_0",
                             "params": 859520964, "build_s": 4.0, "first_s": 20.0, "warmup": true,
                             "times_s": [20.0], "best_s": 20.0, "forward_s": null, "backward_s": null,
                             "rss_model_kib": 4000000, "peak_rss_kib": 4194304, "check": 0.3},
                  "train": {"error": "exit status 1"}}}"#,
        )
        .unwrap();
        let args = SdBenchArgs {
            steps_only: Steps::Both,
            threads: 2,
            repeats: 1,
            reference_json: None,
            json_out: None,
            case: None,
        };
        let results = SdResults {
            nsync: vec![
                (Case::Sample, Ok(nsync_case("sample", 19.0, 5.0))),
                (Case::Train, Ok(nsync_case("train", 30.0, 9.0))),
            ],
            reference: Some(reference),
            loadavg: Some("0.10 0.20 0.30".into()),
        };
        let md = report(&args, &results);
        let sample = md.lines().find(|l| l.starts_with("| sample")).unwrap();
        assert!(sample.contains("| 19.0 s | 20.0 s | 0.95× |"), "{sample}");
        assert!(
            sample.contains("| 5.00 GiB | 4.00 GiB | 1.25× |"),
            "{sample}"
        );
        assert!(
            sample.ends_with("time **PASS**, memory **FAIL** |"),
            "{sample}"
        );
        let train = md.lines().find(|l| l.starts_with("| train")).unwrap();
        assert!(train.contains("failed: exit status 1"), "{train}");
        assert!(train.ends_with("| not measured |"), "{train}");
        assert!(md.contains("| load average at start (1, 5, 15 min) | 0.10 0.20 0.30 |"));
        assert!(md.contains("`torch.set_num_threads(2)`"));
        assert!(
            md.contains("torch 2.x, UNet attention `AttnProcessor2_0` |"),
            "{md}"
        );
    }

    #[test]
    fn report_without_reference_says_how_to_get_one() {
        let args = SdBenchArgs {
            steps_only: Steps::Sample,
            threads: 2,
            repeats: 1,
            reference_json: None,
            json_out: None,
            case: None,
        };
        let results = SdResults {
            nsync: vec![(Case::Sample, Err("the child process failed".into()))],
            reference: None,
            loadavg: None,
        };
        let md = report(&args, &results);
        let sample = md.lines().find(|l| l.starts_with("| sample")).unwrap();
        assert!(
            sample.contains("failed: the child process failed"),
            "{sample}"
        );
        assert!(sample.contains("--reference-json"), "{sample}");
    }
}
