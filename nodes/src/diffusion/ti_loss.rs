//! The Textual Inversion loss of one training step, as diffusers'
//! `examples/textual_inversion/textual_inversion.py` computes it:
//!
//! ```text
//! latents = vae.encode(pixels).latent_dist.sample() * scaling_factor   (encode_latents)
//! noisy   = DDPMScheduler.add_noise(latents, noise, timesteps)
//! context = text_encoder(ids)[0]          with the learned token rows injected
//! pred    = unet(noisy, timesteps, context).sample
//! target  = noise (epsilon) | get_velocity(latents, noise, timesteps) (v_prediction)
//! loss    = mse_loss(pred.float(), target.float(), reduction="mean")
//! ```
//!
//! The learned embeddings are the only trainable tensors: pass each as a candle
//! [`Var`](candle_core::Var)'s tensor in `learned`, and `loss.backward()` yields their
//! gradients. Every model weight is a plain tensor (see [`super::weights`]), so the graph
//! records no gradient for it, and no gradient reaches the other rows of the token table
//! (diffusers computes one for the whole table and then restores every row but the
//! placeholder's; here there is nothing to restore). The latents and the noise are inputs
//! and get no gradient either.
//!
//! Randomness is the caller's, as everywhere in [`super`]: the VAE's sampling noise, the
//! training noise and the timesteps are arguments, so a step is reproducible from its seed
//! and a parity test can replay diffusers' draws.

use candle_core::{DType, Tensor};

use super::clip_text::ClipTextModel;
use super::schedulers::{NoiseSchedule, PredictionType, SchedulerError};
use super::unet::UNet;
use super::vae::AutoencoderKl;

/// One Textual Inversion step's loss and the intermediates it came from.
pub struct TiStep {
    /// The mean squared error over every element of the batch, a 0-d f32 tensor. Call
    /// `backward()` on it for the gradients of the learned embeddings.
    pub loss: Tensor,
    /// `sqrt(ᾱ_t)·latents + sqrt(1 − ᾱ_t)·noise`, in the latents' dtype.
    pub noisy_latents: Tensor,
    /// What the UNet should have predicted: the noise, or the velocity.
    pub target: Tensor,
    /// The UNet's output for the noisy latents.
    pub model_pred: Tensor,
    /// The text encoder's `last_hidden_state` with the learned rows injected, in the
    /// latents' dtype (diffusers casts it to the UNet's `weight_dtype`).
    pub encoder_hidden_states: Tensor,
}

/// The latents a Textual Inversion step trains on: `vae.encode(image)` sampled with
/// `noise` (standard normal, shaped like the latents `[b, latent_channels, h/8, w/8]`),
/// minus the VAE's `shift_factor` when its config sets one (never for SD 1.x / 2.x), times
/// `scaling_factor` (the VAE config's, 0.18215 for SD 1.x / 2.x). `image` is
/// `[b, 3, h, w]` in `[-1, 1]`. This is diffusers'
/// `vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor`.
pub fn encode_latents(
    vae: &AutoencoderKl,
    image: &Tensor,
    noise: &Tensor,
    scaling_factor: f64,
) -> candle_core::Result<Tensor> {
    let z = vae.encode(image)?.sample(noise)?;
    let z = match vae.config.shift_factor {
        Some(shift) => (z - shift)?,
        None => z,
    };
    z * scaling_factor
}

/// The Textual Inversion loss of a batch: noise `latents` (`[b, 4, h, w]`, already
/// scaled, e.g. by [`encode_latents`]) with `noise` (same shape) to `timesteps[i]` for
/// sample `i` on `schedule` (the training schedule, diffusers' `DDPMScheduler` built from
/// the pipeline's scheduler config), encode the prompt `ids` (`[b, tokens]`, u32) with the
/// rows of `learned` (`(token id, [hidden] tensor)`, see [`ClipTextModel::embed`]) in
/// place of the table's, predict with the UNet and take the mean squared error against
/// the target of `prediction` (the noise for `Epsilon`, the velocity for `VPrediction`).
///
/// The latents and the noise should be in the UNet's dtype; the text encoder's output is
/// cast to it. The loss is computed in f32 whatever that dtype is. `PredictionType::Sample`
/// is refused, as diffusers' script refuses it.
#[allow(clippy::too_many_arguments)]
pub fn ti_loss(
    te: &ClipTextModel,
    unet: &UNet,
    schedule: &NoiseSchedule,
    prediction: PredictionType,
    latents: &Tensor,
    noise: &Tensor,
    timesteps: &[usize],
    ids: &Tensor,
    learned: &[(u32, Tensor)],
) -> candle_core::Result<TiStep> {
    let batch = latents.dim(0)?;
    let (id_batch, _) = ids.dims2()?;
    if id_batch != batch {
        candle_core::bail!(
            "textual inversion: {id_batch} prompts for {batch} latents; pass one row of ids per sample"
        );
    }
    let noisy_latents = schedule
        .add_noise(latents, noise, timesteps)
        .map_err(scheduler_error)?;
    let target = match prediction {
        PredictionType::Epsilon => noise.clone(),
        PredictionType::VPrediction => schedule
            .get_velocity(latents, noise, timesteps)
            .map_err(scheduler_error)?,
        PredictionType::Sample => candle_core::bail!(
            "textual inversion: prediction type `sample` is not supported (epsilon or v_prediction)"
        ),
    };
    let encoder_hidden_states = te
        .forward_embeds(&te.embed(ids, learned)?)?
        .to_dtype(latents.dtype())?;
    let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::from_vec(t, batch, latents.device())?;
    let model_pred = unet.forward(&noisy_latents, &t, &encoder_hidden_states)?;
    let diff = (model_pred.to_dtype(DType::F32)? - target.to_dtype(DType::F32)?)?;
    let loss = diff.sqr()?.mean_all()?;
    Ok(TiStep {
        loss,
        noisy_latents,
        target,
        model_pred,
        encoder_hidden_states,
    })
}

/// A scheduler error as a candle error (tensor errors unwrapped, misuse kept as text).
fn scheduler_error(e: SchedulerError) -> candle_core::Error {
    match e {
        SchedulerError::Tensor(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}
