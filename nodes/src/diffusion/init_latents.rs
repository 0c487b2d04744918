//! Initial latents given per item (`sd_sample`'s `init_latents`), so that an image can be
//! reproduced exactly across implementations: a safetensors file holding one tensor per
//! item id, each `[1, 4, H/8, W/8]`, used as that item's initial noise exactly as diffusers'
//! `latents=` argument is (and as `nsync sample --init-latents` uses its `latents` tensor).
//!
//! Every item must have its tensor (a missing one is an error naming it, never a silent
//! fallback to seeded noise: a file meant to reproduce images should not half-apply because
//! of a mistyped id); tensors for other ids are ignored. Each item's key holds the digest of
//! its own tensor (its shape and f32 values), not the file's path or its other tensors, so
//! editing one item's latents recomputes that image only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nsync_cache::{Digest, FramedHasher};
use nsync_engine::node::{NodeError, WorkItem};

/// The key field an item's latents digest is stored under.
pub const FIELD: &str = "init_latents";

/// The tensors of an initial-latents file, by item id (f32, on the CPU).
pub struct InitLatents {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl InitLatents {
    pub fn read(path: &Path) -> Result<InitLatents, NodeError> {
        let bytes = std::fs::read(path).map_err(|e| {
            NodeError::msg(format!(
                "cannot read the initial latents {}: {e} (`init_latents` is relative to the pipeline file)",
                path.display()
            ))
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| {
                NodeError::msg(format!("{}: not a safetensors file: {e}", path.display()))
            })?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?;
        Ok(InitLatents {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Add each item's latents digest to its key fields; an item without a tensor is an
    /// error naming it (and a few of the ids the file does hold).
    pub fn add_to_keys(&self, items: &mut [WorkItem]) -> Result<(), NodeError> {
        let mut missing = Vec::new();
        for w in items.iter_mut() {
            match self.tensors.get(&w.id) {
                Some(t) => {
                    w.fields.insert(FIELD.to_string(), digest(t)?);
                }
                None => missing.push(w.id.as_str()),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut held: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        held.sort_unstable();
        let n = missing.len();
        missing.truncate(5);
        held.truncate(5);
        Err(NodeError::msg(format!(
            "{}: no initial latents for {n} item(s), e.g. {}; the file holds one tensor per item id (it holds {})",
            self.path.display(),
            missing.join(", "),
            if held.is_empty() { "none".to_string() } else { held.join(", ") }
        )))
    }

    /// Item `w`'s latents, `shape` (`[1, c, h, w]`) checked, on `device`; an error if the file
    /// changed since its key was computed.
    pub fn get(&self, w: &WorkItem, shape: &[usize], device: &Device) -> Result<Tensor, NodeError> {
        let t = self.tensors.get(&w.id).ok_or_else(|| {
            NodeError::msg(format!(
                "{}: no initial latents for item `{}`",
                self.path.display(),
                w.id
            ))
        })?;
        if Some(&digest(t)?) != w.fields.get(FIELD) {
            return Err(NodeError::msg(format!(
                "{} changed while the pipeline was running; run again",
                self.path.display()
            )));
        }
        if t.dims() != shape {
            return Err(NodeError::msg(format!(
                "{}: the latents of `{}` have shape {:?}; this size needs {shape:?} ([1, channels, height/8, width/8])",
                self.path.display(),
                w.id,
                t.dims()
            )));
        }
        t.to_device(device)
            .map_err(|e| NodeError::msg(e.to_string()))
    }
}

/// The digest of one item's latents: shape and f32 values.
fn digest(t: &Tensor) -> Result<Digest, NodeError> {
    let values: Vec<f32> = t
        .flatten_all()
        .and_then(|f| f.to_vec1())
        .map_err(|e| NodeError::msg(e.to_string()))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape: Vec<String> = t.dims().iter().map(usize::to_string).collect();
    Ok(FramedHasher::new("nsync.sd-sample.init-latents.v1")
        .str(1, &shape.join("x"))
        .field(2, &bytes)
        .finish())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn item(id: &str) -> WorkItem {
        WorkItem {
            id: id.into(),
            fields: BTreeMap::new(),
            source: None,
            inline: None,
        }
    }

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) -> PathBuf {
        let path = dir.join("latents.safetensors");
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    }

    #[test]
    fn keys_hold_each_items_own_latents() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::ones((1, 4, 2, 2), DType::F16, &Device::Cpu).unwrap();
        let path = write(dir.path(), &[("x/a", a.clone()), ("b", b), ("unused", a)]);
        let file = InitLatents::read(&path).unwrap();
        let mut items = vec![item("x/a"), item("b")];
        file.add_to_keys(&mut items).unwrap();
        let (da, db) = (items[0].fields[FIELD], items[1].fields[FIELD]);
        assert_ne!(da, db);
        // The other tensors do not enter an item's key.
        let path = write(
            dir.path(),
            &[(
                "x/a",
                Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap(),
            )],
        );
        let mut again = vec![item("x/a")];
        InitLatents::read(&path)
            .unwrap()
            .add_to_keys(&mut again)
            .unwrap();
        assert_eq!(again[0].fields[FIELD], da);
        // Shape checked; values as f32.
        let t = file.get(&items[1], &[1, 4, 2, 2], &Device::Cpu).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        let err = file
            .get(&items[1], &[1, 4, 4, 4], &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("[1, 4, 2, 2]"), "{err}");
        // A changed file is refused.
        let err = InitLatents::read(&path)
            .unwrap()
            .get(&items[1], &[1, 4, 2, 2], &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("no initial latents"), "{err}");
        let path = write(
            dir.path(),
            &[(
                "b",
                Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap(),
            )],
        );
        let err = InitLatents::read(&path)
            .unwrap()
            .get(&items[1], &[1, 4, 2, 2], &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
    }

    #[test]
    fn a_missing_item_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let path = write(dir.path(), &[("a", a)]);
        let mut items = vec![item("a"), item("zz")];
        let err = InitLatents::read(&path)
            .unwrap()
            .add_to_keys(&mut items)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 item(s), e.g. zz") && err.contains("holds a"),
            "{err}"
        );
    }
}
