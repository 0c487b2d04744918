//! `kill -9` in the middle of a run, and two runs on one cache at once.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::util::*;

const N: usize = 320;

fn big_project() -> Project {
    let p = Project::empty();
    make_images(&p.path("data"), N, 192, 0);
    p.write("p.toml", &three_node_pipeline("big", "data"));
    p
}

#[test]
fn kill_9_mid_run_then_rerun_finishes_with_nothing_corrupt() {
    let p = big_project();
    let mut child = p
        .cmd()
        .args(["run", "p.toml", "--jobs", "1"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Kill as soon as the first batch of images is committed.
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.trim_start().starts_with("paintings: ") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let s = p.run_ok("p.toml");
    let (status, computed, cached) = node(&s, "paintings");
    assert_eq!(status, "executed");
    assert!(
        cached > 0 && cached < N as u64,
        "work committed before the kill is reused: {s}"
    );
    assert_eq!(computed + cached, N as u64);
    assert!(
        p.nsync(&["cache", "verify"]).status.success(),
        "nothing corrupt in the cache"
    );
    // Same bytes as an uninterrupted run in a fresh cache.
    let clean = Project::empty();
    make_images(&clean.path("data"), N, 192, 0);
    clean.write("p.toml", &three_node_pipeline("big", "data"));
    clean.run_ok("p.toml");
    for (proj, dir) in [(&p, "a"), (&clean, "b")] {
        let out = proj.nsync(&["export", "p.toml", "negatives", "--to", dir]);
        assert!(out.status.success());
        let out = proj.nsync(&[
            "export",
            "p.toml",
            "paintings",
            "--to",
            &format!("{dir}img"),
        ]);
        assert!(out.status.success());
    }
    assert_eq!(read_tree(&p.path("a")), read_tree(&clean.path("b")));
    assert_eq!(read_tree(&p.path("aimg")), read_tree(&clean.path("bimg")));
}

#[test]
fn two_concurrent_runs_share_the_work_and_agree() {
    let p = big_project();
    let a = p
        .cmd()
        .args(["run", "p.toml", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = p
        .cmd()
        .args(["run", "p.toml", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(b.status.success(), "{}", text(&b.stderr));
    let (sa, sb) = (summary(&a), summary(&b));
    for n in ["paintings", "captions", "negatives"] {
        let (_, ca, _) = node(&sa, n);
        let (_, cb, _) = node(&sb, n);
        assert_eq!(
            ca + cb,
            N as u64,
            "each item of {n} computed exactly once: {sa} {sb}"
        );
    }
    assert!(p.nsync(&["cache", "verify"]).status.success());
    let again = p.run_ok("p.toml");
    assert_eq!(node(&again, "negatives").0, "cached");
}
