//! The identity of a model: one digest over its weight files.
//!
//! A model reference is a local file or folder (a diffusers or Hugging Face layout). Its
//! digest is a framed hash over every file's relative path and content digest, in sorted
//! order; hidden files are ignored. File digests come from the store's memoised
//! [`FileDigester`], so multi-gigabyte weights are read once and then recognised by
//! `(device, inode, size, mtime)`.

use std::path::{Path, PathBuf};

use nsync_cache::{Digest, FileDigester, FramedHasher};

pub fn model_digest(files: &FileDigester, path: &Path) -> Result<Digest, String> {
    if path.is_file() {
        let (d, _) = files.digest(path).map_err(|e| e.to_string())?;
        return Ok(FramedHasher::new("nsync.model.v1").digest(1, &d).finish());
    }
    if !path.is_dir() {
        return Err(format!("{} does not exist", path.display()));
    }
    let mut all = Vec::new();
    collect(path, &mut all).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
    if all.is_empty() {
        return Err(format!("{} contains no files", path.display()));
    }
    all.sort();
    let mut h = FramedHasher::new("nsync.model.v1");
    for f in &all {
        let (d, _) = files.digest(f).map_err(|e| e.to_string())?;
        let rel = f
            .strip_prefix(path)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        h.str(2, &rel).digest(3, &d);
    }
    Ok(h.finish())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            collect(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_digest_depends_on_names_and_contents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("m/unet")).unwrap();
        std::fs::write(d.path().join("m/unet/w.safetensors"), b"abc").unwrap();
        std::fs::write(d.path().join("m/config.json"), b"{}").unwrap();
        let f = FileDigester::unmemoised();
        let a = model_digest(&f, &d.path().join("m")).unwrap();
        std::fs::write(d.path().join("m/.DS_Store"), b"junk").unwrap();
        assert_eq!(
            model_digest(&f, &d.path().join("m")).unwrap(),
            a,
            "hidden files ignored"
        );
        std::fs::write(d.path().join("m/unet/w.safetensors"), b"abd").unwrap();
        assert_ne!(model_digest(&f, &d.path().join("m")).unwrap(), a);
        assert!(model_digest(&f, &d.path().join("nope")).is_err());
    }
}
