//! diffusers' `Transformer2DModel` with `BasicTransformerBlock`s: self-attention,
//! cross-attention to the text embeddings, and a GEGLU feed-forward (exact erf gelu, as
//! diffusers; candle-transformers' stock block uses the tanh approximation).
//!
//! SD 1.x projects in and out with 1×1 convolutions, SD 2.x with linear layers
//! (`use_linear_projection`).
//!
//! Every linear layer keeps its diffusers module name, so that a [`Lora`] attached to the
//! UNet adds its term to the layers it names ([`super::super::lora`]); without one, the
//! computation is exactly the plain layers'.

use candle_core::{Tensor, D};

use crate::diffusion::lora::{adapt, Lora, LoraSite};
use crate::diffusion::nn::{attention, Conv2d, GroupNorm, LayerNorm, Linear, Result};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// A linear layer with its module name (where a LoRA can attach).
struct Named {
    lin: Linear,
    name: String,
}

impl Named {
    fn load(
        w: &Weights,
        name: String,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> std::result::Result<Self, ModelError> {
        Ok(Named {
            lin: Linear::load(w, &name, inp, out, bias)?,
            name,
        })
    }

    fn forward(&self, x: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        adapt(lora, &self.name, x, self.lin.forward(x)?)
    }

    fn site(&self) -> LoraSite {
        let d = self.lin.w.dims();
        LoraSite {
            name: self.name.clone(),
            in_dim: d[1],
            out_dim: d[0],
        }
    }
}

struct Attention {
    q: Named,
    k: Named,
    v: Named,
    out: Named,
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
            q: Named::load(w, format!("{name}.to_q"), dim, dim, false)?,
            k: Named::load(w, format!("{name}.to_k"), ctx, dim, false)?,
            v: Named::load(w, format!("{name}.to_v"), ctx, dim, false)?,
            out: Named::load(w, format!("{name}.to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    fn sites(&self, out: &mut Vec<LoraSite>) {
        out.extend([&self.q, &self.k, &self.v, &self.out].map(Named::site));
    }

    /// `x`: `[b, n, dim]`, `ctx`: `[b, m, ctx_dim]`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let (b, n, dim) = x.dims3()?;
        let hd = dim / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            let m = t.dim(1)?;
            t.reshape((b, m, self.heads, hd))?
                .transpose(1, 2)?
                .reshape((b * self.heads, m, hd))?
                .contiguous()
        };
        let q = split(self.q.forward(x, lora)?)?;
        let k = split(self.k.forward(ctx, lora)?)?;
        let v = split(self.v.forward(ctx, lora)?)?;
        let y = attention(&q, &k, &v, (hd as f64).powf(-0.5))?;
        let y = y
            .reshape((b, self.heads, n, hd))?
            .transpose(1, 2)?
            .reshape((b, n, dim))?;
        self.out.forward(&y, lora)
    }
}

struct Block {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    geglu: Named,
    ff_out: Named,
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
            geglu: Named::load(w, format!("{name}.ff.net.0.proj"), dim, inner * 2, true)?,
            ff_out: Named::load(w, format!("{name}.ff.net.2"), inner, dim, true)?,
        })
    }

    fn sites(&self, out: &mut Vec<LoraSite>) {
        self.attn1.sites(out);
        self.attn2.sites(out);
        out.push(self.geglu.site());
        out.push(self.ff_out.site());
    }

    fn forward(&self, x: &Tensor, ctx: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let y = self.norm1.forward(x)?;
        let x = (x + self.attn1.forward(&y, &y, lora)?)?;
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, ctx, lora)?)?;
        let h = self.geglu.forward(&self.norm3.forward(&x)?, lora)?;
        let half = h.dim(D::Minus1)? / 2;
        let (a, gate) = (
            h.narrow(D::Minus1, 0, half)?,
            h.narrow(D::Minus1, half, half)?,
        );
        x + self.ff_out.forward(&(a * gate.gelu_erf()?)?, lora)?
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Named),
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
                Projection::Linear(Named::load(w, format!("{name}.{n}"), i, o, true)?)
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

    /// The linear layers a LoRA can adapt, in forward order.
    pub fn sites(&self, out: &mut Vec<LoraSite>) {
        if let Projection::Linear(p) = &self.proj_in {
            out.push(p.site());
        }
        for b in &self.blocks {
            b.sites(out);
        }
        if let Projection::Linear(p) = &self.proj_out {
            out.push(p.site());
        }
    }

    /// `x`: `[b, c, h, w]`, `ctx`: `[b, m, ctx_dim]`; `lora` adds its terms to the layers it
    /// names.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: &Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let to_map = |t: &Tensor| t.transpose(1, 2)?.reshape((b, c, h, w));
        let y = self.norm.forward(x)?;
        let mut t = match &self.proj_in {
            Projection::Conv(p) => to_tokens(&p.forward(&y)?)?,
            Projection::Linear(p) => p.forward(&to_tokens(&y)?, lora)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, ctx, lora)?;
        }
        let y = match &self.proj_out {
            Projection::Conv(p) => p.forward(&to_map(&t)?)?,
            Projection::Linear(p) => to_map(&p.forward(&t, lora)?)?,
        };
        y + x
    }
}
