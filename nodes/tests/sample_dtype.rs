//! Sampling in half precision (`sd_sample`'s `dtype`): the fixtures' guided sample in f16 and
//! bf16 against diffusers' f32 image, and (ignored; run by hand) the SD 1.5-size UNet's time
//! and error per dtype on the CPU, the numbers `diffusion/precision.rs` quotes.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::noise::gaussian;
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::diffusion::sampler::{decode, denoise, SampleSettings};
use nsync_nodes::diffusion::unet::config::UNetConfig;
use nsync_nodes::diffusion::unet::UNet;
use nsync_nodes::diffusion::weights::Weights;

use common::{max_abs, Fixture};

/// The fixture's guided sample (prompt, negative prompt, diffusers' initial latents) in
/// `dtype`: the image `[1, H, W, 3]` in [0, 1].
fn sample(variant: &str, dtype: DType) -> (Tensor, Tensor) {
    let f = Fixture::load(variant);
    let s = &f.json["sample"];
    let sd = StableDiffusion::from_dir(&f.dir.join("model"), dtype, &Device::Cpu).unwrap();
    assert_eq!(sd.unet.dtype(), dtype);
    let prompt = sd.encode_prompts(&[s["prompt"].as_str().unwrap()]).unwrap();
    let negative = sd
        .encode_prompts(&[s["negative_prompt"].as_str().unwrap()])
        .unwrap();
    assert_eq!(prompt.dtype(), dtype);
    let settings = SampleSettings {
        scheduler: None,
        steps: s["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: s["guidance_scale"].as_f64().unwrap(),
        width: 64,
        height: 64,
        eta: 0.0,
    };
    let latents = denoise(
        &sd,
        &settings,
        &prompt,
        &negative,
        f.tensor("sample_init_latents"),
        &[0],
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(latents.dtype(), DType::F32);
    let image = decode(&sd, &latents)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    (image, f.tensor("sample_image").clone())
}

/// Half precision gives diffusers' f32 image within a few pixel levels (the tiny models'
/// random weights are not trained, so errors are not damped as in a real model).
#[test]
fn half_precision_samples_stay_close_to_f32() {
    for variant in ["sd15", "sd2"] {
        let (f32_image, reference) = sample(variant, DType::F32);
        assert!(max_abs(&f32_image, &reference) <= 2e-3);
        for (dtype, tol) in [(DType::F16, 0.05), (DType::BF16, 0.2)] {
            let (image, _) = sample(variant, dtype);
            let err = max_abs(&image, &reference);
            eprintln!("{variant} {dtype:?}: max |image − diffusers f32| = {err:.4}");
            assert!(err <= tol, "{variant} {dtype:?}: image differs by {err}");
            assert!(
                err > 0.0,
                "{dtype:?} must actually compute in half precision"
            );
        }
    }
}

/// The SD 1.5 UNet's configuration (`unet/config.json`), as `nsync bench sd` builds it.
fn sd15_unet_config() -> UNetConfig {
    serde_json::from_value(serde_json::json!({
        "in_channels": 4, "out_channels": 4, "sample_size": 64,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn", "cross_attention_dim": 768, "attention_head_dim": 8,
        "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": true, "freq_shift": 0,
        "act_fn": "silu", "downsample_padding": 1, "use_linear_projection": false,
        "center_input_sample": false
    }))
    .unwrap()
}

/// Time and error of one guided UNet call of the SD 1.5-size UNet (random weights) per
/// dtype, at `NSYNC_DTYPE_LATENT` latents (default 32, i.e. 256 px; batch 2). Run with
/// `TMPDIR=/dev/shm cargo test --release -p nsync-nodes --test sample_dtype -- --ignored
/// --nocapture` (it writes the 3.4 GB of f32 weights to a temporary file).
#[test]
#[ignore = "minutes and ~10 GB; prints the dtype measurements of diffusion/precision.rs"]
fn sd15_unet_speed_and_error_per_dtype() {
    let side: usize = std::env::var("NSYNC_DTYPE_LATENT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let dev = Device::Cpu;
    let latents = gaussian(1, &[2, 4, side, side], &dev).unwrap();
    let t = Tensor::new(&[500f32, 500f32], &dev).unwrap();
    let context = gaussian(2, &[2, 77, 768], &dev).unwrap();
    // The f32 weights, written once as a safetensors file, so that each dtype loads them as
    // a model folder's weights are loaded.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unet.safetensors");
    let reference = {
        let w = Weights::random(0x5d15, "unet (random)");
        let unet = UNet::from_weights(sd15_unet_config(), &w).unwrap();
        let out = unet.forward(&latents, &t, &context).unwrap();
        candle_core::safetensors::save(&w.into_tensors(), &file).unwrap();
        out
    };
    // f32 again last: the machine may have changed meanwhile.
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F32] {
        let w = Weights::load(&file, dtype, &dev).unwrap();
        let unet = UNet::from_weights(sd15_unet_config(), &w).unwrap();
        drop(w);
        let run = || {
            let start = Instant::now();
            let out = unet
                .forward(
                    &latents.to_dtype(dtype).unwrap(),
                    &t,
                    &context.to_dtype(dtype).unwrap(),
                )
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            (start.elapsed().as_secs_f64(), out)
        };
        let (first, _) = run();
        // The best of three: the machine may be shared.
        let (secs, out) = (0..3)
            .map(|_| run())
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        let err = max_abs(&out, &reference);
        let scale = reference.abs().unwrap().max_all().unwrap();
        eprintln!(
            "{dtype:?}: {secs:.2} s per guided call at {}×{} latents (first {first:.2} s); max |out − f32| = {err:.3e} (max |f32 out| = {})",
            side,
            side,
            scale.to_scalar::<f32>().unwrap()
        );
    }
}
