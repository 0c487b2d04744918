//! The CLIP text encoder of Stable Diffusion (transformers' `CLIPTextModel`), in candle.
//!
//! A local implementation rather than candle-transformers' stock one, because Textual
//! Inversion needs (1) learned token embeddings injected into the input and (2) correct
//! gradients: the stock model uses fused layer-norm and softmax kernels that record no
//! backward pass, so no gradient reaches a token embedding. Here layer norm and softmax
//! are the composite (differentiable) versions. Configuration comes from the component's
//! `config.json`; weights load strictly ([`super::weights`]).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use serde::Deserialize;

use super::nn::{LayerNorm, Linear};
use super::precision;
use super::weights::{component_file, Weights};
use super::ModelError;

/// The fields of transformers' `CLIPTextConfig` that shape the computation.
#[derive(Clone, Debug, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}

fn default_eps() -> f64 {
    1e-5
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    /// The frozen token embedding table, `[vocab, hidden]`.
    pub token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    quick_gelu: bool,
    device: Device,
}

impl ClipTextModel {
    /// Load a diffusers `text_encoder/` folder (`config.json` + `model.safetensors`).
    pub fn from_dir(
        dir: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<ClipTextModel, ModelError> {
        let cfg_path = dir.join("config.json");
        let bytes = std::fs::read(&cfg_path).map_err(|e| ModelError::MissingFile {
            path: cfg_path.clone(),
            hint: e.to_string(),
        })?;
        let config: ClipTextConfig = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::bad(&cfg_path, format!("not a CLIPTextConfig: {e}")))?;
        let weights = Weights::load(&component_file(dir, "model")?, dtype, device)?;
        let m = Self::load(config, &weights, device)?;
        weights.finish(&["embeddings.position_ids"])?;
        Ok(m)
    }

    /// Build from already-open weights (a file, or [`Weights::random`] for tiny models).
    pub fn from_weights(
        config: ClipTextConfig,
        w: &Weights,
        device: &Device,
    ) -> Result<ClipTextModel, ModelError> {
        Self::load(config, w, device)
    }

    fn load(
        config: ClipTextConfig,
        w: &Weights,
        device: &Device,
    ) -> Result<ClipTextModel, ModelError> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps;
        let quick_gelu = match config.hidden_act.as_str() {
            "quick_gelu" => true,
            "gelu" => false,
            other => {
                return Err(ModelError::bad(
                    w.path(),
                    format!("unsupported hidden_act `{other}` (quick_gelu or gelu)"),
                ))
            }
        };
        if !h.is_multiple_of(config.num_attention_heads) {
            return Err(ModelError::bad(
                w.path(),
                "hidden_size is not a multiple of num_attention_heads",
            ));
        }
        // Hub checkpoints name tensors `text_model.…`; transformers 5 saves them without it.
        let p = if w.contains("text_model.embeddings.token_embedding.weight") {
            "text_model."
        } else {
            ""
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let n = format!("{p}encoder.layers.{l}");
            layers.push(Layer {
                ln1: LayerNorm::load(w, &format!("{n}.layer_norm1"), h, eps)?,
                q: Linear::load(w, &format!("{n}.self_attn.q_proj"), h, h, true)?,
                k: Linear::load(w, &format!("{n}.self_attn.k_proj"), h, h, true)?,
                v: Linear::load(w, &format!("{n}.self_attn.v_proj"), h, h, true)?,
                out: Linear::load(w, &format!("{n}.self_attn.out_proj"), h, h, true)?,
                ln2: LayerNorm::load(w, &format!("{n}.layer_norm2"), h, eps)?,
                fc1: Linear::load(w, &format!("{n}.mlp.fc1"), h, i, true)?,
                fc2: Linear::load(w, &format!("{n}.mlp.fc2"), i, h, true)?,
            });
        }
        Ok(ClipTextModel {
            token_embedding: w.get(
                &format!("{p}embeddings.token_embedding.weight"),
                &[config.vocab_size, h],
            )?,
            position_embedding: w.get(
                &format!("{p}embeddings.position_embedding.weight"),
                &[config.max_position_embeddings, h],
            )?,
            final_ln: LayerNorm::load(w, &format!("{p}final_layer_norm"), h, eps)?,
            layers,
            quick_gelu,
            device: device.clone(),
            config,
        })
    }

    /// Token embeddings for `ids` (`[batch, seq]`, u32), with the rows of `learned`
    /// `(token id, [hidden] tensor)` used in place of the table's: gradients flow to those
    /// tensors only. Learned ids may lie beyond the frozen table (tokens added for
    /// Textual Inversion).
    pub fn embed(&self, ids: &Tensor, learned: &[(u32, Tensor)]) -> candle_core::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.config.hidden_size;
        let host: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let lookup: Vec<u32> = host
            .iter()
            .map(|&i| {
                if learned.iter().any(|(l, _)| *l == i) {
                    0
                } else {
                    i
                }
            })
            .collect();
        let lookup = Tensor::from_vec(lookup, b * s, ids.device())?;
        let mut x = self
            .token_embedding
            .index_select(&lookup, 0)?
            .reshape((b, s, h))?;
        for (id, row) in learned {
            let mask = ids.eq(*id)?.to_dtype(x.dtype())?.unsqueeze(2)?;
            let keep = mask.affine(-1.0, 1.0)?;
            x = (x.broadcast_mul(&keep)? + mask.broadcast_mul(&row.reshape((1, 1, h))?)?)?;
        }
        Ok(x)
    }

    /// `last_hidden_state` for token embeddings `[batch, seq, hidden]`.
    pub fn forward_embeds(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let hd = h / heads;
        let pos = self.position_embedding.narrow(0, 0, s)?;
        let mut x = x.broadcast_add(&pos)?;
        let mask = causal_mask(s, x.dtype(), &self.device)?;
        let scale = (hd as f64).powf(-0.5);
        for l in &self.layers {
            let r = x.clone();
            let y = l.ln1.forward(&x)?;
            let split = |t: Tensor| t.reshape((b, s, heads, hd))?.transpose(1, 2)?.contiguous();
            let q = split((l.q.forward(&y)? * scale)?)?;
            let k = split(l.k.forward(&y)?)?;
            let v = split(l.v.forward(&y)?)?;
            let att = precision::matmul(&q, &k.t()?)?.broadcast_add(&mask)?;
            let att = precision::softmax_last(&att)?;
            let y = precision::matmul(&att, &v)?
                .transpose(1, 2)?
                .reshape((b, s, h))?;
            x = (r + l.out.forward(&y)?)?;
            let r = x.clone();
            let y = l.fc1.forward(&l.ln2.forward(&x)?)?;
            let y = if self.quick_gelu {
                (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?
            } else {
                y.gelu_erf()?
            };
            x = (r + l.fc2.forward(&y)?)?;
        }
        self.final_ln.forward(&x)
    }

    /// `last_hidden_state` for token ids `[batch, seq]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_embeds(&self.embed(ids, &[])?)
    }
}

/// `[seq, seq]` with a large negative value above the diagonal (transformers uses the
/// dtype's minimum; any value that underflows `exp` to 0 gives the same softmax).
fn causal_mask(s: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..s)
        .flat_map(|i| (0..s).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (s, s), device)?.to_dtype(dtype)
}

impl Module for ClipTextModel {
    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        ClipTextModel::forward(self, ids)
    }
}
