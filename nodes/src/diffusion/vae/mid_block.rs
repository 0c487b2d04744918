//! The VAE's mid block (diffusers `UNetMidBlock2D` with one layer): resnet, attention,
//! resnet, at the lowest resolution and the widest channel count.
//!
//! `mid_block_add_attention = false` (some newer VAEs) drops the attention and keeps both
//! resnets, as diffusers does.

use candle_core::Tensor;

use crate::diffusion::nn::Result;
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

use super::attention::SpatialAttention;
use super::resnet::{self, ResnetBlock};

pub struct MidBlock {
    first: ResnetBlock,
    attention: Option<SpatialAttention>,
    second: ResnetBlock,
}

impl MidBlock {
    /// Load `{name}.resnets.{0,1}` and `{name}.attentions.0`.
    pub fn load(
        w: &Weights,
        name: &str,
        channels: usize,
        groups: usize,
        add_attention: bool,
    ) -> std::result::Result<MidBlock, ModelError> {
        let block = |i: usize| {
            resnet::load(
                w,
                &format!("{name}.resnets.{i}"),
                channels,
                channels,
                groups,
            )
        };
        Ok(MidBlock {
            first: block(0)?,
            attention: if add_attention {
                Some(SpatialAttention::load(
                    w,
                    &format!("{name}.attentions.0"),
                    channels,
                    groups,
                )?)
            } else {
                None
            },
            second: block(1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.second.forward(&h, None)
    }
}
