//! The layers BLIP is made of, loaded strictly from [`Weights`], for inference.
//!
//! Captioning needs no gradients, so these use candle's fused kernels (layer norm, softmax
//! over the last dimension), unlike the diffusion layers (`diffusion::nn`), which must
//! record a backward pass for Textual Inversion.

use candle_core::{Result, Tensor};

use super::fast_ops::scaled_softmax;
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// `y = x Wᵀ + b` over the last dimension (leading dimensions flattened into one matmul).
pub struct Linear {
    /// `[out, in]`, as stored.
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
    ) -> std::result::Result<Linear, ModelError> {
        Ok(Linear {
            w: w.get(&format!("{name}.weight"), &[out, inp])?,
            b: w.get(&format!("{name}.bias"), &[out])?,
        })
    }

    pub fn from_parts(w: Tensor, b: Tensor) -> Linear {
        Linear { w, b }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let inp = *dims.last().expect("rank ≥ 1");
        let rows = x.elem_count() / inp.max(1);
        let y = x
            .reshape((rows, inp))?
            .matmul(&self.w.t()?)?
            .broadcast_add(&self.b)?;
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank ≥ 1") = self.w.dim(0)?;
        y.reshape(out)
    }
}

/// Layer norm over the last dimension (fused kernel).
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub fn load(
        w: &Weights,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> std::result::Result<LayerNorm, ModelError> {
        Ok(LayerNorm {
            w: w.get(&format!("{name}.weight"), &[dim])?,
            b: w.get(&format!("{name}.bias"), &[dim])?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps)
    }
}

/// `[batch, seq, heads·d]` → `[batch, heads, seq, d]` (contiguous).
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, h) = x.dims3()?;
    x.reshape((b, s, heads, h / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Softmax attention of `q` `[b, heads, n, d]` over `k`, `v` `[b, heads, m, d]`, scores
/// multiplied by `scale` and offset by `mask` (broadcast to `[.., n, m]`); returns
/// `[b, n, heads·d]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, n, d) = q.dims4()?;
    let scores = q.matmul(&k.t()?)?;
    let p = match mask {
        Some(m) => candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(m)?)?,
        None => scaled_softmax(&scores, scale)?,
    };
    p.matmul(v)?.transpose(1, 2)?.reshape((b, n, heads * d))
}

/// The index of the largest value of each row (the first one on ties, like `torch.argmax`).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut best = 0usize;
            for (i, &v) in r.iter().enumerate() {
                if v > r[best] || (r[best].is_nan() && !v.is_nan()) {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}
