//! The DVC side of the pipeline comparison: the same work as a `dvc repro` project.
//!
//! DVC has no per-item stages, so the project has three whole-folder stages (Python
//! scripts in `dvc_stages/`) doing what the three nsync nodes do. It runs on its own copy
//! of the data set, in `<work>/dvc`, so neither tool sees the other's outputs or caches.
//! The measurements mirror [`super::nsync_side`]: cold, no-op reruns, after adding items.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::bail;

use super::dataset::write_items;
use super::timing::{timed, PipelineTimes};
use super::EngineBenchArgs;

/// The three stages' scripts, written into `<work>/dvc/scripts`.
const STAGES: [(&str, &str); 3] = [
    ("images.py", include_str!("dvc_stages/images.py")),
    ("captions.py", include_str!("dvc_stages/captions.py")),
    ("prompts.py", include_str!("dvc_stages/prompts.py")),
];

/// The Python interpreter for the DVC stages, resolved once (a pyenv shim would add its
/// own start-up time to every stage).
fn python_exe(dvc: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(o) = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && p.is_file() {
            return Ok(p);
        }
    }
    let sibling = dvc.with_file_name("python3");
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!("no python3 found for the DVC stages")
}

/// `dvc.yaml`: the three stages, chained by their output folders.
fn dvc_yaml(python: &Path) -> String {
    let py = python.display().to_string().replace('\'', r"'\''");
    format!(
        r#"stages:
  images:
    cmd: "'{py}' scripts/images.py data/img out/images"
    deps:
      - scripts/images.py
      - data/img
    outs:
      - out/images
  captions:
    cmd: "'{py}' scripts/captions.py out/images data/img out/captions"
    deps:
      - scripts/captions.py
      - out/images
      - data/img
    outs:
      - out/captions
  prompts:
    cmd: "'{py}' scripts/prompts.py out/captions out/prompts"
    deps:
      - scripts/prompts.py
      - out/captions
    outs:
      - out/prompts
"#
    )
}

/// A `dvc` command in `dir`, with analytics and update checks off.
fn dvc_cmd(dvc: &Path, dir: &Path) -> Command {
    let mut c = Command::new(dvc);
    c.current_dir(dir)
        .env("DVC_NO_ANALYTICS", "1")
        .env("DVC_NO_UPDATER", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    c
}

/// Set up the DVC project in `<work>/dvc` (a git repository when git is there).
fn set_up(a: &EngineBenchArgs, dvc: &Path, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("data/img"))?;
    write_items(&[dir.join("data/img")], 0..a.items, true)?;
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    for (name, text) in STAGES {
        std::fs::write(scripts.join(name), text)?;
    }
    std::fs::write(dir.join("dvc.yaml"), dvc_yaml(&python_exe(dvc)?))?;
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut init = dvc_cmd(dvc, dir);
    init.args(["init", "-q"]);
    if !git {
        init.arg("--no-scm");
    }
    timed(init, "dvc init")?;
    for (k, v) in [("core.analytics", "false"), ("core.check_update", "false")] {
        let mut c = dvc_cmd(dvc, dir);
        c.args(["config", k, v]);
        if let Err(e) = timed(c, "dvc config") {
            eprintln!("warning: {e:#}");
        }
    }
    Ok(())
}

/// Time `dvc repro` cold, as no-op reruns, after adding items and as one more no-op rerun.
pub(super) fn bench_dvc(
    a: &EngineBenchArgs,
    dvc: &Path,
    work: &Path,
) -> anyhow::Result<PipelineTimes> {
    let dir = work.join("dvc");
    eprintln!("setting up the DVC project in {}…", dir.display());
    set_up(a, dvc, &dir)?;
    let repro = |what: &str| -> anyhow::Result<f64> {
        let mut c = dvc_cmd(dvc, &dir);
        c.args(["repro", "--quiet"]);
        Ok(timed(c, what)?.0)
    };
    let mut r = PipelineTimes::default();
    eprintln!("dvc repro cold…");
    r.cold = repro("dvc repro (cold)")?;
    eprintln!("  {:.3} s", r.cold);
    for k in 1..=a.repeats.max(1) {
        eprintln!("dvc repro no-op {k}/{}…", a.repeats.max(1));
        let t = repro("dvc repro (no-op)")?;
        eprintln!("  {t:.3} s");
        r.noop.push(t);
    }
    eprintln!("adding {} items to the DVC copy…", a.added);
    write_items(&[dir.join("data/img")], a.items..a.items + a.added, false)?;
    eprintln!("dvc repro after adding {} items…", a.added);
    r.added = repro("dvc repro (after adding items)")?;
    eprintln!("  {:.3} s", r.added);
    let prompts = std::fs::read_dir(dir.join("out/prompts"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    if prompts != a.items + a.added {
        bail!(
            "dvc repro produced {prompts} prompts, expected {}",
            a.items + a.added
        );
    }
    eprintln!("dvc repro second no-op…");
    r.noop2 = repro("dvc repro (second no-op)")?;
    eprintln!("  {:.3} s", r.noop2);
    Ok(r)
}
