//! Reproducible random Inception weights, identical in Rust and in Python.
//!
//! The full network has ~24M parameters, too many to commit as a test fixture, so the
//! parity tests and the benchmark rebuild the same random checkpoint from a seed in both
//! languages (`tools/make_inception_fixtures.py` has the Python twin). Per tensor `name`,
//! element `i` (row-major):
//!
//! ```text
//! base = (seed · 0x9E3779B97F4A7C15 mod 2^64) XOR fnv1a64(name)
//! z    = splitmix64_finalise(base + (i + 1) · 0x9E3779B97F4A7C15)
//! u    = (z >> 11) · 2^-53                         ∈ [0, 1), exact in f64
//! ```
//!
//! and the value (computed in f64, rounded once to f32) depends on the tensor's role:
//! BatchNorm `running_var` 0.75 + 0.5u, `running_mean` 0.2(2u−1), `bn.weight` 0.8 + 0.4u,
//! `bn.bias` 0.2(2u−1), convolution and linear weights √(6/fan_in)·(2u−1) (He-uniform),
//! other vectors 0.1(2u−1), `num_batches_tracked` 0 (int64). The scales keep activations of
//! order 1 through the ~50 layers (features of the fixtures: max ≈ 5, 85% non-zero).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::{InceptionVariant, TensorSource};
use crate::diffusion::ModelError;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// `n` uniform values in [0, 1) for the tensor `name`.
pub(crate) fn uniform(seed: u64, name: &str, n: usize) -> impl Iterator<Item = f64> {
    let base = seed.wrapping_mul(GOLDEN) ^ fnv1a64(name.as_bytes());
    (1..=n as u64).map(move |i| {
        let mut z = base.wrapping_add(i.wrapping_mul(GOLDEN));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    })
}

/// The tensor `name` of the random checkpoint `seed` (f32; int64 for `num_batches_tracked`).
pub(crate) fn random_tensor(seed: u64, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
    if name.ends_with("num_batches_tracked") {
        return Tensor::zeros(shape, DType::I64, &Device::Cpu);
    }
    let n: usize = shape.iter().product();
    let u = uniform(seed, name, n);
    let values: Vec<f32> = if name.ends_with(".running_var") {
        u.map(|u| (0.75 + 0.5 * u) as f32).collect()
    } else if name.ends_with(".running_mean") || name.ends_with(".bn.bias") {
        u.map(|u| (0.2 * (2.0 * u - 1.0)) as f32).collect()
    } else if name.ends_with(".bn.weight") {
        u.map(|u| (0.8 + 0.4 * u) as f32).collect()
    } else if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let a = (6.0 / fan_in as f64).sqrt();
        u.map(|u| (a * (2.0 * u - 1.0)) as f32).collect()
    } else {
        u.map(|u| (0.1 * (2.0 * u - 1.0)) as f32).collect()
    };
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Draws every tensor the network asks for, and remembers them (for [`random_weights`]).
pub(crate) struct RandomSource {
    seed: u64,
    path: PathBuf,
    made: RefCell<Vec<(String, Tensor)>>,
}

impl RandomSource {
    pub(crate) fn new(seed: u64) -> RandomSource {
        RandomSource {
            seed,
            path: PathBuf::from(format!("<random Inception weights, seed {seed}>")),
            made: RefCell::new(Vec::new()),
        }
    }
}

impl TensorSource for RandomSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let t =
            random_tensor(self.seed, name, shape).map_err(|e| ModelError::bad(&self.path, e))?;
        self.made.borrow_mut().push((name.to_string(), t.clone()));
        Ok(t)
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The complete random checkpoint of `variant` in the layout of the published files:
/// pytorch-fid's (`fc` with 1008 classes) or torchvision's (`fc` with 1000 classes and the
/// `AuxLogits` head), each BatchNorm with its `num_batches_tracked` buffer. Save it with
/// `candle_core::safetensors::save` to get a file [`super::InceptionV3::load`] accepts.
pub fn random_weights(
    variant: InceptionVariant,
    seed: u64,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let source = RandomSource::new(seed);
    super::InceptionV3::build(&source, variant, &Device::Cpu)?;
    let mut out: HashMap<String, Tensor> = source.made.into_inner().into_iter().collect();
    let buffers: Vec<String> = out
        .keys()
        .filter_map(|k| k.strip_suffix(".running_var"))
        .map(|p| format!("{p}.num_batches_tracked"))
        .collect();
    for name in buffers {
        let t = random_tensor(seed, &name, &[]).map_err(|e| ModelError::bad(&source.path, e))?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by the Python twin (`uniform(0, "fc.bias", 3)` etc. in
    /// `tools/make_inception_fixtures.py`), so a change to either side is caught at once.
    #[test]
    fn generator_matches_python() {
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
        let u: Vec<f64> = uniform(0, "fc.bias", 3).collect();
        assert_eq!(
            u,
            [0.47765130680813184, 0.4807318186650099, 0.28006308125566914]
        );
        let u: Vec<f64> = uniform(12345, "Mixed_7c.branch_pool.conv.weight", 2).collect();
        assert_eq!(u, [0.7102997146990917, 0.7855502711084159]);
        let v: Vec<f64> = uniform(1, "fc.bias", 3).collect();
        assert_ne!(v[0], 0.47765130680813184);
    }
}
