//! Shared helpers: a throw-away project (a copy of `pipelines/` and its data) with its own
//! cache, and runners for the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nsync"))
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

impl Project {
    /// A copy of the repository's `pipelines/` folder in a temporary directory.
    pub fn demo() -> Project {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo().join("pipelines"), &dir.path().join("pipelines"));
        Project { dir }
    }

    /// An empty project.
    pub fn empty() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .arg("--cache-dir")
            .arg(self.cache())
            .env_remove("NSYNC_CACHE_DIR");
        c
    }

    pub fn nsync(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `nsync run PIPELINE --json ARGS`, asserting the exit code; returns the summary line.
    pub fn run_json(&self, pipeline: &str, extra: &[&str], expect_code: i32) -> Value {
        let mut args = vec!["run", pipeline, "--json"];
        args.extend_from_slice(extra);
        let out = self.nsync(&args);
        assert_eq!(
            out.status.code(),
            Some(expect_code),
            "nsync {args:?}\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        summary(&out)
    }

    pub fn run_ok(&self, pipeline: &str) -> Value {
        let s = self.run_json(pipeline, &[], 0);
        assert_eq!(s["status"], "ok", "{s}");
        s
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last JSON line of stdout: the run summary.
pub fn summary(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr:\n{}", text(&out.stderr)));
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    assert_eq!(v["event"], "summary", "{v}");
    v
}

/// `(status, computed, cached)` of a node in a summary.
pub fn node(s: &Value, name: &str) -> (String, u64, u64) {
    let n = &s["nodes"][name];
    (
        n["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no node {name} in {s}"))
            .to_string(),
        n["items_computed"].as_u64().unwrap(),
        n["items_cached"].as_u64().unwrap(),
    )
}

/// Write `n` distinct RGB images (size×size PNG) with captions into `dir`.
pub fn make_images(dir: &Path, n: usize, size: u32, start: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in start..start + n {
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            let v = (x as usize * 7 + y as usize * 13 + i * 31) as u32;
            image::Rgb([
                (v % 251) as u8,
                ((v / 3 + i as u32) % 253) as u8,
                ((x ^ y) as usize + i) as u8,
            ])
        });
        img.save(dir.join(format!("img{i:05}.png"))).unwrap();
        std::fs::write(
            dir.join(format!("img{i:05}.txt")),
            format!("a generated picture number {i}"),
        )
        .unwrap();
    }
}

/// A three-node pipeline over `dir` (relative to the project).
pub fn three_node_pipeline(name: &str, dir: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\n\n[nodes.paintings]\nkind = \"images\"\npath = \"{dir}\"\n\n[nodes.captions]\nkind = \"captions\"\ninputs = {{ images = \"paintings\" }}\ndir = \"{dir}\"\n\n[nodes.negatives]\nkind = \"prompt_template\"\ninputs = {{ caption = \"captions\" }}\ntemplate = \"{{caption}} in the style of painting\"\n"
    )
}

/// Every file under `dir`, relative path → bytes.
pub fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}
