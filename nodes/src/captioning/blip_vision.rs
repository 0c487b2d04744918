//! BLIP's vision encoder (transformers' `BlipVisionModel`), in candle.
//!
//! A ViT: 16×16 patches embedded by a strided convolution (computed here as one matmul over
//! the unfolded patches, the same sums), a class token, learned position embeddings, then
//! pre-norm encoder layers (fused qkv projection, softmax attention, GELU MLP) and a final
//! layer norm. Its `last_hidden_state` (class token included) is what the text decoder
//! cross-attends to. Weights: `vision_model.*`.

use candle_core::{Result, Tensor};

use super::blip_config::{Activation, BlipVisionConfig};
use super::layers::{attention, LayerNorm, Linear};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

struct EncoderLayer {
    ln1: LayerNorm,
    qkv: Linear,
    projection: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct BlipVisionModel {
    config: BlipVisionConfig,
    act: Activation,
    /// Patch embedding as a linear map of the flattened `[3, p, p]` patch.
    patch: Linear,
    class_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
}

impl BlipVisionModel {
    /// Load `{prefix}embeddings.*`, `{prefix}encoder.layers.*`, `{prefix}post_layernorm.*`.
    pub fn load(
        config: &BlipVisionConfig,
        w: &Weights,
        prefix: &str,
    ) -> std::result::Result<BlipVisionModel, ModelError> {
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let (ph, pw) = config.patch_size.hw();
        let act = Activation::parse(&config.hidden_act).ok_or_else(|| {
            ModelError::bad(
                w.path(),
                format!("unsupported hidden_act `{}`", config.hidden_act),
            )
        })?;
        let e = format!("{prefix}embeddings");
        let conv = w.get(&format!("{e}.patch_embedding.weight"), &[h, 3, ph, pw])?;
        let patch = Linear::from_parts(
            conv.reshape((h, 3 * ph * pw))
                .map_err(|err| ModelError::bad(w.path(), err))?,
            w.get(&format!("{e}.patch_embedding.bias"), &[h])?,
        );
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let n = format!("{prefix}encoder.layers.{l}");
            layers.push(EncoderLayer {
                ln1: LayerNorm::load(w, &format!("{n}.layer_norm1"), h, eps)?,
                qkv: Linear::load(w, &format!("{n}.self_attn.qkv"), h, 3 * h)?,
                projection: Linear::load(w, &format!("{n}.self_attn.projection"), h, h)?,
                ln2: LayerNorm::load(w, &format!("{n}.layer_norm2"), h, eps)?,
                fc1: Linear::load(w, &format!("{n}.mlp.fc1"), h, i)?,
                fc2: Linear::load(w, &format!("{n}.mlp.fc2"), i, h)?,
            });
        }
        Ok(BlipVisionModel {
            act,
            patch,
            class_embedding: w.get(&format!("{e}.class_embedding"), &[1, 1, h])?,
            position_embedding: w.get(
                &format!("{e}.position_embedding"),
                &[1, config.num_positions(), h],
            )?,
            layers,
            post_layernorm: LayerNorm::load(w, &format!("{prefix}post_layernorm"), h, eps)?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &BlipVisionConfig {
        &self.config
    }

    /// `last_hidden_state` `[batch, 1 + patches, hidden]` of `pixel_values`
    /// `[batch, 3, height, width]` (exactly the configured image size).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, ih, iw) = pixel_values.dims4()?;
        let (eh, ew) = self.config.image_hw();
        if c != 3 || (ih, iw) != (eh, ew) {
            candle_core::bail!("pixel_values are {b}×{c}×{ih}×{iw}; the model takes ×3×{eh}×{ew}");
        }
        let (ph, pw) = self.config.patch_size.hw();
        let (gh, gw) = self.config.grid();
        let h = self.config.hidden_size;
        // Unfold into patches: [b, gh, gw, 3, ph, pw] → [b·gh·gw, 3·ph·pw].
        let patches = pixel_values
            .reshape((b, 3, gh, ph, gw, pw))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, gh * gw, 3 * ph * pw))?;
        let x = self.patch.forward(&patches)?;
        let cls = self.class_embedding.broadcast_as((b, 1, h))?;
        let mut x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embedding)?;
        let heads = self.config.num_attention_heads;
        let hd = h / heads;
        let scale = (hd as f64).powf(-0.5);
        let s = x.dim(1)?;
        for l in &self.layers {
            let y = l.ln1.forward(&x)?;
            // [b, s, 3, heads, hd] → [3, b, heads, s, hd]
            let qkv = l
                .qkv
                .forward(&y)?
                .reshape((b, s, 3, heads, hd))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let y = attention(&q, &k, &v, scale, None)?;
            x = (x + l.projection.forward(&y)?)?;
            let y = l.fc1.forward(&l.ln2.forward(&x)?)?;
            x = (x + l.fc2.forward(&self.act.forward(&y)?)?)?;
        }
        self.post_layernorm.forward(&x)
    }
}
