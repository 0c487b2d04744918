//! BLIP's text decoder (transformers' `BlipTextLMHeadModel`), in candle, with a KV cache.
//!
//! A BERT-base decoder: word + position embeddings and a layer norm, then post-norm layers
//! of causal self-attention, cross-attention over the image tokens and a GELU feed-forward
//! block, then the masked-LM head (dense, GELU, layer norm, a projection tied to the word
//! embeddings plus `cls.predictions.bias`). Weights: `text_decoder.bert.*`,
//! `text_decoder.cls.*`.
//!
//! Decoding keeps, per layer, the self-attention keys and values of every position so far
//! and the cross-attention keys and values of the image (computed once per image), so each
//! new token costs one position's work, as transformers' `EncoderDecoderCache`.

use candle_core::{DType, Device, Result, Tensor};

use super::blip_config::{Activation, BlipTextConfig};
use super::layers::{attention, split_heads, LayerNorm, Linear};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

struct AttentionBlock {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    ln: LayerNorm,
}

impl AttentionBlock {
    fn load(
        w: &Weights,
        name: &str,
        h: usize,
        kv_in: usize,
        eps: f64,
    ) -> std::result::Result<AttentionBlock, ModelError> {
        Ok(AttentionBlock {
            query: Linear::load(w, &format!("{name}.self.query"), h, h)?,
            key: Linear::load(w, &format!("{name}.self.key"), kv_in, h)?,
            value: Linear::load(w, &format!("{name}.self.value"), kv_in, h)?,
            dense: Linear::load(w, &format!("{name}.output.dense"), h, h)?,
            ln: LayerNorm::load(w, &format!("{name}.output.LayerNorm"), h, eps)?,
        })
    }
}

struct DecoderLayer {
    attention: AttentionBlock,
    crossattention: AttentionBlock,
    intermediate: Linear,
    output: Linear,
    output_ln: LayerNorm,
}

/// What decoding has computed so far for a batch of captions.
pub struct DecoderCache {
    /// Per layer: self-attention keys and values, `[batch, heads, positions, d]`.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per layer: the image tokens' keys and values, `[batch, heads, tokens, d]`.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Positions processed so far.
    len: usize,
}

impl DecoderCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep only the batch rows `rows` (captions still being generated).
    pub fn select(&self, rows: &[u32]) -> Result<DecoderCache> {
        let device = self.cross_kv[0].0.device();
        let idx = Tensor::new(rows, device)?;
        let pick = |t: &Tensor| t.index_select(&idx, 0);
        Ok(DecoderCache {
            self_kv: self
                .self_kv
                .iter()
                .map(|kv| match kv {
                    Some((k, v)) => Ok(Some((pick(k)?, pick(v)?))),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?,
            cross_kv: self
                .cross_kv
                .iter()
                .map(|(k, v)| Ok((pick(k)?, pick(v)?)))
                .collect::<Result<_>>()?,
            len: self.len,
        })
    }
}

pub struct BlipTextDecoder {
    config: BlipTextConfig,
    act: Activation,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_ln: LayerNorm,
    layers: Vec<DecoderLayer>,
    transform: Linear,
    transform_ln: LayerNorm,
    /// The LM projection `[vocab, hidden]` and its bias `[vocab]`.
    lm_weight: Tensor,
    lm_bias: Tensor,
    device: Device,
}

impl BlipTextDecoder {
    /// Load `{prefix}bert.*` and `{prefix}cls.*`; `encoder_hidden` is the vision width.
    /// With `tie_word_embeddings` (the hub models) the LM projection is the word embedding
    /// table and its bias `cls.predictions.bias`, as in transformers; copies of them saved
    /// as `cls.predictions.decoder.{weight,bias}` are accepted (checked for shape) and
    /// ignored, as transformers ignores them.
    pub fn load(
        config: &BlipTextConfig,
        encoder_hidden: usize,
        tie_word_embeddings: bool,
        w: &Weights,
        prefix: &str,
        device: &Device,
    ) -> std::result::Result<BlipTextDecoder, ModelError> {
        let (h, i, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let eps = config.layer_norm_eps;
        let act = Activation::parse(&config.hidden_act).ok_or_else(|| {
            ModelError::bad(
                w.path(),
                format!("unsupported hidden_act `{}`", config.hidden_act),
            )
        })?;
        let e = format!("{prefix}bert.embeddings");
        let word_embeddings = w.get(&format!("{e}.word_embeddings.weight"), &[v, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let n = format!("{prefix}bert.encoder.layer.{l}");
            layers.push(DecoderLayer {
                attention: AttentionBlock::load(w, &format!("{n}.attention"), h, h, eps)?,
                crossattention: AttentionBlock::load(
                    w,
                    &format!("{n}.crossattention"),
                    h,
                    encoder_hidden,
                    eps,
                )?,
                intermediate: Linear::load(w, &format!("{n}.intermediate.dense"), h, i)?,
                output: Linear::load(w, &format!("{n}.output.dense"), i, h)?,
                output_ln: LayerNorm::load(w, &format!("{n}.output.LayerNorm"), h, eps)?,
            });
        }
        let p = format!("{prefix}cls.predictions");
        let bias = w.get(&format!("{p}.bias"), &[v])?;
        let (dw, db) = (format!("{p}.decoder.weight"), format!("{p}.decoder.bias"));
        let (lm_weight, lm_bias) = if tie_word_embeddings {
            for (name, shape) in [(&dw, vec![v, h]), (&db, vec![v])] {
                if w.contains(name) {
                    w.get(name, &shape)?;
                }
            }
            (word_embeddings.clone(), bias)
        } else {
            let lm_bias = if w.contains(&db) {
                w.get(&db, &[v])?
            } else {
                bias
            };
            (w.get(&dw, &[v, h])?, lm_bias)
        };
        Ok(BlipTextDecoder {
            act,
            position_embeddings: w.get(
                &format!("{e}.position_embeddings.weight"),
                &[config.max_position_embeddings, h],
            )?,
            embeddings_ln: LayerNorm::load(w, &format!("{e}.LayerNorm"), h, eps)?,
            word_embeddings,
            layers,
            transform: Linear::load(w, &format!("{p}.transform.dense"), h, h)?,
            transform_ln: LayerNorm::load(w, &format!("{p}.transform.LayerNorm"), h, eps)?,
            lm_weight,
            lm_bias,
            device: device.clone(),
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &BlipTextConfig {
        &self.config
    }

    /// A fresh cache for a batch of images' `last_hidden_state` `[batch, tokens, width]`:
    /// every layer's cross-attention keys and values.
    pub fn start(&self, image_embeds: &Tensor) -> Result<DecoderCache> {
        let heads = self.config.num_attention_heads;
        let cross_kv = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.crossattention;
                Ok((
                    split_heads(&a.key.forward(image_embeds)?, heads)?,
                    split_heads(&a.value.forward(image_embeds)?, heads)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(DecoderCache {
            self_kv: vec![None; self.layers.len()],
            cross_kv,
            len: 0,
        })
    }

    /// Feed `ids` `[batch, n]` (the positions after the cached ones) and return the logits
    /// for the token after the last of them, `[batch, vocab]`.
    pub fn step(&self, ids: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let start = cache.len;
        if start + n > self.config.max_position_embeddings {
            candle_core::bail!(
                "{} positions exceed max_position_embeddings ({})",
                start + n,
                self.config.max_position_embeddings
            );
        }
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let words = self
            .word_embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, n, h))?;
        let pos = self.position_embeddings.narrow(0, start, n)?;
        let mut x = self.embeddings_ln.forward(&words.broadcast_add(&pos)?)?;
        let mask = if n > 1 {
            Some(causal_mask(start, n, x.dtype(), &self.device)?)
        } else {
            None
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // Causal self-attention over the cache and the new positions.
            let a = &layer.attention;
            let q = split_heads(&a.query.forward(&x)?, heads)?;
            let k = split_heads(&a.key.forward(&x)?, heads)?;
            let v = split_heads(&a.value.forward(&x)?, heads)?;
            let (k, v) = match &cache.self_kv[l] {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            let y = attention(&q, &k, &v, scale, mask.as_ref())?;
            cache.self_kv[l] = Some((k, v));
            x = a.ln.forward(&(a.dense.forward(&y)? + &x)?)?;
            // Cross-attention over the image tokens.
            let c = &layer.crossattention;
            let q = split_heads(&c.query.forward(&x)?, heads)?;
            let (ck, cv) = &cache.cross_kv[l];
            let y = attention(&q, ck, cv, scale, None)?;
            x = c.ln.forward(&(c.dense.forward(&y)? + &x)?)?;
            // Feed-forward.
            let y = self.act.forward(&layer.intermediate.forward(&x)?)?;
            x = layer
                .output_ln
                .forward(&(layer.output.forward(&y)? + &x)?)?;
        }
        cache.len = start + n;
        let last = x.narrow(1, n - 1, 1)?.reshape((b, h))?;
        let t = self
            .transform_ln
            .forward(&self.act.forward(&self.transform.forward(&last)?)?)?;
        t.matmul(&self.lm_weight.t()?)?.broadcast_add(&self.lm_bias)
    }
}

/// `[n, start + n]`: new position `i` sees every cached position and new ones `≤ i`
/// (transformers adds the dtype's minimum elsewhere; any value that underflows `exp` gives
/// the same softmax).
fn causal_mask(start: usize, n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let total = start + n;
    let v: Vec<f32> = (0..n)
        .flat_map(|i| (0..total).map(move |j| if j > start + i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(v, (n, total), device)?.to_dtype(dtype)
}
