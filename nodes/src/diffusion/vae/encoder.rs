//! The VAE encoder (diffusers `Encoder` with `double_z=True`): image → the parameters of a
//! diagonal Gaussian over latents, `[b, 2·latent_channels, h/2ⁿ, w/2ⁿ]`.
//!
//! `conv_in`, then one `DownEncoderBlock2D` per entry of `block_out_channels`
//! (`layers_per_block` resnets, then a downsampler on all but the last block), the mid
//! block, and `conv_norm_out` → SiLU → `conv_out`. Image sides must be multiples of 2ⁿ
//! (8 for Stable Diffusion) for the latents to map back to the same size.

use candle_core::Tensor;

use crate::diffusion::nn::{silu, Conv2d, GroupNorm, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

use super::config::VaeConfig;
use super::mid_block::MidBlock;
use super::resample::Downsample;
use super::resnet::{load_resnets, ResnetBlock, NORM_EPS};

struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

pub struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<DownBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// Load `encoder.*` as `config` describes it.
    pub fn load(w: &Weights, cfg: &VaeConfig) -> std::result::Result<Encoder, ModelError> {
        let ch = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let last = *ch.last().expect("checked: block_out_channels is not empty");
        let mut blocks = Vec::with_capacity(ch.len());
        let mut inp = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let name = format!("encoder.down_blocks.{i}");
            let resnets = load_resnets(w, &name, cfg.layers_per_block, inp, out, groups)?;
            let downsample = if i + 1 < ch.len() {
                Some(Downsample::load(w, &format!("{name}.downsamplers.0"), out)?)
            } else {
                None
            };
            blocks.push(DownBlock {
                resnets,
                downsample,
            });
            inp = out;
        }
        Ok(Encoder {
            conv_in: Conv2d::load(w, "encoder.conv_in", cfg.in_channels, ch[0], 3, 1, 1)?,
            blocks,
            mid: MidBlock::load(
                w,
                "encoder.mid_block",
                last,
                groups,
                cfg.mid_block_add_attention,
            )?,
            norm_out: GroupNorm::load(w, "encoder.conv_norm_out", groups, last, NORM_EPS)?,
            conv_out: Conv2d::load(
                w,
                "encoder.conv_out",
                last,
                2 * cfg.latent_channels,
                3,
                1,
                1,
            )?,
        })
    }

    /// `[b, in_channels, h, w]` → `[b, 2·latent_channels, h/2ⁿ, w/2ⁿ]` (mean, then logvar).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for block in &self.blocks {
            for r in &block.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = &block.downsample {
                h = d.forward(&h)?;
            }
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward(&silu(&self.norm_out.forward(&h)?)?)
    }
}
