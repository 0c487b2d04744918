//! Strict weight loading from safetensors files.
//!
//! Every tensor a model asks for must exist with the expected shape, and every tensor in
//! the file must be used (or be on a short list of known buffers): a missing, unexpected or
//! mis-shaped tensor is an error naming the file and the tensor, never a silent random
//! initialisation (candle's `VarBuilder` substitutes values for some missing tensors).
//! Half-precision files (`*.fp16.safetensors`) are converted to the requested dtype.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::ModelError;

pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
    dtype: DType,
}

/// The weight file of a diffusers component: `model.safetensors` /
/// `diffusion_pytorch_model.safetensors`, or their `.fp16` variants.
pub fn component_file(dir: &Path, stem: &str) -> Result<PathBuf, ModelError> {
    for name in [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if dir.join(format!("{stem}.bin")).is_file() {
        return Err(ModelError::bad(
            dir.join(format!("{stem}.bin")),
            "PyTorch pickle weights are not read; convert them to safetensors (e.g. `save_pretrained(..., safe_serialization=True)`)",
        ));
    }
    Err(ModelError::MissingFile {
        path: dir.join(format!("{stem}.safetensors")),
        hint: format!(
            "expected {stem}.safetensors or {stem}.fp16.safetensors in {}",
            dir.display()
        ),
    })
}

impl Weights {
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Weights, ModelError> {
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| ModelError::bad(path, format!("cannot read safetensors: {e}")))?;
        Ok(Weights {
            path: path.to_path_buf(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
            dtype,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let t = self.tensors.get(name).ok_or_else(|| {
            ModelError::bad(
                &self.path,
                format!("missing tensor `{name}` (expected shape {shape:?})"),
            )
        })?;
        if t.dims() != shape {
            return Err(ModelError::bad(&self.path, format!("tensor `{name}` has shape {:?}, expected {shape:?} (does config.json match the weights?)", t.dims())));
        }
        self.used.borrow_mut().insert(name.to_string());
        t.to_dtype(self.dtype)
            .map_err(|e| ModelError::bad(&self.path, format!("tensor `{name}`: {e}")))
    }

    /// Fail if the file holds tensors nobody asked for (other than `ignore`d buffers).
    pub fn finish(&self, ignore: &[&str]) -> Result<(), ModelError> {
        let used = self.used.borrow();
        let unexpected: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k) && !ignore.iter().any(|i| k.ends_with(i)))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = unexpected.iter().map(|s| s.as_str()).collect();
        names.sort();
        let shown = names
            .iter()
            .take(5)
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ModelError::bad(
            &self.path,
            format!("{} unexpected tensor(s), e.g. {shown}: the weights do not match the architecture in config.json", names.len()),
        ))
    }
}
