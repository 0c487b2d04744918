//! What the benchmark ran on: the machine and the versions of the tools compared.
//!
//! Timings mean little without the machine they were taken on, so the report opens with
//! the OS, kernel, CPU, memory and tool versions. Each is read on a best-effort basis: a
//! missing `/proc` file or command leaves its row out (or says "n/a"), never fails the run.

use std::path::Path;
use std::process::{Command, Stdio};

/// The stdout of `program args`, trimmed, when it runs and succeeds.
fn cmd_line(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The value of the first `key: value` line of a `/proc` file such as `/proc/cpuinfo`.
fn proc_field(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The report's rows about this machine and this nsync build, as Markdown table rows.
pub(super) fn machine_rows() -> Vec<String> {
    let mut rows = Vec::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    rows.push(format!(
        "| os / arch | {} / {} |",
        std::env::consts::OS,
        std::env::consts::ARCH
    ));
    if let Some(k) = cmd_line("uname", &["-sr"]) {
        rows.push(format!("| kernel | {k} |"));
    }
    if let Some(m) = proc_field("/proc/cpuinfo", "model name") {
        rows.push(format!("| CPU model | {m} |"));
    }
    rows.push(format!("| CPU count (available_parallelism) | {cpus} |"));
    rows.push(format!(
        "| `nproc` | {} |",
        cmd_line("nproc", &[]).unwrap_or_else(|| "n/a".into())
    ));
    if let Some(m) = proc_field("/proc/meminfo", "MemTotal") {
        rows.push(format!("| memory | {m} |"));
    }
    rows.push(format!(
        "| nsync | {} (release: {}) |",
        env!("CARGO_PKG_VERSION"),
        !cfg!(debug_assertions)
    ));
    rows
}

/// The first line of `exe --version` run in `dir`, or "unknown version".
pub(super) fn tool_version(exe: &Path, dir: &Path) -> String {
    Command::new(exe)
        .arg("--version")
        .current_dir(dir)
        .env("DVC_NO_ANALYTICS", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown version".into())
}
