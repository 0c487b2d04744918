//! The UNet against diffusers on the tiny SD 1.x / 2.x fixtures (see `sd_parity.rs` for
//! where they come from), including per-sample timesteps in one batch.

mod common;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::unet::UNet;

use common::{rel_err, Fixture};

fn unet_matches_diffusers(variant: &str) {
    let f = Fixture::load(variant);
    let t = &f.tensors;
    let unet = UNet::from_dir(&f.dir.join("model/unet"), DType::F32, &Device::Cpu).unwrap();
    let out = unet
        .forward(
            &t["unet_latents"],
            &t["unet_timesteps"],
            &t["te_last_hidden_state"],
        )
        .unwrap();
    let err = rel_err(&out, &t["unet_out"]);
    assert!(err <= 1e-4, "{variant}: UNet relative error {err}");
}

#[test]
fn unet_sd15() {
    unet_matches_diffusers("sd15");
}

#[test]
fn unet_sd2() {
    unet_matches_diffusers("sd2");
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let d = common::fixtures_root().join("sd15");
    let tmp = tempfile::tempdir().unwrap();
    let file = d.join("model/unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    std::fs::copy(
        d.join("model/unet/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let out = tmp.path().join("diffusion_pytorch_model.safetensors");
    let load_error = || {
        UNet::from_dir(tmp.path(), DType::F32, &Device::Cpu)
            .err()
            .unwrap()
            .to_string()
    };
    let removed = tensors.remove("conv_out.bias").unwrap();
    candle_core::safetensors::save(&tensors, &out).unwrap();
    let e = load_error();
    assert!(
        e.contains("conv_out.bias") && e.contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );
    tensors.insert("conv_out.bias".into(), removed);
    tensors.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &out).unwrap();
    let e = load_error();
    assert!(
        e.contains("unexpected tensor") && e.contains("extra.weight"),
        "{e}"
    );
}

/// Gradients w.r.t. the text context match central finite differences (candle's stock UNet
/// is 60–120% off here because of fused kernels without a backward pass).
#[test]
fn gradient_wrt_context_matches_finite_differences() {
    let f = Fixture::load("sd2");
    let t = &f.tensors;
    // f64, so that finite differences are exact enough to judge the gradient.
    let unet = UNet::from_dir(&f.dir.join("model/unet"), DType::F64, &Device::Cpu).unwrap();
    let f64_ = |x: Tensor| x.to_dtype(DType::F64).unwrap();
    let latents = f64_(t["unet_latents"].narrow(0, 0, 1).unwrap());
    let ts = t["unet_timesteps"].narrow(0, 0, 1).unwrap();
    let ctx0 = f64_(t["te_last_hidden_state"].narrow(0, 0, 1).unwrap());
    let weight = Tensor::randn(0f64, 1.0, latents.dims(), &Device::Cpu).unwrap();
    let loss = |ctx: &Tensor| {
        (unet.forward(&latents, &ts, ctx).unwrap() * &weight)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let var = candle_core::Var::from_tensor(&ctx0).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the context");
    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    let base: Vec<f64> = ctx0.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-4f64;
    // Tokens 0 and 5, a few channels each.
    for k in [0usize, 3, 17, 5 * 32 + 2, 5 * 32 + 30] {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[k] += delta;
            loss(&Tensor::from_vec(v, ctx0.dims(), &Device::Cpu).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (fd - g[k]).abs() <= 1e-4 * scale,
            "context[{k}]: autograd {} vs finite difference {fd}",
            g[k]
        );
    }
}
