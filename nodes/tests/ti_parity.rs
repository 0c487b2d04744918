//! The Textual Inversion training step against diffusers' `textual_inversion.py` on the
//! tiny SD 1.x (epsilon) and SD 2.x (v_prediction) fixtures (see `sd_parity.rs` for where
//! they come from; the JSON's `textual_inversion` key documents the exact calls): the
//! encoded latents, the noisy latents, the target, the text encoder's output with the
//! placeholder row injected, the UNet's prediction, the loss, and the gradient of the loss
//! w.r.t. the placeholder's embedding. Set `NSYNC_SD_FIXTURES` to a folder with other
//! variants' subfolders to re-run these tests on fixtures made with another seed.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use nsync_nodes::diffusion::clip_text::ClipTextModel;
use nsync_nodes::diffusion::schedulers::{NoiseSchedule, PredictionType, SchedulerConfig};
use nsync_nodes::diffusion::ti_loss::{encode_latents, ti_loss};
use nsync_nodes::diffusion::unet::UNet;
use nsync_nodes::diffusion::vae::AutoencoderKl;
use serde_json::Value;

use common::{rel_err, Fixture};

impl Fixture {
    /// The models and the training schedule, all f32 on the CPU.
    fn models(&self) -> Models {
        let m = self.dir.join("model");
        let dev = Device::Cpu;
        let config =
            SchedulerConfig::from_file(&m.join("scheduler/scheduler_config.json")).unwrap();
        Models {
            te: ClipTextModel::from_dir(&m.join("text_encoder"), DType::F32, &dev).unwrap(),
            unet: UNet::from_dir(&m.join("unet"), DType::F32, &dev).unwrap(),
            vae: AutoencoderKl::from_dir(&m.join("vae"), DType::F32, &dev).unwrap(),
            schedule: NoiseSchedule::from_config(&config).unwrap(),
            prediction: config.prediction_type,
        }
    }

    fn ti(&self) -> &Value {
        &self.json["textual_inversion"]
    }

    /// The prompt's ids `[1, 77]` and the placeholder's id.
    fn ids(&self) -> (Tensor, u32) {
        let rows = self.ti()["input_ids"].as_array().unwrap();
        let flat: Vec<u32> = rows.iter().flat_map(common::ids).collect();
        let n = flat.len() / rows.len();
        let ids = Tensor::from_vec(flat, (rows.len(), n), &Device::Cpu).unwrap();
        (ids, self.ti()["placeholder_id"].as_u64().unwrap() as u32)
    }

    fn timestep(&self) -> usize {
        self.ti()["timestep"].as_u64().unwrap() as usize
    }
}

struct Models {
    te: ClipTextModel,
    unet: UNet,
    vae: AutoencoderKl,
    schedule: NoiseSchedule,
    prediction: PredictionType,
}

fn check(variant: &str, what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let err = rel_err(a, b);
    println!("{variant}: {what}: relative error {err:.3e} (tolerance {tol:.0e})");
    assert!(
        err <= tol,
        "{variant}: {what}: relative error {err} > {tol}"
    );
}

fn step_matches_diffusers(variant: &str) {
    let f = Fixture::load(variant);
    let m = f.models();
    let expected = match f.ti()["prediction_type"].as_str().unwrap() {
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        other => panic!("{variant}: unexpected prediction type {other}"),
    };
    assert_eq!(m.prediction, expected, "{variant}: scheduler config");

    // Latents: the VAE sample with diffusers' noise, scaled.
    let scaling = f.json["vae"]["scaling_factor"].as_f64().unwrap();
    assert_eq!(scaling, m.vae.config.scaling_factor);
    let latents = encode_latents(
        &m.vae,
        f.tensor("vae_image"),
        f.tensor("vae_noise"),
        scaling,
    )
    .unwrap();
    check(variant, "latents", &latents, f.tensor("ti_latents"), 1e-4);

    // The step, from diffusers' latents so that each stage is judged on its own.
    let (ids, placeholder) = f.ids();
    let init = f.tensor("ti_init_embedding");
    assert_eq!(init.dims(), [m.te.config.hidden_size]);
    let var = Var::from_tensor(init).unwrap();
    let step = ti_loss(
        &m.te,
        &m.unet,
        &m.schedule,
        m.prediction,
        f.tensor("ti_latents"),
        f.tensor("ti_noise"),
        &[f.timestep()],
        &ids,
        &[(placeholder, var.as_tensor().clone())],
    )
    .unwrap();
    check(
        variant,
        "noisy latents",
        &step.noisy_latents,
        f.tensor("ti_noisy_latents"),
        1e-4,
    );
    check(variant, "target", &step.target, f.tensor("ti_target"), 1e-4);
    check(
        variant,
        "encoder hidden states",
        &step.encoder_hidden_states,
        f.tensor("ti_encoder_hidden_states"),
        1e-4,
    );
    check(
        variant,
        "model prediction",
        &step.model_pred,
        f.tensor("ti_model_pred"),
        1e-4,
    );
    assert_eq!(step.loss.dims(), [] as [usize; 0]);
    assert_eq!(step.loss.dtype(), DType::F32);
    check(
        variant,
        "loss",
        &step.loss.reshape(1).unwrap(),
        f.tensor("ti_loss"),
        1e-4,
    );
    let json_loss = f.ti()["loss"].as_f64().unwrap();
    let loss = step.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (loss - json_loss).abs() <= 1e-4 * json_loss.abs(),
        "{variant}: loss {loss} vs the JSON's {json_loss}"
    );

    // The gradient reaches the learned row, and not the frozen table (candle does store
    // gradients for the direct operands of ops on a tracked path, e.g. the target in
    // `pred - target`, but nothing propagates back into frozen tensors from there).
    let grads = step.loss.backward().unwrap();
    let grad = grads
        .get(var.as_tensor())
        .expect("a gradient reaches the learned embedding");
    check(variant, "gradient", grad, f.tensor("ti_grad"), 1e-3);
    assert!(grads.get(&m.te.token_embedding).is_none());
    assert!(grads.get(f.tensor("ti_latents")).is_none());
    println!(
        "{variant}: {} tensors in the gradient store",
        grads.get_ids().count()
    );
}

#[test]
fn step_sd15() {
    step_matches_diffusers("sd15");
}

#[test]
fn step_sd2() {
    step_matches_diffusers("sd2");
}

/// Per-sample timesteps: a batch of two samples at different timesteps gives each sample
/// its own noisy latents, and the batch loss is the mean of the two samples' losses
/// (diffusers' `reduction="mean"` over every element).
#[test]
fn per_sample_timesteps() {
    let f = Fixture::load("sd2");
    let m = f.models();
    let (ids, placeholder) = f.ids();
    let learned = [(placeholder, f.tensor("ti_init_embedding").clone())];
    let latents = f.tensor("ti_latents");
    let noise = f.tensor("ti_noise");
    let other_noise = f.tensor("sched_sample");
    let single = |noise: &Tensor, t: usize| {
        ti_loss(
            &m.te,
            &m.unet,
            &m.schedule,
            m.prediction,
            latents,
            noise,
            &[t],
            &ids,
            &learned,
        )
        .unwrap()
    };
    let a = single(noise, 500);
    let b = single(other_noise, 37);
    let batch = ti_loss(
        &m.te,
        &m.unet,
        &m.schedule,
        m.prediction,
        &Tensor::cat(&[latents, latents], 0).unwrap(),
        &Tensor::cat(&[noise, other_noise], 0).unwrap(),
        &[500, 37],
        &Tensor::cat(&[&ids, &ids], 0).unwrap(),
        &learned,
    )
    .unwrap();
    let first = batch.noisy_latents.narrow(0, 0, 1).unwrap();
    let second = batch.noisy_latents.narrow(0, 1, 1).unwrap();
    assert!(rel_err(&first, &a.noisy_latents) <= 1e-6);
    assert!(rel_err(&second, &b.noisy_latents) <= 1e-6);
    let pred = batch.model_pred.narrow(0, 1, 1).unwrap();
    assert!(rel_err(&pred, &b.model_pred) <= 1e-4);
    let mean = (a.loss.to_scalar::<f32>().unwrap() + b.loss.to_scalar::<f32>().unwrap()) / 2.0;
    let got = batch.loss.to_scalar::<f32>().unwrap();
    assert!((got - mean).abs() <= 1e-5 * mean, "{got} vs {mean}");
}

#[test]
fn misuse_is_refused() {
    let f = Fixture::load("sd15");
    let m = f.models();
    let (ids, _) = f.ids();
    let latents = f.tensor("ti_latents");
    let noise = f.tensor("ti_noise");
    let run = |prediction, timesteps: &[usize], ids: &Tensor| {
        ti_loss(
            &m.te,
            &m.unet,
            &m.schedule,
            prediction,
            latents,
            noise,
            timesteps,
            ids,
            &[],
        )
        .err()
        .map(|e| e.to_string())
    };
    let e = run(PredictionType::Sample, &[500], &ids).expect("sample refused");
    assert!(e.contains("sample"), "{e}");
    let e = run(PredictionType::Epsilon, &[500, 1], &ids).expect("two timesteps refused");
    assert!(e.contains("timesteps"), "{e}");
    let two = Tensor::cat(&[&ids, &ids], 0).unwrap();
    let e = run(PredictionType::Epsilon, &[500], &two).expect("two prompts refused");
    assert!(e.contains("prompts"), "{e}");
    let e = run(PredictionType::Epsilon, &[1000], &ids).expect("timestep out of range");
    assert!(e.contains("out of range"), "{e}");
}
