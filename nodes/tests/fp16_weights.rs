//! Half-precision checkpoints (`*.fp16.safetensors`, as the SD repositories ship them) load
//! and are converted to the requested dtype; PyTorch pickles are refused with the fix.

mod common;

use candle_core::{DType, Device};
use nsync_nodes::diffusion::unet::UNet;

#[test]
fn fp16_unet_weights_load_and_match_within_half_precision() {
    let f = common::Fixture::load("sd15");
    let src = f.dir.join("model/unet");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let tensors = candle_core::safetensors::load(
        src.join("diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let half: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(
        &half,
        tmp.path().join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    let unet = UNet::from_dir(tmp.path(), DType::F32, &Device::Cpu).unwrap();
    let t = &f.tensors;
    let out = unet
        .forward(
            &t["unet_latents"],
            &t["unet_timesteps"],
            &t["te_last_hidden_state"],
        )
        .unwrap();
    let err = common::rel_err(&out, &t["unet_out"]);
    assert!(
        err > 0.0 && err <= 1e-2,
        "fp16 weights: relative error {err}"
    );
    // A pickle is refused with the conversion hint.
    std::fs::remove_file(tmp.path().join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    std::fs::write(tmp.path().join("diffusion_pytorch_model.bin"), b"pickle").unwrap();
    let e = UNet::from_dir(tmp.path(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("diffusion_pytorch_model.bin") && e.contains("safetensors"),
        "{e}"
    );
}
