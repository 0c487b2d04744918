//! Diffusers model folders as pipeline artifacts.
//!
//! A model made inside a pipeline (the demo's tiny model) travels between nodes as one blob:
//! a deterministic tar of its folder (sorted paths, zero times and owners), so the same
//! model always has the same digest and downstream keys stay stable. A node that needs it
//! unpacks it into a temporary folder and loads it like any model folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use nsync_engine::artifact::ArtifactType;

use super::ModelError;

pub const SD_MODEL: ArtifactType = ArtifactType {
    name: "sd_model",
    per_item: false,
    ext: "tar",
    doc: "a Stable Diffusion model in diffusers layout, as a tar of its folder",
};

fn files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, base, out)?;
        } else {
            out.push(p.strip_prefix(base).expect("below base").to_path_buf());
        }
    }
    Ok(())
}

/// Pack the folder `dir` into deterministic tar bytes.
pub fn pack(dir: &Path) -> Result<Vec<u8>, ModelError> {
    let mut rel = Vec::new();
    files(dir, dir, &mut rel).map_err(|e| ModelError::bad(dir, e))?;
    rel.sort();
    let mut b = tar::Builder::new(Vec::new());
    for r in &rel {
        let mut data = Vec::new();
        std::fs::File::open(dir.join(r))
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| ModelError::bad(dir.join(r), e))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, r, data.as_slice())
            .map_err(|e| ModelError::bad(dir.join(r), e))?;
    }
    b.into_inner().map_err(|e| ModelError::bad(dir, e))
}

/// Unpack model bytes into a fresh temporary folder (removed when the guard drops).
pub fn unpack(bytes: &[u8]) -> Result<tempfile::TempDir, ModelError> {
    let dir = tempfile::Builder::new()
        .prefix("nsync-model-")
        .tempdir()
        .map_err(|e| ModelError::bad(std::env::temp_dir(), e))?;
    tar::Archive::new(bytes)
        .unpack(dir.path())
        .map_err(|e| ModelError::bad(dir.path(), format!("cannot unpack the model: {e}")))?;
    Ok(dir)
}
