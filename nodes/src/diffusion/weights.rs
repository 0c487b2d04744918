//! Strict weight loading from safetensors files (and PyTorch checkpoints).
//!
//! Every tensor a model asks for must exist with the expected shape, and every tensor in
//! the file must be used (or be on a short list of known buffers): a missing, unexpected or
//! mis-shaped tensor is an error naming the file and the tensor, never a silent random
//! initialisation (candle's `VarBuilder` substitutes values for some missing tensors).
//! Half-precision files (`*.fp16.safetensors`) are converted to the requested dtype.
//! PyTorch checkpoints (`.pth`/`.pt`, zip or legacy format) are read by [`Weights::load_pth`]
//! (`weights/pth.rs`) for the evaluation networks that are published only as pickles.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::ModelError;

mod pth;

pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
    dtype: DType,
    /// `Some(seed)`: no file; every requested tensor is drawn at random (tiny test models).
    random: Option<(u64, Device)>,
    made: RefCell<HashMap<String, Tensor>>,
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
    /// A safetensors file, or a PyTorch checkpoint when the name ends in `.pth` or `.pt`
    /// (then [`Self::load_pth`] with no key).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Weights, ModelError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("pth") || ext.eq_ignore_ascii_case("pt") {
            return Self::load_pth(path, None, dtype, device);
        }
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| ModelError::bad(path, format!("cannot read safetensors: {e}")))?;
        Ok(Self::from_file_tensors(path, tensors, dtype))
    }

    /// A PyTorch checkpoint written by `torch.save`, in the zip format (torch >= 1.6) or the
    /// legacy one (torch < 1.6, the format of many published weights). `key`: the entry of
    /// a checkpoint dict that holds the state dict (e.g. `Some("model_state_dict")`); `None`
    /// when the file is the state dict itself. Only tensors are kept; other values are
    /// skipped.
    pub fn load_pth(
        path: &Path,
        key: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Weights, ModelError> {
        let mut tensors = HashMap::new();
        for (name, t) in pth::read(path, key).map_err(|e| ModelError::bad(path, e))? {
            let t = t
                .to_device(device)
                .map_err(|e| ModelError::bad(path, format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t);
        }
        Ok(Self::from_file_tensors(path, tensors, dtype))
    }

    fn from_file_tensors(path: &Path, tensors: HashMap<String, Tensor>, dtype: DType) -> Weights {
        Weights {
            path: path.to_path_buf(),
            tensors,
            used: RefCell::new(BTreeSet::new()),
            dtype,
            random: None,
            made: RefCell::new(HashMap::new()),
        }
    }

    /// Weights that do not exist yet: each tensor a model asks for is drawn from `seed` and
    /// the tensor's name (norm scales 1, biases 0, other weights N(0, 1/fan_in)), and kept,
    /// so that [`Self::into_tensors`] can save exactly the checkpoint the model expects.
    pub fn random(seed: u64, name: &str) -> Weights {
        Weights {
            path: PathBuf::from(name),
            tensors: HashMap::new(),
            used: RefCell::new(BTreeSet::new()),
            dtype: DType::F32,
            random: Some((seed, Device::Cpu)),
            made: RefCell::new(HashMap::new()),
        }
    }

    /// The tensors drawn by a [`Self::random`] instance.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.made.into_inner()
    }

    fn draw(
        &self,
        seed: u64,
        device: &Device,
        name: &str,
        shape: &[usize],
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').nth(1).unwrap_or("");
        let is_norm = leaf.contains("norm") || leaf.starts_with("ln");
        if name.ends_with(".bias") {
            return Tensor::zeros(shape, DType::F32, device);
        }
        if is_norm && shape.len() == 1 {
            return Tensor::ones(shape, DType::F32, device);
        }
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let std = if shape.len() == 1 || name.contains("embedding") {
            0.02
        } else {
            (1.0 / fan_in as f64).sqrt()
        };
        let noise = super::noise::gaussian(super::noise::derive(seed, name, 0), shape, device)?;
        noise.affine(std, 0.0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        if let Some((seed, device)) = &self.random {
            let t = self
                .draw(*seed, device, name, shape)
                .map_err(|e| ModelError::bad(&self.path, e))?;
            self.made.borrow_mut().insert(name.to_string(), t.clone());
            return Ok(t);
        }
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
