//! diffusers' `Transformer2DModel` with `BasicTransformerBlock`s: self-attention,
//! cross-attention to the text embeddings, and a GEGLU feed-forward (exact erf gelu, as
//! diffusers; candle-transformers' stock block uses the tanh approximation).
//!
//! SD 1.x projects in and out with 1×1 convolutions, SD 2.x with linear layers
//! (`use_linear_projection`).

use candle_core::{Tensor, D};

use crate::diffusion::nn::{attention, Conv2d, GroupNorm, LayerNorm, Linear, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(
        w: &Weights,
        name: &str,
        dim: usize,
        ctx: usize,
        heads: usize,
    ) -> std::result::Result<Self, ModelError> {
        Ok(Attention {
            q: Linear::load(w, &format!("{name}.to_q"), dim, dim, false)?,
            k: Linear::load(w, &format!("{name}.to_k"), ctx, dim, false)?,
            v: Linear::load(w, &format!("{name}.to_v"), ctx, dim, false)?,
            out: Linear::load(w, &format!("{name}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `x`: `[b, n, dim]`, `ctx`: `[b, m, ctx_dim]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, n, dim) = x.dims3()?;
        let hd = dim / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            let m = t.dim(1)?;
            t.reshape((b, m, self.heads, hd))?
                .transpose(1, 2)?
                .reshape((b * self.heads, m, hd))?
                .contiguous()
        };
        let q = split(self.q.forward(x)?)?;
        let k = split(self.k.forward(ctx)?)?;
        let v = split(self.v.forward(ctx)?)?;
        let y = attention(&q, &k, &v, (hd as f64).powf(-0.5))?;
        let y = y
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, dim))?;
        self.out.forward(&y)
    }
}

struct Block {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    geglu: Linear,
    ff_out: Linear,
}

impl Block {
    fn load(
        w: &Weights,
        name: &str,
        dim: usize,
        ctx: usize,
        heads: usize,
    ) -> std::result::Result<Self, ModelError> {
        let inner = dim * 4;
        Ok(Block {
            norm1: LayerNorm::load(w, &format!("{name}.norm1"), dim, 1e-5)?,
            attn1: Attention::load(w, &format!("{name}.attn1"), dim, dim, heads)?,
            norm2: LayerNorm::load(w, &format!("{name}.norm2"), dim, 1e-5)?,
            attn2: Attention::load(w, &format!("{name}.attn2"), dim, ctx, heads)?,
            norm3: LayerNorm::load(w, &format!("{name}.norm3"), dim, 1e-5)?,
            geglu: Linear::load(w, &format!("{name}.ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: Linear::load(w, &format!("{name}.ff.net.2"), inner, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let y = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&y, &y)?)?;
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, ctx)?)?;
        let h = self.geglu.forward(&self.norm3.forward(&x)?)?;
        let half = h.dim(D::Minus1)? / 2;
        let (a, gate) = (
            h.narrow(D::Minus1, 0, half)?,
            h.narrow(D::Minus1, half, half)?,
        );
        x + self.ff_out.forward(&(a * gate.gelu_erf()?)?)?
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<Block>,
    proj_out: Projection,
}

impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        name: &str,
        channels: usize,
        heads: usize,
        layers: usize,
        ctx: usize,
        groups: usize,
        linear: bool,
    ) -> std::result::Result<Self, ModelError> {
        let proj = |n: &str, i: usize, o: usize| -> std::result::Result<Projection, ModelError> {
            Ok(if linear {
                Projection::Linear(Linear::load(w, &format!("{name}.{n}"), i, o, true)?)
            } else {
                Projection::Conv(Conv2d::load(w, &format!("{name}.{n}"), i, o, 1, 1, 0)?)
            })
        };
        Ok(Transformer2D {
            norm: GroupNorm::load(w, &format!("{name}.norm"), groups, channels, 1e-6)?,
            proj_in: proj("proj_in", channels, channels)?,
            blocks: (0..layers)
                .map(|k| {
                    Block::load(
                        w,
                        &format!("{name}.transformer_blocks.{k}"),
                        channels,
                        ctx,
                        heads,
                    )
                })
                .collect::<std::result::Result<_, _>>()?,
            proj_out: proj("proj_out", channels, channels)?,
        })
    }

    /// `x`: `[b, c, h, w]`, `ctx`: `[b, m, ctx_dim]`.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: &Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let to_map = |t: &Tensor| t.transpose(1, 2)?.reshape((b, c, h, w));
        let y = self.norm.forward(x)?;
        let mut t = match &self.proj_in {
            Projection::Conv(p) => to_tokens(&p.forward(&y)?)?,
            Projection::Linear(p) => p.forward(&to_tokens(&y)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, ctx)?;
        }
        let y = match &self.proj_out {
            Projection::Conv(p) => p.forward(&to_map(&t)?)?,
            Projection::Linear(p) => to_map(&p.forward(&t)?)?,
        };
        y + x
    }
}
