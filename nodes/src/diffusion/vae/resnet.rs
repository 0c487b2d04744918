//! The VAE's residual block (diffusers `ResnetBlock2D` without a time embedding).
//!
//! `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with a 1×1 `conv_shortcut` on the
//! skip path when the channel count changes. The VAE never passes a time embedding and
//! uses `output_scale_factor = 1`, so neither appears here; dropout is 0 in every
//! published VAE and absent at inference.

use candle_core::Tensor;

use crate::diffusion::nn::{silu, Conv2d, GroupNorm, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// diffusers builds every VAE group norm with this epsilon (`resnet_eps=1e-6`).
pub const NORM_EPS: f64 = 1e-6;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// Load `{name}.{norm1,conv1,norm2,conv2[,conv_shortcut]}` mapping `inp` → `out` channels.
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
        groups: usize,
    ) -> std::result::Result<ResnetBlock, ModelError> {
        Ok(ResnetBlock {
            norm1: GroupNorm::load(w, &format!("{name}.norm1"), groups, inp, NORM_EPS)?,
            conv1: Conv2d::load(w, &format!("{name}.conv1"), inp, out, 3, 1, 1)?,
            norm2: GroupNorm::load(w, &format!("{name}.norm2"), groups, out, NORM_EPS)?,
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}
