//! Attention without a gradient (sampling, decoding), computed in blocks of queries.
//!
//! The plain attention ([`super::nn::attention`]) holds the whole score matrix and the
//! composite softmax's three temporaries of its size: at 512 px the UNet's first
//! self-attention scores are `[2·8, 4096, 4096]`, 1 GiB each, 4 GiB at once. Where no
//! gradient is needed, this computes the same thing a block of (head, query) rows at a time
//! (at most [`BLOCK`] scores, 16 MiB, which stays in the CPU's cache), with a softmax fused
//! into one pass over each row, in place.
//!
//! In f32 the result is the plain path's *bit for bit*, so switching paths never changes an
//! image:
//! each score row is the same matrix-product row (the product's accumulation order depends
//! only on the inner dimension, never on how many rows are computed at once), and the fused
//! softmax makes candle's own operations in candle's order — the row maximum, `exp(x − max)`,
//! the sum by candle's own reduction kernel, then the division. Tests compare the bits.
//! Half-precision scores are turned into probabilities in f32 and rounded back, as the plain
//! path does ([`super::precision`]).

use candle_core::cpu::kernels::VecOps;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use super::precision;

type Result<T> = candle_core::Result<T>;

/// The most scores computed at once (16 MiB of f32).
pub const BLOCK: usize = 4 << 20;

/// Whether [`attention`] applies: on the CPU, in f32, f16 or bf16, where no input takes
/// part in a gradient.
pub fn applies(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    matches!(q.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && q.device().is_cpu()
        && !(q.track_op() || k.track_op() || v.track_op())
}

/// `softmax(q kᵀ) v` for `q` `[bh, n, d]` (already scaled), `k`, `v` `[bh, m, d]`, at most
/// `block` scores at a time. Call only where [`applies`] holds.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, block: usize) -> Result<Tensor> {
    let (bh, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let kt = k.t()?;
    let block = block.max(m);
    // Whole heads per block when one head's scores fit, else blocks of one head's queries.
    let (heads, rows) = if n * m <= block {
        (block / (n * m), n)
    } else {
        (1, block / m)
    };
    let mut per_heads = Vec::with_capacity(bh.div_ceil(heads));
    for h in (0..bh).step_by(heads) {
        let g = heads.min(bh - h);
        let (qh, kh, vh) = (q.narrow(0, h, g)?, kt.narrow(0, h, g)?, v.narrow(0, h, g)?);
        let mut per_rows = Vec::with_capacity(n.div_ceil(rows));
        for i in (0..n).step_by(rows) {
            let r = rows.min(n - i);
            let scores = precision::matmul(&qh.narrow(1, i, r)?, &kh)?;
            let probs = if scores.dtype() == DType::F32 {
                scores.inplace_op1(&SoftmaxRows)?;
                scores
            } else {
                let wide = scores.to_dtype(DType::F32)?;
                wide.inplace_op1(&SoftmaxRows)?;
                wide.to_dtype(scores.dtype())?
            };
            per_rows.push(precision::matmul(&probs, &vh)?);
        }
        per_heads.push(if per_rows.len() == 1 {
            per_rows.pop().expect("one block")
        } else {
            Tensor::cat(&per_rows, 1)?
        });
    }
    if per_heads.len() == 1 {
        Ok(per_heads.pop().expect("one block"))
    } else {
        Tensor::cat(&per_heads, 0)
    }
}

/// Softmax over the last dimension of a contiguous f32 tensor, in place, computed exactly as
/// `candle_nn::ops::softmax` computes it (see the module documentation).
struct SoftmaxRows;

impl InplaceOp1 for SoftmaxRows {
    fn name(&self) -> &'static str {
        "softmax-rows-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("softmax-rows-in-place: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("softmax-rows-in-place: the scores must be contiguous");
        };
        let m = layout.dims().last().copied().unwrap_or(1).max(1);
        data[start..end].par_chunks_mut(m).for_each(softmax_row);
        Ok(())
    }
}

fn softmax_row(row: &mut [f32]) {
    // `max_keepdim`: the first value, replaced by every larger one.
    let mut max = row[0];
    for &x in row.iter() {
        if max < x {
            max = x;
        }
    }
    // `broadcast_sub`, then `exp`.
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    // `sum_keepdim` over a contiguous last dimension: candle's own row reduction.
    let mut sum = 0f32;
    // SAFETY: `row` holds `row.len()` initialised values and `sum` is a valid f32.
    unsafe { <f32 as VecOps>::vec_reduce_sum(row.as_ptr(), &mut sum, row.len()) };
    // `broadcast_div`.
    for x in row.iter_mut() {
        *x /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand(seed: u64, shape: &[usize]) -> Tensor {
        crate::diffusion::noise::gaussian(seed, shape, &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    fn plain(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let att = q.matmul(&k.t().unwrap()).unwrap();
        candle_nn::ops::softmax(&att, candle_core::D::Minus1)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    /// Blocks of whole heads, of one head's queries (uneven last blocks), a single block, and
    /// cross-attention shapes: the plain path's bits every time.
    #[test]
    fn same_bits_as_the_plain_path() {
        for (bh, n, m, d, block) in [
            (4, 300, 300, 40, 10_000),
            (6, 64, 64, 8, 64 * 64 * 4),
            (3, 257, 77, 16, 1000),
            (2, 100, 100, 24, usize::MAX),
            (2, 1, 5, 3, 1),
        ] {
            let q = (rand(1, &[bh, n, d]) * 0.4).unwrap();
            let k = rand(2, &[bh, m, d]);
            let v = rand(3, &[bh, m, d]);
            assert!(applies(&q, &k, &v));
            let want = plain(&q, &k, &v);
            let got = attention(&q, &k, &v, block).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(bits(&got), bits(&want), "{bh}×{n}×{m}×{d}, block {block}");
        }
    }

    /// The shapes of SD 1.5 at 512 px with the real block size: the first self-attention
    /// (`[2·8, 4096, 4096]` scores, 4 GiB on the plain path) and the VAE's single head.
    #[test]
    #[ignore = "4 GiB and a minute; run by hand after touching this file"]
    fn same_bits_as_the_plain_path_at_sd_size() {
        for (bh, n, m, d) in [
            (16, 4096, 4096, 40),
            (16, 4096, 77, 40),
            (1, 4096, 4096, 512),
        ] {
            let q = (rand(1, &[bh, n, d]) * 0.15).unwrap();
            let (k, v) = (rand(2, &[bh, m, d]), rand(3, &[bh, m, d]));
            let t = std::time::Instant::now();
            let got = attention(&q, &k, &v, BLOCK).unwrap();
            let blocks = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let want = plain(&q, &k, &v);
            let whole = t.elapsed().as_secs_f64();
            eprintln!("{bh}×{n}×{m}×{d}: {blocks:.3} s in blocks, {whole:.3} s whole");
            assert_eq!(bits(&got), bits(&want), "{bh}×{n}×{m}×{d}");
        }
    }

    /// Half precision: the plain path's values (softmax in f32) within rounding.
    #[test]
    fn half_precision_blocks_agree_with_the_plain_path() {
        for dtype in [DType::F16, DType::BF16] {
            let h = |t: Tensor| t.to_dtype(dtype).unwrap();
            let q = h((rand(1, &[4, 300, 40]) * 0.4).unwrap());
            let (k, v) = (h(rand(2, &[4, 300, 40])), h(rand(3, &[4, 300, 40])));
            assert!(applies(&q, &k, &v));
            let got = attention(&q, &k, &v, 10_000).unwrap();
            assert_eq!(got.dtype(), dtype);
            let att = precision::matmul(&q, &k.t().unwrap()).unwrap();
            let want = precision::matmul(&precision::softmax_last(&att).unwrap(), &v).unwrap();
            let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let err = (f(&got) - f(&want))
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 2e-2, "{dtype:?}: {err}");
        }
    }

    #[test]
    fn not_where_a_gradient_flows() {
        let q = candle_core::Var::from_tensor(&rand(1, &[1, 4, 2])).unwrap();
        let k = rand(2, &[1, 4, 2]);
        assert!(!applies(q.as_tensor(), &k, &k));
        assert!(applies(&q.as_tensor().detach(), &k, &k));
    }
}
