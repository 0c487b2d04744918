//! The two measured cases of `nsync bench sd`, each run in a child process of its own.
//!
//! The models are Stable Diffusion 1.5-size with random weights drawn in memory
//! ([`Weights::random`]): no download, no file. `bench/sd_reference.py` builds the same
//! configurations in diffusers / transformers, so both sides compute the same shapes:
//!
//! - **sample**: one classifier-free-guided UNet call at 512 px — latents `[2, 4, 64, 64]`,
//!   one timestep per sample, text context `[2, 77, 768]`; no gradient.
//! - **train**: one Textual Inversion step at 256 px — the prompt's token embeddings with
//!   one learned row (a [`Var`]) through the CLIP text encoder, the UNet at
//!   `[1, 4, 32, 32]`, the MSE against the noise, `backward()`, the learned row's gradient
//!   ([`ti_loss`], the code the training node runs).
//! - **train_ctoa**: one NSYNC step at the same size — three such passes (positive,
//!   negative, anchor), each with its own backward, then [`combine`]'s projected update:
//!   the cost of NSYNC over TI, which should stay within 3 passes / 1 pass.
//!
//! Each case times its step; the first call is a discarded warm-up when it is cheap
//! (under [`WARMUP_UNDER_S`]), otherwise it counts as the first of the repeats (a warm-up
//! of a minute buys nothing measurable). Peak memory is the process's `VmHWM`, which is
//! why each case runs alone in its own process.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context};
use candle_core::{Device, Tensor, Var};
use nsync_nodes::diffusion::clip_text::{ClipTextConfig, ClipTextModel};
use nsync_nodes::diffusion::noise::gaussian;
use nsync_nodes::diffusion::schedulers::{NoiseSchedule, PredictionType, SchedulerConfig};
use nsync_nodes::diffusion::ti_loss::ti_loss;
use nsync_nodes::diffusion::unet::config::UNetConfig;
use nsync_nodes::diffusion::unet::UNet;
use nsync_nodes::diffusion::weights::Weights;
use nsync_nodes::training::update_rule::{combine, Compat, Variant};
use serde_json::json;

use super::sd::{Case, CaseResult};
use super::timing::secs;

/// A first call shorter than this is a warm-up and is not counted (the same rule as
/// `bench/sd_reference.py`).
pub(super) const WARMUP_UNDER_S: f64 = 30.0;

/// The token id of the learned embedding: one past CLIP's vocabulary, as Textual Inversion
/// adds its placeholder token.
const LEARNED_ID: u32 = 49408;

/// "a painting in the style of <token>", then end-of-text padding to 77 tokens (SD 1.x).
pub(super) fn prompt_ids() -> Vec<u32> {
    let mut ids = vec![49406, 320, 3086, 530, 518, 2480, 539, LEARNED_ID];
    ids.resize(77, 49407);
    ids
}

/// Stable Diffusion 1.5's `unet/config.json` (the fields that shape the computation).
pub(super) fn unet_config() -> UNetConfig {
    serde_json::from_value(json!({
        "in_channels": 4, "out_channels": 4, "sample_size": 64,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn", "cross_attention_dim": 768, "attention_head_dim": 8,
        "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": true, "freq_shift": 0,
        "act_fn": "silu", "downsample_padding": 1, "use_linear_projection": false,
        "center_input_sample": false
    }))
    .expect("the SD 1.5 UNet config deserialises")
}

/// The CLIP ViT-L/14 text encoder of SD 1.5 (`text_encoder/config.json`).
pub(super) fn clip_config() -> ClipTextConfig {
    serde_json::from_value(json!({
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5
    }))
    .expect("the CLIP text config deserialises")
}

/// SD 1.5's `scheduler/scheduler_config.json`, whose betas the training step noises with.
const SCHEDULER: &str = r#"{"_class_name": "PNDMScheduler", "num_train_timesteps": 1000,
  "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
  "steps_offset": 1, "set_alpha_to_one": false, "skip_prk_steps": true, "clip_sample": false,
  "prediction_type": "epsilon"}"#;

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB; 0 where there is none.
pub(super) fn proc_status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let v = l.strip_prefix(key)?.strip_prefix(':')?;
                v.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}

/// One timed call: the whole step, and for training its forward and backward parts.
struct Run {
    total: f64,
    forward: Option<f64>,
    backward: Option<f64>,
}

/// Time `step` `repeats` times (after a warm-up when the first call is cheap) and fill in
/// the timing fields of `r` from the fastest run.
fn measure(
    r: &mut CaseResult,
    repeats: usize,
    mut step: impl FnMut() -> anyhow::Result<Run>,
) -> anyhow::Result<()> {
    let what = r.case.clone();
    eprintln!("  {what}: first call…");
    let first = step()?;
    r.first_s = first.total;
    r.warmup = first.total < WARMUP_UNDER_S;
    let mut runs = Vec::new();
    if r.warmup {
        eprintln!(
            "  {what}: first call {:.2} s (warm-up, not counted)",
            first.total
        );
    } else {
        eprintln!("  {what}: first call {:.2} s (counted)", first.total);
        runs.push(first);
    }
    while runs.len() < repeats.max(1) {
        let run = step()?;
        eprintln!("  {what}: {:.2} s", run.total);
        runs.push(run);
    }
    r.times_s = runs.iter().map(|x| x.total).collect();
    let best = runs
        .iter()
        .min_by(|a, b| a.total.total_cmp(&b.total))
        .expect("at least one run");
    r.best_s = best.total;
    r.forward_s = best.forward;
    r.backward_s = best.backward;
    Ok(())
}

/// The number of parameters drawn by `w` (the tensors share storage with the model's).
fn params(w: Weights) -> u64 {
    w.into_tensors()
        .values()
        .map(|t| t.elem_count() as u64)
        .sum()
}

fn build_unet(seed: u64) -> anyhow::Result<(UNet, u64)> {
    let w = Weights::random(seed, "unet (random)");
    let unet = UNet::from_weights(unet_config(), &w)?;
    Ok((unet, params(w)))
}

fn build_clip(seed: u64) -> anyhow::Result<(ClipTextModel, u64)> {
    let w = Weights::random(seed, "text_encoder (random)");
    let te = ClipTextModel::from_weights(clip_config(), &w, &Device::Cpu)?;
    Ok((te, params(w)))
}

/// Run `case` in this process and describe it.
pub(super) fn run_case(case: Case, threads: usize, repeats: usize) -> anyhow::Result<CaseResult> {
    let dev = Device::Cpu;
    let mut r = CaseResult {
        case: case.name().into(),
        threads,
        ..CaseResult::default()
    };
    let t = Instant::now();
    match case {
        Case::Sample => {
            eprintln!("  drawing the SD 1.5 UNet's random weights…");
            let (unet, n) = build_unet(0x5d15)?;
            r.params = n;
            r.build_s = secs(t.elapsed());
            r.rss_model_kib = proc_status_kib("VmRSS");
            let latents = gaussian(1, &[2, 4, 64, 64], &dev)?;
            let timesteps = Tensor::new(&[500f32, 500f32], &dev)?;
            let context = gaussian(2, &[2, 77, 768], &dev)?;
            let mut check = 0.0;
            measure(&mut r, repeats, || {
                let t = Instant::now();
                let out = unet.forward(&latents, &timesteps, &context)?;
                let total = secs(t.elapsed());
                ensure!(out.dims() == [2, 4, 64, 64], "UNet output {:?}", out.dims());
                check = out.abs()?.mean_all()?.to_scalar::<f32>()? as f64;
                Ok(Run {
                    total,
                    forward: None,
                    backward: None,
                })
            })?;
            r.check = Some(check);
        }
        Case::Train | Case::TrainCtoa => {
            eprintln!("  drawing the CLIP text encoder's and the SD 1.5 UNet's random weights…");
            let (te, n_te) = build_clip(0xc11b)?;
            let (unet, n_unet) = build_unet(0x5d15)?;
            r.params = n_te + n_unet;
            r.build_s = secs(t.elapsed());
            r.rss_model_kib = proc_status_kib("VmRSS");
            let config =
                SchedulerConfig::from_json_str(SCHEDULER, Path::new("<SD 1.5 scheduler>"))?;
            let schedule = NoiseSchedule::from_config(&config)?;
            // Positive, negative and anchor images (latents) with their noise; TI uses
            // only the first.
            let passes = if case == Case::Train { 1 } else { 3 };
            let data = (0..passes)
                .map(|i| {
                    Ok((
                        gaussian(3 + 2 * i, &[1, 4, 32, 32], &dev)?,
                        gaussian(4 + 2 * i, &[1, 4, 32, 32], &dev)?,
                    ))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let ids = Tensor::from_vec(prompt_ids(), (1, 77), &dev)?;
            // Initialised from the "painting" token's row, as TI starts from an initializer
            // token.
            let row = Var::from_tensor(&te.token_embedding.get(3086)?.contiguous()?)?;
            let learned = [(LEARNED_ID, row.as_tensor().clone())];
            let mut stats = (0.0, 0usize, 0u64);
            measure(&mut r, repeats, || {
                let t = Instant::now();
                let (mut forward, mut grads_flat) = (0.0, Vec::new());
                for (latents, noise) in &data {
                    let f = Instant::now();
                    let step = ti_loss(
                        &te,
                        &unet,
                        &schedule,
                        PredictionType::Epsilon,
                        latents,
                        noise,
                        &[500],
                        &ids,
                        &learned,
                    )?;
                    forward += secs(f.elapsed());
                    let grads = step.loss.backward()?;
                    let g = grads
                        .get(row.as_tensor())
                        .context("no gradient reached the learned embedding")?;
                    // Everything the gradient store still holds after the backward pass:
                    // the learned row's gradient, and those of the frozen weights (and
                    // inputs) that candle computes anyway.
                    let (mut n, mut bytes) = (0usize, 0u64);
                    for id in grads.get_ids() {
                        if let Some(t) = grads.get_id(*id) {
                            n += 1;
                            bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
                        }
                    }
                    stats.1 = n;
                    stats.2 = bytes;
                    grads_flat.push(g.flatten_all()?.to_vec1::<f32>()?);
                }
                let update = match grads_flat.as_slice() {
                    [pos] => pos.clone(),
                    [pos, neg, anc] => {
                        combine(Variant::Ctoa, Compat::Paper, pos, Some(neg), Some(anc))
                            .map_err(anyhow::Error::msg)?
                            .update
                    }
                    _ => unreachable!("one or three passes"),
                };
                let total = secs(t.elapsed());
                stats.0 = update
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                Ok(Run {
                    total,
                    forward: Some(forward),
                    backward: Some(total - forward),
                })
            })?;
            r.check = Some(stats.0);
            r.grad_store_tensors = Some(stats.1);
            r.grad_store_bytes = Some(stats.2);
        }
    }
    r.peak_rss_kib = proc_status_kib("VmHWM");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_sd15_size_and_valid() {
        let unet = unet_config();
        unet.check().unwrap();
        assert_eq!(unet.block_out_channels, [320, 640, 1280, 1280]);
        assert_eq!(unet.heads(0), 8);
        let clip = clip_config();
        assert_eq!((clip.hidden_size, clip.num_hidden_layers), (768, 12));
        let ids = prompt_ids();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids.iter().filter(|&&i| i == LEARNED_ID).count(), 1);
        SchedulerConfig::from_json_str(SCHEDULER, Path::new("<test>")).unwrap();
    }

    #[test]
    fn reads_memory_from_proc() {
        if cfg!(target_os = "linux") {
            let (rss, peak) = (proc_status_kib("VmRSS"), proc_status_kib("VmHWM"));
            assert!(rss > 0 && peak >= rss, "VmRSS {rss} VmHWM {peak}");
        }
        assert_eq!(proc_status_kib("NoSuchField"), 0);
    }
}
