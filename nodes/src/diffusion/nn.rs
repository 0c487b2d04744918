//! Layers shared by the diffusion models, loaded strictly from [`Weights`].
//!
//! Every layer here records a backward pass (composite layer norm, group norm and softmax,
//! never the fused kernels that cut the graph), because Textual Inversion differentiates
//! through the text encoder and the UNet. Linear layers and convolutions give their (frozen)
//! weights no gradient ([`super::frozen_grad`]). Where nothing needs a gradient
//! (sampling), attention runs in blocks ([`super::chunked_attention`]), with the same bits.
//!
//! Half precision ([`super::precision`]): group norm statistics and softmax sums are taken
//! in f32, and bf16 products on the CPU (which has no bf16 kernels) are computed in f32.

use candle_core::{DType, Tensor, D};

use super::precision::{self, cpu_bf16, is_half};
use super::weights::Weights;
use super::ModelError;
use super::{chunked_attention, frozen_grad};

pub type Result<T> = candle_core::Result<T>;

/// `y = x Wᵀ + b`.
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> std::result::Result<Linear, ModelError> {
        Ok(Linear {
            w: w.get(&format!("{name}.weight"), &[out, inp])?,
            b: if bias {
                Some(w.get(&format!("{name}.bias"), &[out])?)
            } else {
                None
            },
        })
    }

    /// A 1×1 convolution stored as a linear layer's weight `[out, in, 1, 1]`.
    pub fn load_conv1x1(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
    ) -> std::result::Result<Linear, ModelError> {
        Ok(Linear {
            w: w.get(&format!("{name}.weight"), &[out, inp, 1, 1])?
                .reshape((out, inp))
                .map_err(|e| ModelError::bad(w.path(), e))?,
            b: Some(w.get(&format!("{name}.bias"), &[out])?),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if cpu_bf16(x) {
            return Linear {
                w: self.w.to_dtype(DType::F32)?,
                b: self
                    .b
                    .as_ref()
                    .map(|b| b.to_dtype(DType::F32))
                    .transpose()?,
            }
            .forward(&x.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16);
        }
        let y = frozen_grad::matmul_t(x, &self.w)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Layer norm over the last dimension.
pub struct LayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f32,
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
        candle_nn::ops::layer_norm_slow(x, &self.w, &self.b, self.eps)
    }
}

/// Group norm over `[batch, channels, ...]`.
pub struct GroupNorm {
    pub groups: usize,
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f64,
}

impl GroupNorm {
    pub fn load(
        w: &Weights,
        name: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> std::result::Result<GroupNorm, ModelError> {
        if !channels.is_multiple_of(groups) {
            return Err(ModelError::bad(w.path(), format!("`{name}`: {channels} channels do not split into {groups} groups (norm_num_groups)")));
        }
        Ok(GroupNorm {
            groups,
            w: w.get(&format!("{name}.weight"), &[channels])?,
            b: w.get(&format!("{name}.bias"), &[channels])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if is_half(x) {
            let up = |t: &Tensor| t.to_dtype(DType::F32);
            return GroupNorm {
                groups: self.groups,
                w: up(&self.w)?,
                b: up(&self.b)?,
                eps: self.eps,
            }
            .forward(&up(x)?)?
            .to_dtype(x.dtype());
        }
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let g = x.reshape((b, self.groups, ()))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .reshape(dims.as_slice())?;
        let mut shape = vec![1usize; dims.len()];
        shape[1] = c;
        normed
            .broadcast_mul(&self.w.reshape(shape.as_slice())?)?
            .broadcast_add(&self.b.reshape(shape.as_slice())?)
    }
}

/// 2-D convolution with symmetric padding.
pub struct Conv2d {
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        name: &str,
        inp: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> std::result::Result<Conv2d, ModelError> {
        Ok(Conv2d {
            w: w.get(&format!("{name}.weight"), &[out, inp, kernel, kernel])?,
            b: Some(w.get(&format!("{name}.bias"), &[out])?),
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if cpu_bf16(x) {
            return Conv2d {
                w: self.w.to_dtype(DType::F32)?,
                b: self
                    .b
                    .as_ref()
                    .map(|b| b.to_dtype(DType::F32))
                    .transpose()?,
                stride: self.stride,
                padding: self.padding,
            }
            .forward(&x.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16);
        }
        let y = frozen_grad::conv2d(x, &self.w, self.padding, self.stride)?;
        match &self.b {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Scaled dot-product attention, `[batch·heads, q, d] × [batch·heads, k, d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    // Scale q (n·d values) rather than the scores (n·m values): one pass less over the
    // largest tensor of the model (1 GiB per self-attention at 512 px).
    let q = (q * scale)?;
    if chunked_attention::applies(&q, k, v) {
        return chunked_attention::attention(&q, k, v, chunked_attention::BLOCK);
    }
    let att = precision::matmul(&q, &k.t()?)?;
    precision::matmul(&precision::softmax_last(&att)?, v)
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    x * candle_nn::ops::sigmoid(x)?
}

/// Nearest-neighbour upsampling by 2 of `[b, c, h, w]`, written as a broadcast: candle
/// 0.11's `upsample_nearest2d` backward *overwrites* the gradient already collected for its
/// input instead of adding to it; a broadcast's backward is an ordinary sum.
pub fn nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}
