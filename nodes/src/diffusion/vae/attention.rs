//! The VAE mid block's spatial self-attention (diffusers `Attention` with
//! `_from_deprecated_attn_block=True`).
//!
//! Every pixel attends to every other pixel of the same image: group norm, `[b, c, h, w]`
//! → `[b, h·w, c]`, a single head (diffusers sets `attention_head_dim` to the channel
//! count) with scale `c^-½`, the output projection, back to `[b, c, h, w]`, plus the
//! input (`residual_connection=True`, `rescale_output_factor=1`).
//!
//! Weight names: current diffusers saves `to_q`, `to_k`, `to_v`, `to_out.0` as linear
//! layers. Older diffusers checkpoints name them `query`, `key`, `value`, `proj_attn`
//! (diffusers renames them on load), and conversions of original LDM checkpoints may
//! keep the 1×1-convolution shape `[c, c, 1, 1]`; both are accepted here, since the
//! arithmetic is the same.

use candle_core::Tensor;

use crate::diffusion::nn::{attention, GroupNorm, Linear, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

use super::resnet::NORM_EPS;

pub struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    channels: usize,
}

impl SpatialAttention {
    pub fn load(
        w: &Weights,
        name: &str,
        channels: usize,
        groups: usize,
    ) -> std::result::Result<SpatialAttention, ModelError> {
        let proj = |new: &str, legacy: &str| projection(w, name, new, legacy, channels);
        Ok(SpatialAttention {
            norm: GroupNorm::load(w, &format!("{name}.group_norm"), groups, channels, NORM_EPS)?,
            q: proj("to_q", "query")?,
            k: proj("to_k", "key")?,
            v: proj("to_v", "value")?,
            out: proj("to_out.0", "proj_attn")?,
            channels,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.q.forward(&tokens)?;
        let k = self.k.forward(&tokens)?;
        let v = self.v.forward(&tokens)?;
        let y = attention(&q, &k, &v, (self.channels as f64).powf(-0.5))?;
        let y = self
            .out
            .forward(&y)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        x + y
    }
}

/// `{name}.{new}` (or the legacy `{name}.{legacy}` when only that exists), stored either as
/// a linear weight `[c, c]` or a 1×1 convolution `[c, c, 1, 1]`, with a bias.
fn projection(
    w: &Weights,
    name: &str,
    new: &str,
    legacy: &str,
    c: usize,
) -> std::result::Result<Linear, ModelError> {
    let pick = if !w.contains(&format!("{name}.{new}.weight"))
        && w.contains(&format!("{name}.{legacy}.weight"))
    {
        legacy
    } else {
        new
    };
    let full = format!("{name}.{pick}");
    // The linear shape first: its error (missing tensor, wrong shape) is the one reported.
    Linear::load(w, &full, c, c, true)
        .or_else(|linear_err| Linear::load_conv1x1(w, &full, c, c).map_err(|_| linear_err))
}
