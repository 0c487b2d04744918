//! Fused, in-place CPU kernels for the ViT's element-wise work, which candle would do in
//! several single-purpose passes (each allocating a tensor as large as the MLP's
//! activations): `bias + activation`, `bias + residual`, and a row softmax.
//!
//! They run on contiguous float32 CPU tensors that nothing else references (a fresh matrix
//! product), split into row blocks over rayon's threads. `exp` is Cephes' single-precision
//! polynomial (relative error about 1e-7, like the vectorised `exp` PyTorch uses), written
//! so that the compiler vectorises it; the loops are compiled twice, plainly and for AVX2,
//! and the AVX2 copy runs when the CPU has it. Other devices and dtypes take candle's
//! ordinary ops ([`super::Dense`] decides).

use candle_core::{CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

use super::Activation;

/// Rows per rayon task: enough work to amortise the task (≥ 64 k values).
fn rows_per_task(cols: usize) -> usize {
    (65_536 / cols.max(1)).max(1)
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: float32 only"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: float32 only"),
    }
}

/// Whether `x` can take these kernels.
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.is_contiguous()
}

/// `fn $name(args)`: `$body(args)` compiled twice, plainly and with AVX2 enabled (so the
/// loops vectorise 8 wide), choosing the AVX2 copy when the CPU has it.
macro_rules! multiversion {
    ($name:ident = $body:ident($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// `e^x` (Cephes `expf`): `2^n · e^r` with `n = round(x / ln 2)`, `r` reduced in two parts
/// and `e^r` by a degree-6 polynomial. Inputs are clamped to [−87.3, 88] (results within
/// f32's normal range; the ViT never needs more).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Row-wise `softmax` in place on `[rows, cols]`.
fn softmax_rows(data: &mut [f32], cols: usize) {
    data.par_chunks_mut(cols * rows_per_task(cols))
        .for_each(|block| softmax_block(block, cols));
}

multiversion!(softmax_block = softmax_block_body(block: &mut [f32], cols: usize));

#[inline(always)]
fn softmax_block_body(block: &mut [f32], cols: usize) {
    for row in block.chunks_exact_mut(cols) {
        let mut m = [f32::NEG_INFINITY; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for i in 0..8 {
                m[i] = if c[i] > m[i] { c[i] } else { m[i] };
            }
        }
        let mut max = f32::NEG_INFINITY;
        for &v in m.iter().chain(chunks.remainder()) {
            max = if v > max { v } else { max };
        }
        let mut s = [0f32; 8];
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for i in 0..8 {
                c[i] = exp(c[i] - max);
                s[i] += c[i];
            }
        }
        let mut sum: f32 = s.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `y ← act(y + b)` over the rows of `y` `[rows, cols]`.
fn bias_act(y: &mut [f32], b: &[f32], act: Option<Activation>) {
    let cols = b.len();
    y.par_chunks_mut(cols * rows_per_task(cols))
        .for_each(|block| match act {
            None => bias_block(block, b),
            Some(Activation::QuickGelu) => bias_quick_gelu_block(block, b),
            Some(Activation::Gelu) => bias_gelu_block(block, b),
        });
}

multiversion!(bias_block = bias_block_body(block: &mut [f32], b: &[f32]));
multiversion!(bias_quick_gelu_block = bias_quick_gelu_block_body(block: &mut [f32], b: &[f32]));
multiversion!(bias_gelu_block = bias_gelu_block_body(block: &mut [f32], b: &[f32]));

#[inline(always)]
fn bias_block_body(block: &mut [f32], b: &[f32]) {
    for row in block.chunks_exact_mut(b.len()) {
        for (v, b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}

#[inline(always)]
fn bias_quick_gelu_block_body(block: &mut [f32], b: &[f32]) {
    for row in block.chunks_exact_mut(b.len()) {
        for (v, b) in row.iter_mut().zip(b) {
            let x = *v + b;
            *v = x / (1.0 + exp(-1.702 * x));
        }
    }
}

#[inline(always)]
fn bias_gelu_block_body(block: &mut [f32], b: &[f32]) {
    use std::f32::consts::FRAC_1_SQRT_2;
    for row in block.chunks_exact_mut(b.len()) {
        for (v, b) in row.iter_mut().zip(b) {
            let x = *v + b;
            *v = 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x * FRAC_1_SQRT_2));
        }
    }
}

/// `y ← (y + b) + r`, `r` shaped like `y`.
fn bias_residual(y: &mut [f32], b: &[f32], r: &[f32]) {
    let step = b.len() * rows_per_task(b.len());
    y.par_chunks_mut(step)
        .zip(r.par_chunks(step))
        .for_each(|(yb, rb)| bias_residual_block(yb, b, rb));
}

multiversion!(bias_residual_block = bias_residual_block_body(yb: &mut [f32], b: &[f32], rb: &[f32]));

#[inline(always)]
fn bias_residual_block_body(yb: &mut [f32], b: &[f32], rb: &[f32]) {
    let cols = b.len();
    for (row, res) in yb.chunks_exact_mut(cols).zip(rb.chunks_exact(cols)) {
        for ((v, b), r) in row.iter_mut().zip(b).zip(res) {
            *v = (*v + b) + r;
        }
    }
}

struct Softmax;

impl candle_core::InplaceOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vit-softmax-rows"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let cols = l.dims().last().copied().unwrap_or(1);
        softmax_rows(slice_mut(s, l, self.name())?, cols);
        Ok(())
    }
}

struct BiasAct(Option<Activation>);

impl candle_core::InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "vit-bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let b = slice(s2, l2, self.name())?;
        if l1.dims().last() != Some(&b.len()) {
            candle_core::bail!("{}: bias {:?} for {:?}", self.name(), l2.dims(), l1.dims())
        }
        bias_act(slice_mut(s1, l1, self.name())?, b, self.0);
        Ok(())
    }
}

struct BiasResidual;

impl candle_core::InplaceOp3 for BiasResidual {
    fn name(&self) -> &'static str {
        "vit-bias-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let b = slice(s2, l2, self.name())?;
        let r = slice(s3, l3, self.name())?;
        if l1.dims().last() != Some(&b.len()) || l1.dims() != l3.dims() {
            candle_core::bail!(
                "{}: shapes {:?} {:?} {:?}",
                self.name(),
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        bias_residual(slice_mut(s1, l1, self.name())?, b, r);
        Ok(())
    }
}

/// Softmax over the last dimension, in place (`x` must be fresh and [`applies`]).
pub fn softmax_in_place(x: &Tensor) -> Result<()> {
    x.inplace_op1(&Softmax)
}

/// `y ← act(y + b)` in place (`y` fresh and [`applies`], `b` contiguous).
pub fn bias_act_in_place(y: &Tensor, b: &Tensor, act: Option<Activation>) -> Result<()> {
    y.inplace_op2(&b.contiguous()?, &BiasAct(act))
}

/// `y ← (y + b) + r` in place (`y` fresh and [`applies`]).
pub fn bias_residual_in_place(y: &Tensor, b: &Tensor, r: &Tensor) -> Result<()> {
    y.inplace_op3(&b.contiguous()?, &r.contiguous()?, &BiasResidual)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let m = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
            x += 0.001_237;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) < 1e-37);
    }

    /// Each fused kernel against candle's ordinary ops (what other devices run), on a
    /// shape whose rows are not a multiple of the 8-wide lanes.
    #[test]
    fn kernels_match_candle_ops() {
        let dev = Device::Cpu;
        let y = Tensor::randn(0f32, 3.0, (37, 130), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 130, &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (37, 130), &dev).unwrap();
        let yb = y.broadcast_add(&b).unwrap();

        let s = y.copy().unwrap();
        softmax_in_place(&s).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&y).unwrap();
        assert!(rel(&s, &want) < 1e-6, "softmax {}", rel(&s, &want));

        let t = y.copy().unwrap();
        bias_act_in_place(&t, &b, None).unwrap();
        assert_eq!(rel(&t, &yb), 0.0);

        let t = y.copy().unwrap();
        bias_act_in_place(&t, &b, Some(Activation::QuickGelu)).unwrap();
        let want = (&yb * candle_nn::ops::sigmoid(&(&yb * 1.702).unwrap()).unwrap()).unwrap();
        assert!(rel(&t, &want) < 1e-6, "quick_gelu {}", rel(&t, &want));

        let t = y.copy().unwrap();
        bias_act_in_place(&t, &b, Some(Activation::Gelu)).unwrap();
        let want = yb.gelu_erf().unwrap();
        assert!(rel(&t, &want) < 1e-6, "gelu {}", rel(&t, &want));

        let t = y.copy().unwrap();
        bias_residual_in_place(&t, &b, &r).unwrap();
        assert_eq!(rel(&t, &(&yb + &r).unwrap()), 0.0);
    }
}
