//! Halving and doubling the resolution: diffusers `Downsample2D` / `Upsample2D` as the
//! VAE configures them.
//!
//! **Down**: the encoder builds its downsamplers with `padding=0`, and diffusers then pads
//! asymmetrically — one zero column on the right and one zero row at the bottom
//! (`F.pad(x, (0, 1, 0, 1))`) — before a 3×3 stride-2 convolution. candle's `conv2d` only
//! pads symmetrically, so the padding is explicit here; symmetric padding 1 would shift
//! every latent by half a pixel and fail parity.
//!
//! **Up**: nearest-neighbour ×2 followed by a 3×3 convolution. The ×2 is written as a
//! broadcast (`[b,c,h,1,w,1] → [b,c,h,2,w,2]`) rather than candle's
//! `upsample_nearest2d`, whose backward pass in candle 0.11 *overwrites* the gradient
//! accumulated for its input instead of adding to it; the broadcast's backward is an
//! ordinary sum and the forward values are identical.

use candle_core::Tensor;

use crate::diffusion::nn::{nearest_2x, Conv2d, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// `{name}.conv`: pad right/bottom by one, then a 3×3 stride-2 convolution.
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn load(
        w: &Weights,
        name: &str,
        channels: usize,
    ) -> std::result::Result<Downsample, ModelError> {
        Ok(Downsample {
            conv: Conv2d::load(w, &format!("{name}.conv"), channels, channels, 3, 2, 0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let padded = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        self.conv.forward(&padded)
    }
}

/// Nearest ×2, then `{name}.conv` (3×3, padding 1).
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn load(
        w: &Weights,
        name: &str,
        channels: usize,
    ) -> std::result::Result<Upsample, ModelError> {
        Ok(Upsample {
            conv: Conv2d::load(w, &format!("{name}.conv"), channels, channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&nearest_2x(x)?)
    }
}
