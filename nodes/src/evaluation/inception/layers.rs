//! The layers Inception v3 is made of: torchvision's `BasicConv2d` with its BatchNorm
//! folded in ([`ConvBn`]), 1×1 convolutions that share an input run as one product
//! ([`Fused1x1`]), and the pooling branches of the mixed blocks.
//!
//! Activations are `[C, N, H, W]` (see [`super::ops`]).

use candle_core::{DType, Device, Tensor};

use super::ops::{bias_relu, conv_portable, cpu_kernels, im2col, pool3x3, Geometry, Pool};
use super::TensorSource;
use crate::diffusion::ModelError;

pub(crate) type Result<T> = candle_core::Result<T>;
pub(crate) type LoadResult<T> = std::result::Result<T, ModelError>;

/// The BatchNorm epsilon of every `BasicConv2d`, in torchvision and in pytorch-fid alike.
pub(crate) const BN_EPS: f64 = 0.001;

/// Largest patch matrix built at once (f32 values): bounds the memory of the early,
/// large-image layers; a batch is split into image ranges below it.
const MAX_COLS: usize = 8 << 20;

/// torchvision's `BasicConv2d` (conv without bias → BatchNorm(eps 0.001) → ReLU) for
/// inference: the BatchNorm is folded into the convolution at load time, in f64,
/// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
pub(crate) struct ConvBn {
    /// `[cout, cin·kh·kw]`.
    w: Tensor,
    b: Tensor,
    b_cpu: Vec<f32>,
    g: Geometry,
}

impl ConvBn {
    pub(crate) fn load(
        src: &dyn TensorSource,
        name: &str,
        (cin, cout): (usize, usize),
        g: Geometry,
        device: &Device,
    ) -> LoadResult<ConvBn> {
        let (kh, kw) = g.kernel;
        let w = src.tensor(&format!("{name}.conv.weight"), &[cout, cin, kh, kw])?;
        let get = |leaf: &str| src.tensor(&format!("{name}.bn.{leaf}"), &[cout]);
        let (gamma, beta) = (get("weight")?, get("bias")?);
        let (mean, var) = (get("running_mean")?, get("running_var")?);
        let fold = || -> Result<ConvBn> {
            let f64_cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64);
            let scale = (f64_cpu(&gamma)? / (f64_cpu(&var)? + BN_EPS)?.sqrt()?)?;
            let w = f64_cpu(&w)?
                .reshape((cout, cin * kh * kw))?
                .broadcast_mul(&scale.reshape((cout, 1))?)?;
            let b = (f64_cpu(&beta)? - (f64_cpu(&mean)? * &scale)?)?.to_dtype(DType::F32)?;
            Ok(ConvBn {
                w: w.to_dtype(DType::F32)?.to_device(device)?,
                b_cpu: b.to_vec1()?,
                b: b.to_device(device)?,
                g,
            })
        };
        fold().map_err(|e| ModelError::bad(src.path(), format!("`{name}`: {e}")))
    }

    fn cout(&self) -> usize {
        self.b_cpu.len()
    }

    /// 1×1 convolutions over the same input, stacked into one (their outputs in order).
    fn stack(parts: &[&ConvBn]) -> Result<ConvBn> {
        let ws: Vec<&Tensor> = parts.iter().map(|c| &c.w).collect();
        let bs: Vec<&Tensor> = parts.iter().map(|c| &c.b).collect();
        Ok(ConvBn {
            w: Tensor::cat(&ws, 0)?,
            b: Tensor::cat(&bs, 0)?,
            b_cpu: parts.iter().flat_map(|c| c.b_cpu.iter().copied()).collect(),
            g: parts[0].g,
        })
    }

    /// The convolution alone (no bias, no ReLU): `[cin, N, H, W]` → `[cout, N, Ho, Wo]`.
    fn linear(&self, x: &Tensor) -> Result<Tensor> {
        let (c, n, h, w) = x.dims4()?;
        let (kh, kw) = self.g.kernel;
        if !cpu_kernels(x) {
            return conv_portable(x, &self.w.reshape((self.cout(), c, kh, kw))?, self.g);
        }
        let x = x.contiguous()?;
        let (ho, wo) = self.g.out_size(h, w);
        if self.g.kernel == (1, 1) && self.g.stride == 1 {
            return self
                .w
                .matmul(&x.reshape((c, n * h * w))?)?
                .reshape((self.cout(), n, h, w));
        }
        let per_image = c * kh * kw * ho * wo;
        let chunk = (MAX_COLS / per_image.max(1)).clamp(1, n.max(1));
        let mut outs = Vec::with_capacity(n.div_ceil(chunk));
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            outs.push(self.w.matmul(&im2col(&x, self.g, start..end)?)?);
            start = end;
        }
        let y = if outs.len() == 1 {
            outs.pop().expect("one")
        } else {
            Tensor::cat(&outs, 1)?
        };
        y.reshape((self.cout(), n, ho, wo))
    }

    fn bias_relu(&self, y: &Tensor) -> Result<Tensor> {
        bias_relu(y, &self.b, &self.b_cpu)
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bias_relu(&self.linear(x)?)
    }
}

/// Several 1×1 `BasicConv2d`s that read the same input, as one matrix product. With
/// `linear_tail`, the last one's output is returned without bias and ReLU (the average
/// pool branch's convolution, see [`avg_pool_branch`]).
pub(crate) struct Fused1x1 {
    conv: ConvBn,
    sizes: Vec<usize>,
    linear_tail: bool,
}

impl Fused1x1 {
    pub(crate) fn new(
        src: &dyn TensorSource,
        parts: &[&ConvBn],
        linear_tail: bool,
    ) -> LoadResult<Fused1x1> {
        let conv = ConvBn::stack(parts)
            .map_err(|e| ModelError::bad(src.path(), format!("stacking 1×1 convolutions: {e}")))?;
        Ok(Fused1x1 {
            conv,
            sizes: parts.iter().map(|c| c.cout()).collect(),
            linear_tail,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let y = self.conv.linear(x)?;
        let total: usize = self.sizes.iter().sum();
        let relu_rows = total
            - if self.linear_tail {
                self.sizes[self.sizes.len() - 1]
            } else {
                0
            };
        let head = bias_relu(
            &y.narrow(0, 0, relu_rows)?,
            &self.conv.b.narrow(0, 0, relu_rows)?,
            &self.conv.b_cpu[..relu_rows],
        )?;
        let mut parts = Vec::with_capacity(self.sizes.len());
        let mut at = 0;
        for &size in &self.sizes {
            parts.push(if at < relu_rows {
                head.narrow(0, at, size)?
            } else {
                y.narrow(0, at, size)?
            });
            at += size;
        }
        Ok(parts)
    }
}

/// The pooling in front of a mixed block's `branch_pool` 1×1 convolution (3×3, stride 1,
/// padding 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// `avg_pool2d(count_include_pad=False)`: TensorFlow's average, pytorch-fid's patch.
    AvgExcludePad,
    /// `avg_pool2d` as torchvision has it: padded zeros count (border windows ÷ 9).
    AvgIncludePad,
    /// `max_pool2d` (pytorch-fid's `FIDInceptionE_2`, i.e. Mixed_7c of the FID network).
    Max,
}

/// `conv(avg_pool(x))` from `lin` = the convolution's output before its bias.
///
/// The 1×1 convolution (linear, per pixel) and the average pool (linear, per channel)
/// commute, so the convolution runs first (inside the block's [`Fused1x1`]) and the pool
/// sees `pool_features` channels (32–192) instead of all input channels (192–2048); the
/// folded bias is added after the pool. With `count_include_pad=False` each window's
/// weights sum to 1, so the bias passes through the pool unchanged; with padding counted
/// they do not, which is why the bias must come after the pool.
fn avg_pool_branch(lin: &Tensor, kind: PoolKind, conv: &ConvBn) -> Result<Tensor> {
    let pool = if kind == PoolKind::AvgExcludePad {
        Pool::AvgInImage
    } else {
        Pool::AvgCountPad
    };
    conv.bias_relu(&pool3x3(lin, pool, 1, 1)?)
}

/// `conv(max_pool(x))`, 3×3, stride 1, padding 1.
fn max_pool_branch(x: &Tensor, conv: &ConvBn) -> Result<Tensor> {
    conv.forward(&pool3x3(x, Pool::Max, 1, 1)?)
}

pub(crate) fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    pool3x3(x, Pool::Max, 2, 0)
}

/// Loads the `BasicConv2d`s of one block.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn TensorSource,
    pub prefix: &'a str,
    pub device: &'a Device,
}

impl Loader<'_> {
    pub(crate) fn conv(
        &self,
        name: &str,
        channels: (usize, usize),
        kernel: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> LoadResult<ConvBn> {
        let full = format!("{}.{name}", self.prefix);
        let g = Geometry {
            kernel,
            stride,
            pad,
        };
        ConvBn::load(self.src, &full, channels, g, self.device)
    }

    pub(crate) fn conv1(&self, name: &str, cin: usize, cout: usize) -> LoadResult<ConvBn> {
        self.conv(name, (cin, cout), (1, 1), 1, (0, 0))
    }

    pub(crate) fn conv3(
        &self,
        name: &str,
        cin: usize,
        cout: usize,
        stride: usize,
        pad: usize,
    ) -> LoadResult<ConvBn> {
        self.conv(name, (cin, cout), (3, 3), stride, (pad, pad))
    }
}

/// The 1×1 convolutions reading a block's input (with the pool branch's last, as a linear
/// tail, when its pool is an average), and the pool branch.
pub(crate) struct Head {
    fused: Fused1x1,
    pool: ConvBn,
    kind: PoolKind,
}

impl Head {
    pub(crate) fn new(
        l: &Loader,
        convs: &[&ConvBn],
        pool: ConvBn,
        kind: PoolKind,
    ) -> LoadResult<Head> {
        let mut parts = convs.to_vec();
        if kind != PoolKind::Max {
            parts.push(&pool);
        }
        let fused = Fused1x1::new(l.src, &parts, kind != PoolKind::Max)?;
        Ok(Head { fused, pool, kind })
    }

    /// The 1×1 branch outputs (ReLU applied) and the pool branch's output.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let mut parts = self.fused.forward(x)?;
        let pooled = if self.kind == PoolKind::Max {
            max_pool_branch(x, &self.pool)?
        } else {
            let lin = parts.pop().expect("pool part");
            avg_pool_branch(&lin, self.kind, &self.pool)?
        };
        Ok((parts, pooled))
    }
}

pub(crate) fn chain(x: &Tensor, convs: &[ConvBn]) -> Result<Tensor> {
    let mut y = convs[0].forward(x)?;
    for c in &convs[1..] {
        y = c.forward(&y)?;
    }
    Ok(y)
}
