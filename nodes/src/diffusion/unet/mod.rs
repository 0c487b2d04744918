//! The denoising UNet of Stable Diffusion 1.x / 2.x (diffusers' `UNet2DConditionModel`).
//!
//! A local implementation, not candle-transformers' stock one, because (see
//! `shared/docs/candle.md`) the stock UNet takes one timestep for the whole batch (training
//! needs one per sample), uses the tanh approximation of gelu, and its fused kernels give
//! wrong gradients w.r.t. the text context. The architecture comes from `config.json`;
//! unsupported options are errors ([`config::UNetConfig::check`]).
//!
//! A [`Lora`] can be attached ([`UNet::set_lora`]): its layers then add `scale · B(A x)` to
//! the transformer blocks' linear layers they name ([`UNet::lora_sites`]).

pub mod config;
mod transformer;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use self::config::UNetConfig;
use self::transformer::Transformer2D;
use super::lora::{Lora, LoraSite};
use super::nn::{nearest_2x, silu, Conv2d, GroupNorm, Linear, Result};
use super::resnet::ResnetBlock;
use super::weights::{component_file, Weights};
use super::ModelError;

struct Down {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Conv2d>,
}

struct Up {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Conv2d>,
}

pub struct UNet {
    pub config: UNetConfig,
    time_1: Linear,
    time_2: Linear,
    conv_in: Conv2d,
    down: Vec<Down>,
    mid_resnets: Vec<ResnetBlock>,
    mid_attention: Transformer2D,
    up: Vec<Up>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    lora: Option<Lora>,
}

impl UNet {
    /// Load a diffusers `unet/` folder.
    pub fn from_dir(
        dir: &Path,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<UNet, ModelError> {
        let cfg_path = dir.join("config.json");
        let bytes = std::fs::read(&cfg_path).map_err(|e| ModelError::MissingFile {
            path: cfg_path.clone(),
            hint: e.to_string(),
        })?;
        let config: UNetConfig = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::bad(&cfg_path, format!("not a UNet2DConditionModel config: {e}"))
        })?;
        config.check().map_err(|e| ModelError::bad(&cfg_path, e))?;
        let w = Weights::load(
            &component_file(dir, "diffusion_pytorch_model")?,
            dtype,
            device,
        )?;
        let unet = Self::load(config, &w)?;
        w.finish(&[])?;
        Ok(unet)
    }

    /// Build from already-open weights (a file, or [`Weights::random`] for tiny models).
    pub fn from_weights(config: UNetConfig, w: &Weights) -> std::result::Result<UNet, ModelError> {
        config.check().map_err(|e| ModelError::bad(w.path(), e))?;
        Self::load(config, w)
    }

    fn load(config: UNetConfig, w: &Weights) -> std::result::Result<UNet, ModelError> {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let temb = config.time_embedding_dim.unwrap_or(ch[0] * 4);
        let ctx = config.cross_attention_dim;
        let tl = config.transformer_layers_per_block;
        let lin = config.use_linear_projection;
        let attn = |name: &str, c: usize, heads: usize| {
            Transformer2D::load(w, name, c, heads, tl, ctx, groups, lin)
        };
        let resnet = |name: &str, inp: usize, out: usize| {
            ResnetBlock::load(w, name, inp, out, Some(temb), groups, eps)
        };
        let mut down = Vec::with_capacity(n);
        let mut out_c = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let cross = config.down_block_types[i] == "CrossAttnDownBlock2D";
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..config.layers_per_block {
                let name = format!("down_blocks.{i}");
                resnets.push(resnet(
                    &format!("{name}.resnets.{j}"),
                    if j == 0 { in_c } else { out_c },
                    out_c,
                )?);
                if cross {
                    attentions.push(attn(
                        &format!("{name}.attentions.{j}"),
                        out_c,
                        config.heads(i),
                    )?);
                }
            }
            let downsample = if i + 1 < n {
                Some(Conv2d::load(
                    w,
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    out_c,
                    out_c,
                    3,
                    2,
                    config.downsample_padding,
                )?)
            } else {
                None
            };
            down.push(Down {
                resnets,
                attentions,
                downsample,
            });
        }
        let last = ch[n - 1];
        let mid_resnets = vec![
            resnet("mid_block.resnets.0", last, last)?,
            resnet("mid_block.resnets.1", last, last)?,
        ];
        let mid_attention = attn("mid_block.attentions.0", last, config.heads(n - 1))?;
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut prev = rev[0];
        for i in 0..n {
            let out = rev[i];
            let input = rev[(i + 1).min(n - 1)];
            let cross = config.up_block_types[i] == "CrossAttnUpBlock2D";
            let layers = config.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let res_in = if j == 0 { prev } else { out };
                let name = format!("up_blocks.{i}");
                resnets.push(resnet(&format!("{name}.resnets.{j}"), res_in + skip, out)?);
                if cross {
                    attentions.push(attn(
                        &format!("{name}.attentions.{j}"),
                        out,
                        config.heads(n - 1 - i),
                    )?);
                }
            }
            let upsample = if i + 1 < n {
                Some(Conv2d::load(
                    w,
                    &format!("up_blocks.{i}.upsamplers.0.conv"),
                    out,
                    out,
                    3,
                    1,
                    1,
                )?)
            } else {
                None
            };
            up.push(Up {
                resnets,
                attentions,
                upsample,
            });
            prev = out;
        }
        Ok(UNet {
            time_1: Linear::load(w, "time_embedding.linear_1", ch[0], temb, true)?,
            time_2: Linear::load(w, "time_embedding.linear_2", temb, temb, true)?,
            conv_in: Conv2d::load(w, "conv_in", config.in_channels, ch[0], 3, 1, 1)?,
            down,
            mid_resnets,
            mid_attention,
            up,
            norm_out: GroupNorm::load(w, "conv_norm_out", groups, ch[0], eps)?,
            conv_out: Conv2d::load(w, "conv_out", ch[0], config.out_channels, 3, 1, 1)?,
            config,
            lora: None,
        })
    }

    /// Every linear layer a LoRA can adapt (the transformer blocks' attention projections
    /// and feed-forward layers, and linear `proj_in`/`proj_out`), with diffusers' module names,
    /// in forward order: down blocks, mid block, up blocks.
    pub fn lora_sites(&self) -> Vec<LoraSite> {
        let mut out = Vec::new();
        for d in &self.down {
            for a in &d.attentions {
                a.sites(&mut out);
            }
        }
        self.mid_attention.sites(&mut out);
        for u in &self.up {
            for a in &u.attentions {
                a.sites(&mut out);
            }
        }
        out
    }

    /// Attach `lora` (or detach with `None`). Every layer must name a [`Self::lora_sites`]
    /// entry, with `A` `[rank, in]` and `B` `[out, rank]`; errors name the first that does not.
    pub fn set_lora(&mut self, lora: Option<Lora>) -> std::result::Result<(), String> {
        if let Some(l) = &lora {
            let sites = self.lora_sites();
            for (name, layer) in &l.layers {
                let Some(site) = sites.iter().find(|s| &s.name == name) else {
                    return Err(format!(
                        "LoRA layer `{name}` names no linear layer of this UNet's transformer blocks"
                    ));
                };
                let r = layer.rank();
                if layer.a.dims() != [r, site.in_dim] || layer.b.dims() != [site.out_dim, r] {
                    return Err(format!(
                        "LoRA layer `{name}`: lora_A is {:?} and lora_B {:?}; this UNet needs [r, {}] and [{}, r]",
                        layer.a.dims(),
                        layer.b.dims(),
                        site.in_dim,
                        site.out_dim
                    ));
                }
            }
        }
        self.lora = lora;
        Ok(())
    }

    /// The attached LoRA, if any.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// The dtype the weights were loaded in.
    pub fn dtype(&self) -> DType {
        self.conv_in.w.dtype()
    }

    /// diffusers' `get_timestep_embedding`: sinusoids of the (per-sample) timesteps.
    fn time_proj(&self, t: &Tensor) -> Result<Tensor> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let shift = self.config.freq_shift;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (-(10000f64.ln()) * i as f64 / (half as f64 - shift)).exp() as f32)
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        let emb = if self.config.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)?
        } else {
            Tensor::cat(&[sin, cos], 1)?
        };
        emb.to_dtype(self.conv_in.w.dtype())
    }

    /// The predicted noise (or velocity) for `sample` `[b, 4, h, w]` at `timesteps` `[b]`
    /// (one per sample), conditioned on `context` `[b, tokens, cross_attention_dim]`.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        let lora = self.lora.as_ref();
        let temb = self
            .time_2
            .forward(&silu(&self.time_1.forward(&self.time_proj(timesteps)?)?)?)?;
        // Every ResnetBlock applies silu to the embedding first.
        let temb = silu(&temb)?;
        let mut x = self.conv_in.forward(sample)?;
        let mut skips = vec![x.clone()];
        for d in &self.down {
            for (j, r) in d.resnets.iter().enumerate() {
                x = r.forward(&x, Some(&temb))?;
                if let Some(a) = d.attentions.get(j) {
                    x = a.forward(&x, context, lora)?;
                }
                skips.push(x.clone());
            }
            if let Some(ds) = &d.downsample {
                x = ds.forward(&x)?;
                skips.push(x.clone());
            }
        }
        x = self.mid_resnets[0].forward(&x, Some(&temb))?;
        x = self.mid_attention.forward(&x, context, lora)?;
        x = self.mid_resnets[1].forward(&x, Some(&temb))?;
        for u in &self.up {
            for (j, r) in u.resnets.iter().enumerate() {
                let skip = skips.pop().expect("a skip connection per up resnet");
                x = r.forward(&Tensor::cat(&[&x, &skip], 1)?, Some(&temb))?;
                if let Some(a) = u.attentions.get(j) {
                    x = a.forward(&x, context, lora)?;
                }
            }
            if let Some(us) = &u.upsample {
                x = us.forward(&nearest_2x(&x)?)?;
            }
        }
        self.conv_out.forward(&silu(&self.norm_out.forward(&x)?)?)
    }
}
