//! Guided sampling, as diffusers' `StableDiffusionPipeline.__call__` does it.
//!
//! Classifier-free guidance runs the UNet once on `[negative × B ; prompt × B]` with the
//! latents duplicated the same way, then combines `uncond + g · (cond − uncond)`
//! (candle-transformers' example pairs them wrongly for B > 1). Every random draw comes
//! from the items' own seeds, so an item's image does not depend on its batch.

use candle_core::{DType, Tensor};

use super::noise;
use super::pipeline::StableDiffusion;
use super::schedulers::{build, timestep_input, SchedulerKind};
use super::SdError;

#[derive(Clone, Debug)]
pub struct SampleSettings {
    /// `None`: the scheduler named in the model's `scheduler_config.json`.
    pub scheduler: Option<SchedulerKind>,
    pub steps: usize,
    pub guidance: f64,
    pub width: usize,
    pub height: usize,
    /// DDIM's eta (0 = deterministic).
    pub eta: f64,
}

/// The shape of one item's latents, `[1, 4, h/8, w/8]`.
pub fn latent_shape(sd: &StableDiffusion, s: &SampleSettings) -> Result<[usize; 4], SdError> {
    let f = sd.vae_scale();
    if !s.width.is_multiple_of(f) || !s.height.is_multiple_of(f) {
        return Err(SdError::Input(format!(
            "image size {}×{} must be a multiple of {f}",
            s.width, s.height
        )));
    }
    let c = sd.unet.config.in_channels;
    Ok([1, c, s.height / f, s.width / f])
}

/// Latents `[1, 4, h/8, w/8]` for one item: its own initial noise.
pub fn initial_latents(
    sd: &StableDiffusion,
    s: &SampleSettings,
    seed: u64,
) -> Result<Tensor, SdError> {
    Ok(noise::gaussian(
        noise::derive(seed, "initial-latents", 0),
        &latent_shape(sd, s)?,
        &sd.device,
    )?)
}

/// Denoise `latents` `[B, 4, h, w]` (standard normal; scaled by the scheduler here) under
/// `prompts`/`negatives` embeddings `[B, 77, d]`. `seeds` (one per item) feed stochastic
/// schedulers. `on_step(i, n)` reports progress. Returns the final latents.
pub fn denoise(
    sd: &StableDiffusion,
    s: &SampleSettings,
    prompts: &Tensor,
    negatives: &Tensor,
    latents: &Tensor,
    seeds: &[u64],
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor, SdError> {
    let b = latents.dim(0)?;
    if seeds.len() != b || prompts.dim(0)? != b || negatives.dim(0)? != b {
        return Err(SdError::Input(
            "one prompt, negative prompt, latent and seed per item".into(),
        ));
    }
    let mut scheduler = build(&sd.scheduler_config, s.scheduler, s.eta)?;
    scheduler.set_timesteps(s.steps)?;
    let timesteps = scheduler.timesteps().to_vec();
    let guided = s.guidance > 1.0;
    let context = if guided {
        Tensor::cat(&[negatives, prompts], 0)?
    } else {
        prompts.clone()
    };
    let dtype = sd.unet.dtype();
    let context = context.to_dtype(dtype)?;
    let mut x = (latents * scheduler.init_noise_sigma())?;
    for (i, &t) in timesteps.iter().enumerate() {
        let input = if guided {
            Tensor::cat(&[&x, &x], 0)?
        } else {
            x.clone()
        };
        let input = scheduler.scale_model_input(&input, t)?;
        let tt = timestep_input(t, input.dim(0)?, &sd.device)?;
        let pred = sd
            .unet
            .forward(&input.to_dtype(dtype)?, &tt, &context)?
            .to_dtype(DType::F32)?;
        let pred = if guided {
            let uncond = pred.narrow(0, 0, b)?;
            let cond = pred.narrow(0, b, b)?;
            (&uncond + ((cond - &uncond)? * s.guidance)?)?
        } else {
            pred
        };
        let noise = if scheduler.needs_noise(t) {
            let per_item: Vec<Tensor> = seeds
                .iter()
                .map(|&seed| {
                    noise::gaussian(
                        noise::derive(seed, "step", i as u64),
                        &[&[1], &x.dims()[1..]].concat(),
                        &sd.device,
                    )
                })
                .collect::<candle_core::Result<_>>()?;
            Some(Tensor::cat(&per_item, 0)?)
        } else {
            None
        };
        x = scheduler.step(&pred, t, &x, noise.as_ref())?;
        on_step(i + 1, timesteps.len());
    }
    Ok(x)
}

/// Decode latents to images in `[0, 1]`, `[B, 3, H, W]`.
pub fn decode(sd: &StableDiffusion, latents: &Tensor) -> Result<Tensor, SdError> {
    let cfg = &sd.vae.config;
    let mut z = (latents.to_dtype(DType::F32)? / cfg.scaling_factor)?;
    if let Some(shift) = cfg.shift_factor {
        z = (z + shift)?;
    }
    let img = sd.vae.decode(&z)?;
    Ok(((img / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
}

/// One image `[3, H, W]` in `[0, 1]` → RGB8, rounded like diffusers' `numpy_to_pil`.
pub fn to_rgb8(img: &Tensor) -> Result<image::RgbImage, SdError> {
    let (c, h, w) = img.dims3()?;
    if c != 3 {
        return Err(SdError::Input(format!("expected 3 channels, got {c}")));
    }
    let hwc: Vec<f32> = img.permute((1, 2, 0))?.flatten_all()?.to_vec1()?;
    let bytes = hwc
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| SdError::Input("image size mismatch".into()))
}
