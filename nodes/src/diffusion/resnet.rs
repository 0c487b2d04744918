//! diffusers' `ResnetBlock2D`, shared by the UNet and the VAE.
//!
//! `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(temb))))`, with a
//! 1×1 `conv_shortcut` on the skip path when the channel count changes. The UNet's blocks
//! add the projected time embedding between the two convolutions; the VAE's take none
//! (diffusers' `temb_channels=None`), so they have no `time_emb_proj`. Both use the
//! default time-embedding norm (an addition) and `output_scale_factor = 1`; dropout is 0
//! in every published model and absent at inference.

use candle_core::Tensor;

use super::nn::{silu, Conv2d, GroupNorm, Linear, Result};
use super::weights::Weights;
use super::ModelError;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// Load `{name}.{norm1,conv1[,time_emb_proj],norm2,conv2[,conv_shortcut]}` mapping
    /// `inp` → `out` channels; `temb` is the width of the time embedding, for a block that
    /// takes one.
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> std::result::Result<ResnetBlock, ModelError> {
        Ok(ResnetBlock {
            norm1: GroupNorm::load(w, &format!("{name}.norm1"), groups, inp, eps)?,
            conv1: Conv2d::load(w, &format!("{name}.conv1"), inp, out, 3, 1, 1)?,
            time_emb_proj: match temb {
                Some(temb) => Some(Linear::load(
                    w,
                    &format!("{name}.time_emb_proj"),
                    temb,
                    out,
                    true,
                )?),
                None => None,
            },
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

    /// `x`: `[b, c, h, w]`; `temb`: `[b, temb]` (already through its activation), given
    /// exactly when the block was loaded with a time embedding.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                h.broadcast_add(&proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?
            }
            (None, None) => h,
            (Some(_), None) => candle_core::bail!("this resnet block needs a time embedding"),
            (None, Some(_)) => candle_core::bail!("this resnet block takes no time embedding"),
        };
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}
