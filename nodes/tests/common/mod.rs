//! What the parity tests share: the committed fixtures and the error measures.
//!
//! The fixtures (model folders and reference outputs) are written by the dev-only script
//! `tools/make_sd_fixtures.py` and committed under `tests/fixtures/sd/<variant>/`. Set
//! `NSYNC_SD_FIXTURES` to a folder with other variants' subfolders to re-run the tests on
//! fixtures made with another seed.

// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// The folder with one subfolder per variant: `NSYNC_SD_FIXTURES`, else the committed one.
pub fn fixtures_root() -> PathBuf {
    std::env::var_os("NSYNC_SD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd"))
}

/// One variant's fixtures: its folder (with the `model/` subfolder), `fixtures.json` and
/// the tensors of `fixtures.safetensors`.
pub struct Fixture {
    pub dir: PathBuf,
    pub json: Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(variant: &str) -> Fixture {
        let dir = fixtures_root().join(variant);
        let json: Value = serde_json::from_slice(
            &std::fs::read(dir.join("fixtures.json")).expect("fixtures.json"),
        )
        .unwrap();
        let tensors =
            candle_core::safetensors::load(dir.join("fixtures.safetensors"), &Device::Cpu).unwrap();
        Fixture { dir, json, tensors }
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: no tensor `{name}`", self.dir.display()))
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// max |a-b| of two float32 tensors of the same shape.
pub fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    abs_max(&(a - b).unwrap())
}

/// max |a-b| / max |b|: the relative error used throughout the parity tests (computed in
/// float32).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    max_abs(&a, &b) / abs_max(&b).max(1e-12)
}

fn abs_max(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
