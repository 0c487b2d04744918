//! Parity of the VAE (`AutoencoderKL`) with diffusers on the tiny committed models, plus
//! strict loading, batching and gradients.
//!
//! The fixtures come from the dev-only `tools/make_sd_fixtures.py` (see `sd_parity.rs`);
//! `NSYNC_SD_FIXTURES` points these tests at fixtures made with another seed.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::vae::AutoencoderKl;

use common::{rel_err, Fixture};

impl Fixture {
    fn vae_dir(&self) -> PathBuf {
        self.dir.join("model/vae")
    }
}

fn load(dir: &Path) -> AutoencoderKl {
    AutoencoderKl::from_dir(dir, DType::F32, &Device::Cpu).unwrap()
}

fn vae_matches_diffusers(variant: &str) {
    let f = Fixture::load(variant);
    let vae = load(&f.vae_dir());
    let t = |k: &str| &f.tensors[k];
    let image = t("vae_image");
    let start = Instant::now();
    let dist = vae.encode(image).unwrap();
    let decoded = vae.decode(t("vae_decode_latents")).unwrap();
    let elapsed = start.elapsed();
    eprintln!("{variant}: encode+decode at 64×64 took {elapsed:?}");
    let checks = [
        ("mean", dist.mode().clone(), "vae_mean"),
        ("std", dist.std().unwrap(), "vae_std"),
        ("sample", dist.sample(t("vae_noise")).unwrap(), "vae_sample"),
        ("decode", decoded, "vae_decoded"),
    ];
    for (what, ours, key) in checks {
        let err = rel_err(&ours, t(key));
        eprintln!("{variant}: {what} relative error {err:e}");
        assert!(err <= 1e-4, "{variant}: {what} relative error {err}");
    }
    assert_eq!(vae.config.scaling_factor, 0.18215);
}

#[test]
fn vae_sd15() {
    vae_matches_diffusers("sd15");
}

#[test]
fn vae_sd2() {
    vae_matches_diffusers("sd2");
}

/// Each sample of a batch comes out as it would alone.
#[test]
fn batch_items_are_independent() {
    let f = Fixture::load("sd15");
    let vae = load(&f.vae_dir());
    let image = &f.tensors["vae_image"];
    let other = image.flip(&[3]).unwrap().affine(0.5, 0.1).unwrap();
    let batch = Tensor::cat(&[image, &other], 0).unwrap();
    let mean = vae.encode(&batch).unwrap().mean;
    for (i, single) in [image, &other].into_iter().enumerate() {
        let alone = vae.encode(single).unwrap().mean;
        let err = rel_err(&mean.narrow(0, i, 1).unwrap(), &alone);
        assert!(err <= 1e-5, "encode item {i}: {err}");
    }
    let z = &f.tensors["vae_decode_latents"];
    let z2 = (z * -0.7).unwrap();
    let decoded = vae.decode(&Tensor::cat(&[z, &z2], 0).unwrap()).unwrap();
    for (i, single) in [z, &z2].into_iter().enumerate() {
        let alone = vae.decode(single).unwrap();
        let err = rel_err(&decoded.narrow(0, i, 1).unwrap(), &alone);
        assert!(err <= 1e-5, "decode item {i}: {err}");
    }
}

/// Gradients flow from decoded pixels back through the decoder, the sampling and the
/// encoder to the image, and from decoded pixels to the latents, and match central finite
/// differences along a fixed irregular direction. In f64: the tiny random model is so curved that
/// f32 differences are either truncation- or rounding-dominated at any step size.
#[test]
fn gradients_match_finite_differences() {
    let f = Fixture::load("sd15");
    let dt = DType::F64;
    let dev = Device::Cpu;
    let vae = AutoencoderKl::from_dir(&f.vae_dir(), dt, &dev).unwrap();
    let t = |k: &str| f.tensors[k].to_dtype(dt).unwrap();
    let (image, noise, latents) = (t("vae_image"), t("vae_noise"), t("vae_decode_latents"));
    let weight = wiggle(&[1, 3, 64, 64], 0.37);
    let through_decoder = |z: &Tensor| -> Tensor {
        (vae.decode(z).unwrap() * &weight)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let through_both =
        |x: &Tensor| -> Tensor { through_decoder(&vae.encode(x).unwrap().sample(&noise).unwrap()) };
    let cases: [(&str, &Tensor, &Loss); 2] = [
        ("image → encode → sample → decode", &image, &through_both),
        ("latents → decode", &latents, &through_decoder),
    ];
    for (what, x, loss_of) in cases {
        let var = candle_core::Var::from_tensor(x).unwrap();
        let grads = loss_of(var.as_tensor()).backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient reaches the input");
        let dir = wiggle(x.dims(), 1.91);
        let scalar = |t: Tensor| t.to_scalar::<f64>().unwrap();
        let analytic = scalar((g * &dir).unwrap().sum_all().unwrap());
        assert!(analytic.abs() > 1e-6, "{what}: gradient is zero");
        let eps = 1e-4;
        let at = |s: f64| scalar(loss_of(&(x + (&dir * s).unwrap()).unwrap()));
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        eprintln!("{what}: autograd {analytic}, finite difference {fd}");
        assert!(
            (fd - analytic).abs() <= 1e-4 * analytic.abs(),
            "{what}: directional derivative by autograd {analytic}, by finite difference {fd}"
        );
    }
}

/// A scalar loss of one input tensor.
type Loss<'a> = dyn Fn(&Tensor) -> Tensor + 'a;

/// A deterministic, irregular f64 tensor with values in [-1, 1] (no unseeded randomness
/// in tests).
fn wiggle(dims: &[usize], freq: f64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|i| (i as f64 * freq).sin()).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// A copy of the fixture's VAE folder in a temporary folder, with `edit` applied to the
/// weights.
fn edited_vae(f: &Fixture, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        f.vae_dir().join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let mut tensors =
        candle_core::safetensors::load(f.vae_dir().join(WEIGHTS), &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, tmp.path().join(WEIGHTS)).unwrap();
    tmp
}

/// Copy the VAE folder, letting `edit` change the weights, and return the load error.
fn load_error_after(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let tmp = edited_vae(&Fixture::load("sd15"), edit);
    let err = match AutoencoderKl::from_dir(tmp.path(), DType::F32, &Device::Cpu) {
        Ok(_) => panic!("loading edited weights succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&tmp.path().join(WEIGHTS).display().to_string()),
        "error does not name the file: {err}"
    );
    err
}

#[test]
fn a_missing_tensor_is_named() {
    let name = "decoder.up_blocks.2.resnets.0.conv_shortcut.weight";
    let err = load_error_after(|t| {
        t.remove(name).unwrap();
    });
    assert!(err.contains(&format!("missing tensor `{name}`")), "{err}");
}

#[test]
fn a_renamed_tensor_is_named_both_ways() {
    let old = "encoder.mid_block.attentions.0.to_k.bias";
    let new = "encoder.mid_block.attentions.0.to_key.bias";
    let err = load_error_after(|t| {
        let v = t.remove(old).unwrap();
        t.insert(new.to_string(), v);
    });
    assert!(err.contains(&format!("missing tensor `{old}`")), "{err}");
    // With the expected name restored under both names, the extra one is reported.
    let err = load_error_after(|t| {
        let v = t[old].clone();
        t.insert(new.to_string(), v);
    });
    assert!(err.contains(&format!("`{new}`")), "{err}");
}

#[test]
fn legacy_attention_names_and_conv_shapes_load() {
    let f = Fixture::load("sd15");
    let tmp = edited_vae(&f, |tensors| {
        for part in ["encoder", "decoder"] {
            let p = format!("{part}.mid_block.attentions.0");
            for (new, old) in [
                ("to_q", "query"),
                ("to_k", "key"),
                ("to_v", "value"),
                ("to_out.0", "proj_attn"),
            ] {
                let w = tensors.remove(&format!("{p}.{new}.weight")).unwrap();
                let b = tensors.remove(&format!("{p}.{new}.bias")).unwrap();
                // Original LDM checkpoints store these as 1×1 convolutions.
                let w = w.unsqueeze(2).unwrap().unsqueeze(3).unwrap();
                tensors.insert(format!("{p}.{old}.weight"), w);
                tensors.insert(format!("{p}.{old}.bias"), b);
            }
        }
    });
    let vae = load(tmp.path());
    let decoded = vae.decode(&f.tensors["vae_decode_latents"]).unwrap();
    let err = rel_err(&decoded, &f.tensors["vae_decoded"]);
    assert!(err <= 1e-4, "legacy names: decode relative error {err}");
}

#[test]
fn unsupported_block_types_are_refused() {
    let f = Fixture::load("sd15");
    let tmp = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.vae_dir().join("config.json")).unwrap()).unwrap();
    config["down_block_types"][1] = "AttnDownEncoderBlock2D".into();
    std::fs::write(
        tmp.path().join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let err = match AutoencoderKl::from_dir(tmp.path(), DType::F32, &Device::Cpu) {
        Ok(_) => panic!("an AttnDownEncoderBlock2D config loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("AttnDownEncoderBlock2D"), "{err}");
}
