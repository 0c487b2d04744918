//! The model output converted to what a step needs, as diffusers converts it: the
//! predicted clean sample `x₀` (`pred_original_sample`) and the predicted noise `ε`
//! (`pred_epsilon`), from an ε, `x₀` or v prediction at `ᾱ_t`, with float32 coefficients
//! (see `ops.rs`).

use candle_core::Tensor;

use super::config::PredictionType;
use super::error::Result;
use super::ops::{div, mul};

/// `x₀` from `model_output` at `ᾱ_t = a_t`, clamped to `±range` if `clip_range` is set
/// (`clip_sample`).
pub(crate) fn predicted_x0(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    a_t: f32,
    clip_range: Option<f64>,
) -> Result<Tensor> {
    let b_t = 1.0 - a_t;
    let x0 = match prediction {
        PredictionType::Epsilon => div(&(sample - mul(model_output, b_t.sqrt())?)?, a_t.sqrt())?,
        PredictionType::Sample => model_output.clone(),
        PredictionType::VPrediction => (mul(sample, a_t.sqrt())? - mul(model_output, b_t.sqrt())?)?,
    };
    Ok(match clip_range {
        Some(r) => x0.clamp(-r, r)?,
        None => x0,
    })
}

/// `ε` from `model_output` at `ᾱ_t = a_t`.
pub(crate) fn predicted_eps(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    a_t: f32,
) -> Result<Tensor> {
    let b_t = 1.0 - a_t;
    Ok(match prediction {
        PredictionType::Epsilon => model_output.clone(),
        PredictionType::Sample => div(&(sample - mul(model_output, a_t.sqrt())?)?, b_t.sqrt())?,
        PredictionType::VPrediction => (mul(model_output, a_t.sqrt())? + mul(sample, b_t.sqrt())?)?,
    })
}
