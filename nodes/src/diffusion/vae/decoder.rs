//! The VAE decoder (diffusers `Decoder` with group norm): latents → image.
//!
//! `conv_in` to the widest channel count, the mid block, then one `UpDecoderBlock2D` per
//! entry of `block_out_channels` taken in reverse, each with `layers_per_block + 1`
//! resnets (one more than the encoder's blocks) and an upsampler on all but the last,
//! and `conv_norm_out` → SiLU → `conv_out`.

use candle_core::Tensor;

use crate::diffusion::nn::{silu, Conv2d, GroupNorm, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

use super::config::VaeConfig;
use super::mid_block::MidBlock;
use super::resample::Upsample;
use super::resnet::{load_resnets, ResnetBlock, NORM_EPS};

struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    blocks: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// Load `decoder.*` as `config` describes it.
    pub fn load(w: &Weights, cfg: &VaeConfig) -> std::result::Result<Decoder, ModelError> {
        let groups = cfg.norm_num_groups;
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let widest = reversed[0];
        let narrowest = *reversed
            .last()
            .expect("checked: block_out_channels is not empty");
        let mut blocks = Vec::with_capacity(reversed.len());
        let mut inp = widest;
        for (i, &out) in reversed.iter().enumerate() {
            let name = format!("decoder.up_blocks.{i}");
            let resnets = load_resnets(w, &name, cfg.layers_per_block + 1, inp, out, groups)?;
            let upsample = if i + 1 < reversed.len() {
                Some(Upsample::load(w, &format!("{name}.upsamplers.0"), out)?)
            } else {
                None
            };
            blocks.push(UpBlock { resnets, upsample });
            inp = out;
        }
        Ok(Decoder {
            conv_in: Conv2d::load(w, "decoder.conv_in", cfg.latent_channels, widest, 3, 1, 1)?,
            mid: MidBlock::load(
                w,
                "decoder.mid_block",
                widest,
                groups,
                cfg.mid_block_add_attention,
            )?,
            blocks,
            norm_out: GroupNorm::load(w, "decoder.conv_norm_out", groups, narrowest, NORM_EPS)?,
            conv_out: Conv2d::load(w, "decoder.conv_out", narrowest, cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// `[b, latent_channels, h, w]` → `[b, out_channels, h·2ⁿ, w·2ⁿ]`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for block in &self.blocks {
            for r in &block.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = &block.upsample {
                h = u.forward(&h)?;
            }
        }
        self.conv_out.forward(&silu(&self.norm_out.forward(&h)?)?)
    }
}
