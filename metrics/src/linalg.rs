//! The few dense f64 kernels the estimators need, on faer (blocked, SIMD, multithreaded on
//! the current rayon pool): Gram products, symmetric eigenvalues, and the row statistics of
//! feature sets. Every reduction here is ordered (fixed chunks, summed in order), so results
//! do not depend on the number of threads.

use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

use crate::error::{MetricError, Result};
use crate::features::Features;

/// Rows per chunk of the ordered parallel reductions.
const CHUNK_ROWS: usize = 256;

/// Parallelism for faer: every thread of the current rayon pool.
pub(crate) fn par() -> Par {
    Par::rayon(0)
}

/// `lhs · rhs` (`Accum::Replace`), only the lower triangle (with the diagonal) when
/// `lower_only`; the strict upper triangle of the result is then zero.
pub(crate) fn product(lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>, lower_only: bool) -> Mat<f64> {
    let mut dst = Mat::<f64>::zeros(lhs.nrows(), rhs.ncols());
    let structure = if lower_only {
        BlockStructure::TriangularLower
    } else {
        BlockStructure::Rectangular
    };
    tri_matmul(
        dst.as_mut(),
        structure,
        Accum::Replace,
        lhs,
        BlockStructure::Rectangular,
        rhs,
        BlockStructure::Rectangular,
        1.0,
        par(),
    );
    dst
}

/// Copies the strict lower triangle onto the upper one.
pub(crate) fn mirror_lower(m: &mut Mat<f64>) {
    let n = m.nrows();
    for j in 0..n {
        for i in j + 1..n {
            m[(j, i)] = m[(i, j)];
        }
    }
}

/// Eigenvalues (ascending) of a symmetric matrix, reading its lower triangle.
pub(crate) fn symmetric_eigenvalues(m: &Mat<f64>, what: &'static str) -> Result<Vec<f64>> {
    m.self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| MetricError::NoConvergence(what))
}

/// `Σ √max(λ, 0)` over the eigenvalues of a symmetric positive semi-definite matrix: the
/// trace of its square root, rounding-level negative eigenvalues clamped to 0.
pub(crate) fn trace_sqrt_psd(m: &Mat<f64>, what: &'static str) -> Result<f64> {
    Ok(symmetric_eigenvalues(m, what)?
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum())
}

/// The mean row: per-chunk sums in parallel, added in chunk order.
pub(crate) fn mean(f: &Features) -> Vec<f64> {
    let d = f.d();
    let partial: Vec<Vec<f64>> = f
        .as_slice()
        .par_chunks(CHUNK_ROWS * d)
        .map(|chunk| {
            let mut s = vec![0.0; d];
            for r in chunk.chunks_exact(d) {
                s.iter_mut().zip(r).for_each(|(s, &x)| *s += x);
            }
            s
        })
        .collect();
    let mut mu = vec![0.0; d];
    for s in &partial {
        mu.iter_mut().zip(s).for_each(|(m, &x)| *m += x);
    }
    let inv = 1.0 / f.n() as f64;
    mu.iter_mut().for_each(|m| *m *= inv);
    mu
}

/// `(x_i − μ)·scale` for every row, row-major (= a column-major `d × n` matrix whose columns
/// are the centred observations), and the sum of squares of the result.
pub(crate) fn centred(f: &Features, mu: &[f64], scale: f64) -> (Vec<f64>, f64) {
    let d = f.d();
    let mut out = vec![0.0; f.n() * d];
    let sums: Vec<f64> = out
        .par_chunks_mut(CHUNK_ROWS * d)
        .zip(f.as_slice().par_chunks(CHUNK_ROWS * d))
        .map(|(dst, src)| {
            let mut ss = 0.0;
            for (o, (&x, &m)) in dst.iter_mut().zip(src.iter().zip(mu.iter().cycle())) {
                *o = (x - m) * scale;
                ss += *o * *o;
            }
            ss
        })
        .collect();
    (out, sums.iter().sum())
}

/// Rows per block of [`covariance`].
const COV_BLOCK_ROWS: usize = 1024;

/// `Σ = Σ_i (x_i − μ)(x_i − μ)ᵀ / (n − 1)` (full, symmetric), accumulated over blocks of
/// rows centred in a small reused buffer (no centred copy of the whole set), lower triangle
/// only, then mirrored.
pub(crate) fn covariance(f: &Features, mu: &[f64]) -> Mat<f64> {
    let (n, d) = (f.n(), f.d());
    let alpha = 1.0 / (n - 1) as f64;
    let mut cov = Mat::<f64>::zeros(d, d);
    let mut buf = vec![0.0; COV_BLOCK_ROWS.min(n) * d];
    for (b, block) in f.as_slice().chunks(COV_BLOCK_ROWS * d).enumerate() {
        let rows = block.len() / d;
        let buf = &mut buf[..rows * d];
        buf.par_chunks_mut(d)
            .zip(block.par_chunks(d))
            .for_each(|(o, x)| {
                o.iter_mut()
                    .zip(x.iter().zip(mu))
                    .for_each(|(o, (&x, &m))| *o = x - m)
            });
        let c = columns(buf, d, rows);
        tri_matmul(
            cov.as_mut(),
            BlockStructure::TriangularLower,
            if b == 0 { Accum::Replace } else { Accum::Add },
            c,
            BlockStructure::Rectangular,
            c.transpose(),
            BlockStructure::Rectangular,
            alpha,
            par(),
        );
    }
    mirror_lower(&mut cov);
    cov
}

/// Column-major view of a row-major `n × d` buffer as `d × n`.
pub(crate) fn columns(data: &[f64], d: usize, n: usize) -> MatRef<'_, f64> {
    MatRef::from_column_major_slice(data, d, n)
}
