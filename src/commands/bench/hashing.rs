//! blake3 file hashing, nsync's against `b3sum`'s, on many small files and one large one.
//!
//! nsync's cache keys start from file digests, so hashing speed bounds how fast a rerun
//! can tell that nothing changed. `b3sum` is the reference blake3 tool; the benchmark
//! holds nsync's two code paths (`FileDigester` for many small files, `hash_file` with
//! mmap and rayon for large ones) against it, best of 3 each, on warm page-cache data.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use nsync_cache::FileDigester;
use rayon::prelude::*;

use super::dataset::{item_id, pseudo_random};
use super::timing::{best_of, secs, timed};
use super::EngineBenchArgs;

/// Size of the pieces the large file is generated in, each seeded with its index.
const BIG_CHUNK: u64 = 8 << 20;

/// Hashing times of one input (many small files, or one large file).
pub(super) struct HashTimes {
    pub(super) files: usize,
    pub(super) bytes: u64,
    /// Best of 3, seconds.
    pub(super) nsync: f64,
    pub(super) b3sum: Option<Result<f64, String>>,
}

fn hash_small_nsync(files: &[PathBuf]) -> anyhow::Result<f64> {
    let digester = FileDigester::unmemoised();
    let t = Instant::now();
    files
        .par_iter()
        .try_for_each(|p| digester.digest(p).map(|_| ()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(secs(t.elapsed()))
}

/// `b3sum` over `names` (relative to `dir`), as few processes as the argument limit allows.
fn hash_small_b3sum(b3sum: &Path, dir: &Path, names: &[OsString]) -> anyhow::Result<f64> {
    const ARG_BYTES: usize = 128 * 1024;
    let mut chunks: Vec<&[OsString]> = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, n) in names.iter().enumerate() {
        if size + n.len() + 1 > ARG_BYTES && i > start {
            chunks.push(&names[start..i]);
            start = i;
            size = 0;
        }
        size += n.len() + 1;
    }
    chunks.push(&names[start..]);
    let t = Instant::now();
    for c in chunks {
        let st = Command::new(b3sum)
            .args(c)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot start {}", b3sum.display()))?;
        if !st.success() {
            bail!("b3sum failed ({st})");
        }
    }
    Ok(secs(t.elapsed()))
}

/// Time `b3sum` with `f` (best of 3) when `--b3sum` was given; a failure is a warning.
fn b3sum_side<F: FnMut() -> anyhow::Result<f64>>(f: F) -> Result<f64, String> {
    let r = best_of(3, f).map_err(|e| format!("{e:#}"));
    match &r {
        Ok(t) => eprintln!("  {t:.4} s"),
        Err(e) => eprintln!("warning: {e}"),
    }
    r
}

/// Hash the data set's images (already in `<work>/data/img`) with nsync and `b3sum`.
pub(super) fn bench_hash_small(a: &EngineBenchArgs, work: &Path) -> anyhow::Result<HashTimes> {
    let dir = work.join("data/img");
    let names: Vec<OsString> = (0..a.items)
        .map(|i| OsString::from(format!("{}.png", item_id(i))))
        .collect();
    let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let bytes = files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    eprintln!(
        "hashing {} small files with nsync (best of 3)…",
        files.len()
    );
    let nsync = best_of(3, || hash_small_nsync(&files))?;
    eprintln!("  {nsync:.4} s");
    let b3 = a.b3sum.as_ref().map(|b| {
        eprintln!(
            "hashing {} small files with b3sum (best of 3)…",
            files.len()
        );
        b3sum_side(|| hash_small_b3sum(b, &dir, &names))
    });
    Ok(HashTimes {
        files: files.len(),
        bytes,
        nsync,
        b3sum: b3,
    })
}

/// Write `mib` MiB of pseudo-random bytes to `path`; its size in bytes.
fn write_big_file(path: &Path, mib: u64) -> anyhow::Result<u64> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let size = mib << 20;
    let mut buf = vec![0u8; BIG_CHUNK.min(size) as usize];
    for (index, start) in (0..size).step_by(BIG_CHUNK as usize).enumerate() {
        let piece = &mut buf[..(size - start).min(BIG_CHUNK) as usize];
        pseudo_random("nsync bench big file", index as u64, piece);
        f.write_all(piece)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(size)
}

/// Hash one large generated file (`--big-mib`) with nsync and `b3sum`, then remove it.
pub(super) fn bench_hash_big(a: &EngineBenchArgs, work: &Path) -> anyhow::Result<HashTimes> {
    let path = work.join("big.bin");
    eprintln!("writing a {} MiB file of pseudo-random bytes…", a.big_mib);
    let size = write_big_file(&path, a.big_mib)?;
    eprintln!("hashing it with nsync (best of 3)…");
    let nsync = best_of(3, || {
        let t = Instant::now();
        nsync_cache::file_digest::hash_file(&path, size).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(secs(t.elapsed()))
    })?;
    eprintln!("  {nsync:.4} s");
    let b3 = a.b3sum.as_ref().map(|b| {
        eprintln!("hashing it with b3sum (best of 3)…");
        b3sum_side(|| {
            let mut c = Command::new(b);
            c.arg(&path);
            Ok(timed(c, "b3sum")?.0)
        })
    });
    let _ = std::fs::remove_file(&path);
    Ok(HashTimes {
        files: 1,
        bytes: size,
        nsync,
        b3sum: b3,
    })
}
