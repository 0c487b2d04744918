//! The CLIP Vision Transformer image tower, shared by [`super::clip_vision`] (transformers'
//! naming) and [`super::csd`] (OpenAI's naming): patch embedding, class token, learned
//! positions, `ln_pre`, pre-norm residual blocks, and the final norm on the class token.
//!
//! Inference only (no backward pass is recorded anywhere), arranged for speed on the CPU:
//! - the stride-equals-kernel patch convolution is one matrix product over unfolded
//!   patches (the same sums as the convolution);
//! - q, k and v are one `[width, 3·width]` product, with the attention scale `head_dim^-½`
//!   folded into the q columns and bias (exact when it is a power of two, as for the
//!   64-wide heads of every CLIP ViT);
//! - weights are stored transposed (`[in, out]`, contiguous), as the CPU gemm prefers;
//! - bias + activation, bias + residual and the attention softmax run as fused in-place
//!   kernels (`vit/kernels.rs`) on float32 CPU tensors, candle's ordinary ops elsewhere; layer
//!   norm is candle's fused kernel (one pass, `E[x²] − E[x]²` in f32: fine unless a row's
//!   mean dwarfs its spread);
//! - in the last block only the class token's query, output projection and MLP are
//!   computed: nothing else reaches the output.
//!
//! Measured against transformers / open_clip on tiny and full-size (ViT-L/14) random
//! models: relative error ≤ 2e-6 (`nodes/tests/clip_vision_parity.rs`).

use candle_core::{DType, IndexOp, Tensor, D};

use crate::diffusion::ModelError;

mod kernels;

pub type Result<T> = candle_core::Result<T>;

/// The MLP nonlinearity of a CLIP tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · σ(1.702 x)` (OpenAI CLIP, transformers' `quick_gelu`).
    QuickGelu,
    /// The exact erf GELU (transformers' `gelu`).
    Gelu,
}

/// The shape of a ViT image tower.
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_width: usize,
    pub eps: f64,
    pub act: Activation,
}

impl VitConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: the class token and one per patch.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// `y = x W + b` with `W` stored `[in, out]`.
pub struct Dense {
    w: Tensor,
    b: Option<Tensor>,
}

impl Dense {
    /// From PyTorch's `[out, in]` weight and `[out]` bias.
    pub fn from_torch(w: &Tensor, b: Option<&Tensor>) -> Result<Dense> {
        Ok(Dense {
            w: w.t()?.contiguous()?,
            b: b.cloned(),
        })
    }

    /// From a weight already stored `[in, out]` (e.g. CSD's `feature @ W` style head).
    pub fn from_in_out(w: &Tensor, b: Option<&Tensor>) -> Result<Dense> {
        Ok(Dense {
            w: w.contiguous()?,
            b: b.cloned(),
        })
    }

    /// `x`: `[rows, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w)?;
        match &self.b {
            Some(b) if kernels::applies(&y) => {
                kernels::bias_act_in_place(&y, b, None)?;
                Ok(y)
            }
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// `act(x W + b)`.
    fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let y = x.matmul(&self.w)?;
        match &self.b {
            Some(b) if kernels::applies(&y) => {
                kernels::bias_act_in_place(&y, b, Some(act))?;
                Ok(y)
            }
            _ => {
                let y = match &self.b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                match act {
                    Activation::QuickGelu => &y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?,
                    Activation::Gelu => y.gelu_erf(),
                }
            }
        }
    }

    /// `(x W + b) + r`.
    fn forward_residual(&self, x: &Tensor, r: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w)?;
        match &self.b {
            Some(b) if kernels::applies(&y) && r.dims() == y.dims() => {
                kernels::bias_residual_in_place(&y, b, r)?;
                Ok(y)
            }
            Some(b) => y.broadcast_add(b)? + r,
            None => y + r,
        }
    }
}

/// Layer norm over the last dimension (candle's fused kernel).
pub struct Norm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f32,
}

impl Norm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.w, &self.b, self.eps)
    }
}

/// One residual block's tensors in PyTorch layout (`[out, in]` weights).
pub struct BlockTensors {
    pub ln1: (Tensor, Tensor),
    /// q, k, v weights `[width, width]` and biases `[width]`, in that order.
    pub q: (Tensor, Tensor),
    pub k: (Tensor, Tensor),
    pub v: (Tensor, Tensor),
    pub out: (Tensor, Tensor),
    pub ln2: (Tensor, Tensor),
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
}

/// The tower's tensors in PyTorch layout.
pub struct VitTensors {
    /// `[width, 3, patch, patch]`, no bias.
    pub patch: Tensor,
    /// `[width]`.
    pub class: Tensor,
    /// `[tokens, width]`.
    pub positions: Tensor,
    pub ln_pre: (Tensor, Tensor),
    pub blocks: Vec<BlockTensors>,
    pub ln_post: (Tensor, Tensor),
}

struct Block {
    ln1: Norm,
    qkv: Dense,
    out: Dense,
    ln2: Norm,
    fc1: Dense,
    fc2: Dense,
}

pub struct Vit {
    cfg: VitConfig,
    /// `[3·patch·patch, width]`.
    patch: Dense,
    /// `[1, width]`: the class embedding plus the first position.
    class: Tensor,
    /// `[grid², width]`: the patch tokens' positions.
    positions: Tensor,
    ln_pre: Norm,
    blocks: Vec<Block>,
    ln_post: Norm,
}

impl Vit {
    pub fn new(cfg: VitConfig, t: VitTensors) -> Result<Vit> {
        let (w, p) = (cfg.width, cfg.patch_size);
        if cfg.heads == 0 || !w.is_multiple_of(cfg.heads) {
            candle_core::bail!("width {w} does not split into {} heads", cfg.heads)
        }
        if p == 0 || !cfg.image_size.is_multiple_of(p) {
            candle_core::bail!(
                "image size {} is not a multiple of patch size {p}",
                cfg.image_size
            )
        }
        let eps = cfg.eps as f32;
        let norm = |(w, b): (Tensor, Tensor)| Norm { w, b, eps };
        let scale = ((w / cfg.heads) as f64).powf(-0.5);
        let mut blocks = Vec::with_capacity(t.blocks.len());
        for b in t.blocks {
            let qkv_w = Tensor::cat(&[(b.q.0 * scale)?, b.k.0, b.v.0], 0)?;
            let qkv_b = Tensor::cat(&[(b.q.1 * scale)?, b.k.1, b.v.1], 0)?;
            blocks.push(Block {
                ln1: norm(b.ln1),
                qkv: Dense::from_torch(&qkv_w, Some(&qkv_b))?,
                out: Dense::from_torch(&b.out.0, Some(&b.out.1))?,
                ln2: norm(b.ln2),
                fc1: Dense::from_torch(&b.fc1.0, Some(&b.fc1.1))?,
                fc2: Dense::from_torch(&b.fc2.0, Some(&b.fc2.1))?,
            });
        }
        let class = (t.class.reshape((1, w))? + t.positions.i(0..1)?)?;
        let positions = t.positions.i(1..)?.contiguous()?;
        Ok(Vit {
            patch: Dense::from_torch(&t.patch.reshape((w, 3 * p * p))?, None)?,
            class,
            positions,
            ln_pre: norm(t.ln_pre),
            blocks,
            ln_post: norm(t.ln_post),
            cfg,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// The final-normed class token, `[n, width]`, of images `[n, 3, size, size]`
    /// (already normalised).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h != cfg.image_size || w != cfg.image_size {
            candle_core::bail!(
                "expected images [n, 3, {s}, {s}], got {:?}",
                x.dims(),
                s = cfg.image_size
            )
        }
        let (g, p, d) = (cfg.grid(), cfg.patch_size, cfg.width);
        let t = cfg.tokens();
        let x = x.to_dtype(DType::F32)?;
        // Unfold into patches: [n, 3, g, p, g, p] → [n, g, g, 3, p, p] → [n·g², 3·p²].
        let patches = x
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n * g * g, 3 * p * p))?;
        let tokens = self
            .patch
            .forward(&patches)?
            .reshape((n, g * g, d))?
            .broadcast_add(&self.positions)?;
        let class = self.class.unsqueeze(0)?.broadcast_as((n, 1, d))?;
        let h = Tensor::cat(&[&class, &tokens], 1)?.reshape((n * t, d))?;
        let mut h = self.ln_pre.forward(&h)?;
        let last = self.blocks.len().saturating_sub(1);
        for (i, b) in self.blocks.iter().enumerate() {
            h = self.block(b, &h, n, i == last)?;
        }
        // After the last block `h` holds the class tokens only.
        let cls = if self.blocks.is_empty() {
            h.reshape((n, t, d))?.i((.., 0))?
        } else {
            h
        };
        self.ln_post.forward(&cls.contiguous()?)
    }

    /// One pre-norm block on `h` `[n·t, width]`; with `cls_only`, returns `[n, width]`.
    fn block(&self, b: &Block, h: &Tensor, n: usize, cls_only: bool) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (t, d, heads) = (cfg.tokens(), cfg.width, cfg.heads);
        let hd = d / heads;
        let qkv = b
            .qkv
            .forward(&b.ln1.forward(h)?)?
            .reshape((n, t, 3, heads, hd))?;
        // q [n·heads, rows, hd], kᵀ [n·heads, hd, t], v [n·heads, t, hd], all contiguous.
        let q = match cls_only {
            true => qkv.i((.., 0..1, 0))?,
            false => qkv.i((.., .., 0))?,
        };
        let rows = q.dim(1)?;
        let q = q
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((n * heads, rows, hd))?;
        let kt = qkv
            .i((.., .., 1))?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((n * heads, hd, t))?;
        let v = qkv
            .i((.., .., 2))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((n * heads, t, hd))?;
        let att = q.matmul(&kt)?;
        let att = if kernels::applies(&att) {
            kernels::softmax_in_place(&att)?;
            att
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        };
        let y = att
            .matmul(&v)?
            .reshape((n, heads, rows, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n * rows, d))?;
        let residual = if cls_only {
            h.reshape((n, t, d))?.i((.., 0))?.contiguous()?
        } else {
            h.clone()
        };
        let h = b.out.forward_residual(&y, &residual)?;
        let y = b.fc1.forward_act(&b.ln2.forward(&h)?, cfg.act)?;
        b.fc2.forward_residual(&y, &h)
    }
}

/// Rows divided by their L2 norm (PyTorch's `F.normalize(x, dim=-1)`: norm clamped at 1e-12).
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

/// Tensor names and their shapes.
pub type Shapes = std::collections::BTreeMap<String, Vec<usize>>;

/// The tensor names and shapes of a safetensors file, from its header alone (the data is
/// not read): lets a loader tell which tensors it will ignore, or read the architecture
/// from the shapes, before loading.
pub fn safetensors_shapes(path: &std::path::Path) -> std::result::Result<Shapes, ModelError> {
    use std::io::Read;
    let bad = |m: String| ModelError::bad(path, m);
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::MissingFile {
        path: path.to_path_buf(),
        hint: e.to_string(),
    })?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!(
            "not a safetensors file (header of {len} bytes)"
        )));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut out = Shapes::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = v["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape in the header")))?;
        out.insert(name, shape);
    }
    Ok(out)
}
