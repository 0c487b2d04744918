//! diffusers' `ResnetBlock2D`: two group-normed 3×3 convolutions with the time embedding
//! added in between, and a 1×1 shortcut when the channel count changes.

use candle_core::Tensor;

use crate::diffusion::nn::{silu, Conv2d, GroupNorm, Linear, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
        temb: usize,
        groups: usize,
        eps: f64,
    ) -> std::result::Result<Self, ModelError> {
        Ok(ResnetBlock {
            norm1: GroupNorm::load(w, &format!("{name}.norm1"), groups, inp, eps)?,
            conv1: Conv2d::load(w, &format!("{name}.conv1"), inp, out, 3, 1, 1)?,
            time_emb_proj: Linear::load(w, &format!("{name}.time_emb_proj"), temb, out, true)?,
            norm2: GroupNorm::load(w, &format!("{name}.norm2"), groups, out, eps)?,
            conv2: Conv2d::load(w, &format!("{name}.conv2"), out, out, 3, 1, 1)?,
            shortcut: if inp != out {
                Some(Conv2d::load(
                    w,
                    &format!("{name}.conv_shortcut"),
                    inp,
                    out,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
        })
    }

    /// `x`: `[b, c, h, w]`; `temb`: `[b, temb]` (already through its activation).
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let t = self
            .time_emb_proj
            .forward(temb)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        skip + h
    }
}
