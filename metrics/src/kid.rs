//! KID: the unbiased MMD² with the polynomial kernel `k(x, y) = (x·y/d + 1)³`, averaged over
//! seeded random subsets (torch-fidelity, clean-fid and Bińkowski et al.'s definition).
//!
//! Per subset of size `m`:
//! `MMD² = [Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)] / (m(m−1)) − 2 Σ_{i,j} k(x_i,y_j) / m²`.
//! The kernel matrices come from blocked f64 matrix products (faer); the mean and the
//! population standard deviation (`np.std`, as torch-fidelity reports) over subsets are
//! returned. [`polynomial_mmd`] gives, for two equal-sized sets, the other estimators of
//! Bińkowski et al.'s reference code and the variance estimate of the unbiased one.

use faer::Mat;

use crate::error::{MetricError, Result, Set};
use crate::features::{at_least, same_dimension, Features};
use crate::linalg;
use crate::sampling::{IndexRng, SubsetSampler};

/// Default subsets and the subset size cap.
const DEFAULT_SUBSETS: usize = 100;
const DEFAULT_SUBSET_SIZE: usize = 1000;

/// KID's sampling settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidSettings {
    /// Number of random subsets (default 100).
    pub subsets: usize,
    /// Images per subset; `None`: `min(n_real, n_generated, 1000)`.
    pub subset_size: Option<usize>,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidSettings {
    fn default() -> Self {
        KidSettings {
            subsets: DEFAULT_SUBSETS,
            subset_size: None,
            seed: 0,
        }
    }
}

/// A KID estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KidValue {
    /// Mean of the per-subset unbiased MMD² (may be slightly negative).
    pub mean: f64,
    /// Population standard deviation over subsets (`np.std`, as torch-fidelity). Exactly 0
    /// when the subset size equals both set sizes: every subset is then a permutation of the
    /// full sets, so the value is computed once (torch-fidelity reports rounding noise, ~1e-16).
    pub std: f64,
    /// Images per subset actually used.
    pub subset_size: usize,
    /// Number of subsets.
    pub subsets: usize,
    /// The default size 1000 was reduced to the smallest set's size (clean-fid's rule;
    /// torch-fidelity would stop with an error).
    pub reduced: bool,
}

impl KidValue {
    /// A sentence for reports when the subset size was reduced.
    pub fn notice(&self) -> Option<String> {
        self.reduced.then(|| {
            format!(
                "KID: the default subset size {DEFAULT_SUBSET_SIZE} was reduced to {} \
                 (the smallest set's size)",
                self.subset_size
            )
        })
    }
}

/// `(x·y/d + 1)³`.
pub fn polynomial_kernel(x: &[f64], y: &[f64]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    (dot / x.len() as f64 + 1.0).powi(3)
}

/// KID with ChaCha8 subset draws.
pub fn kid(real: &Features, generated: &Features, settings: &KidSettings) -> Result<KidValue> {
    kid_with(real, generated, settings, SubsetSampler::ChaCha8)
}

/// KID with the given subset generator ([`SubsetSampler::NumpyLegacy`] reproduces
/// torch-fidelity's subsets for the same seed).
pub fn kid_with(
    real: &Features,
    generated: &Features,
    settings: &KidSettings,
    sampler: SubsetSampler,
) -> Result<KidValue> {
    let d = same_dimension(real, generated)?;
    at_least("KID", 2, real, generated)?;
    if settings.subsets == 0 {
        return Err(MetricError::Setting {
            name: "kid_subsets",
            problem: "must be at least 1 (the default is 100)".into(),
        });
    }
    let (n1, n2) = (real.n(), generated.n());
    let (m, reduced) = match settings.subset_size {
        None => {
            let m = n1.min(n2).min(DEFAULT_SUBSET_SIZE);
            (m, m < DEFAULT_SUBSET_SIZE)
        }
        Some(m) if m < 2 => {
            return Err(MetricError::Setting {
                name: "kid_subset_size",
                problem: format!(
                    "must be at least 2 (the unbiased MMD² divides by m(m−1)); got {m}"
                ),
            })
        }
        Some(m) => {
            for (set, n) in [(Set::Real, n1), (Set::Generated, n2)] {
                if m > n {
                    return Err(MetricError::SubsetTooLarge {
                        subset_size: m,
                        available: n,
                        set,
                    });
                }
            }
            (m, false)
        }
    };
    let mmds = if m == n1 && m == n2 {
        // Every subset is a permutation of the full sets: the same value up to rounding.
        vec![unbiased_mmd2(real, generated, d); settings.subsets]
    } else {
        let mut rng = match sampler {
            SubsetSampler::ChaCha8 => IndexRng::chacha(settings.seed),
            SubsetSampler::NumpyLegacy => {
                let seed = u32::try_from(settings.seed).map_err(|_| MetricError::Setting {
                    name: "seed",
                    problem: format!(
                        "must be below 2^32 for numpy-compatible KID subsets; got {}",
                        settings.seed
                    ),
                })?;
                IndexRng::numpy(seed)
            }
        };
        (0..settings.subsets)
            .map(|_| {
                let x = real.select(&rng.subset(n1, m));
                let y = generated.select(&rng.subset(n2, m));
                unbiased_mmd2(&x, &y, d)
            })
            .collect()
    };
    let k = mmds.len() as f64;
    let mean = mmds.iter().sum::<f64>() / k;
    let std = (mmds.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / k).sqrt();
    Ok(KidValue {
        mean,
        std,
        subset_size: m,
        subsets: settings.subsets,
        reduced,
    })
}

/// The kernel matrix `(X Yᵀ/d + 1)³`; only its lower triangle when `lower_only`.
fn kernel_matrix(x: &Features, y: &Features, d: usize, lower_only: bool) -> Mat<f64> {
    let mut k = linalg::product(x.columns().transpose(), y.columns(), lower_only);
    let inv_d = 1.0 / d as f64;
    for j in 0..k.ncols() {
        let start = if lower_only { j } else { 0 };
        for v in &mut k.col_as_slice_mut(j)[start..] {
            *v = (*v * inv_d + 1.0).powi(3);
        }
    }
    k
}

/// `Σ_{i≠j} K_ij` of a symmetric kernel matrix given by its lower triangle.
fn off_diagonal_sum_lower(k: &Mat<f64>) -> f64 {
    (0..k.ncols())
        .map(|j| k.col_as_slice(j)[j + 1..].iter().sum::<f64>())
        .sum::<f64>()
        * 2.0
}

/// The unbiased MMD² of two sets of equal size `m ≥ 2`.
fn unbiased_mmd2(x: &Features, y: &Features, d: usize) -> f64 {
    let m = x.n() as f64;
    let sxx = off_diagonal_sum_lower(&kernel_matrix(x, x, d, true));
    let syy = off_diagonal_sum_lower(&kernel_matrix(y, y, d, true));
    let kxy = kernel_matrix(x, y, d, false);
    let sxy: f64 = (0..kxy.ncols())
        .map(|j| kxy.col_as_slice(j).iter().sum::<f64>())
        .sum();
    (sxx + syy) / (m * (m - 1.0)) - 2.0 * sxy / (m * m)
}

/// The polynomial-kernel MMD² estimators of Bińkowski et al.'s `_mmd2_and_variance` on two
/// full sets of equal size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolynomialMmd {
    /// The unbiased estimator KID averages.
    pub unbiased: f64,
    /// The biased (V-statistic) estimator, diagonals included.
    pub biased: f64,
    /// The U-statistic, which also drops the cross terms `k(x_i, y_i)`.
    pub u_statistic: f64,
    /// The estimated variance of `unbiased` (`None` below 3 images).
    pub variance: Option<f64>,
}

/// All of [`PolynomialMmd`] for two sets of the same size (at least 2 images each).
pub fn polynomial_mmd(x: &Features, y: &Features) -> Result<PolynomialMmd> {
    let d = same_dimension(x, y)?;
    at_least("the polynomial MMD", 2, x, y)?;
    if x.n() != y.n() {
        return Err(MetricError::Setting {
            name: "sets",
            problem: format!(
                "of the polynomial MMD estimators must have the same size; got {} real and {} \
                 generated images (use KID with a subset size for unequal sets)",
                x.n(),
                y.n()
            ),
        });
    }
    let mut kxx = kernel_matrix(x, x, d, true);
    let mut kyy = kernel_matrix(y, y, d, true);
    linalg::mirror_lower(&mut kxx);
    linalg::mirror_lower(&mut kyy);
    let kxy = kernel_matrix(x, y, d, false);
    let m = x.n();
    let mf = m as f64;
    let diag = |k: &Mat<f64>| (0..m).map(|i| k[(i, i)]).collect::<Vec<_>>();
    let sqn = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    let (diag_x, diag_y) = (diag(&kxx), diag(&kyy));
    let row_sums = |k: &Mat<f64>| {
        (0..m)
            .map(|i| (0..m).map(|j| k[(i, j)]).sum::<f64>())
            .collect::<Vec<_>>()
    };
    let kt_xx_sums: Vec<f64> = row_sums(&kxx)
        .iter()
        .zip(&diag_x)
        .map(|(s, d)| s - d)
        .collect();
    let kt_yy_sums: Vec<f64> = row_sums(&kyy)
        .iter()
        .zip(&diag_y)
        .map(|(s, d)| s - d)
        .collect();
    let kxy_sums_1 = row_sums(&kxy);
    let kxy_sums_0: Vec<f64> = (0..m).map(|j| kxy.col_as_slice(j).iter().sum()).collect();
    let kt_xx_sum: f64 = kt_xx_sums.iter().sum();
    let kt_yy_sum: f64 = kt_yy_sums.iter().sum();
    let kxy_sum: f64 = kxy_sums_0.iter().sum();
    let trace_xy: f64 = (0..m).map(|i| kxy[(i, i)]).sum();
    let (sum_diag_x, sum_diag_y) = (diag_x.iter().sum::<f64>(), diag_y.iter().sum::<f64>());

    let biased = (kt_xx_sum + sum_diag_x) / (mf * mf) + (kt_yy_sum + sum_diag_y) / (mf * mf)
        - 2.0 * kxy_sum / (mf * mf);
    let same = (kt_xx_sum + kt_yy_sum) / (mf * (mf - 1.0));
    let unbiased = same - 2.0 * kxy_sum / (mf * mf);
    let u_statistic = same - 2.0 * (kxy_sum - trace_xy) / (mf * (mf - 1.0));

    let variance = (m >= 3).then(|| {
        let all_sq = |k: &Mat<f64>| (0..m).map(|j| sqn(k.col_as_slice(j))).sum::<f64>();
        let kt_xx_2_sum = all_sq(&kxx) - sqn(&diag_x);
        let kt_yy_2_sum = all_sq(&kyy) - sqn(&diag_y);
        let kxy_2_sum = all_sq(&kxy);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
        let dot_xx_xy = dot(&kt_xx_sums, &kxy_sums_1);
        let dot_yy_yx = dot(&kt_yy_sums, &kxy_sums_0);
        let (m1, m2) = (mf - 1.0, mf - 2.0);
        let zeta1 = 1.0 / (mf * m1 * m2)
            * (sqn(&kt_xx_sums) - kt_xx_2_sum + sqn(&kt_yy_sums) - kt_yy_2_sum)
            - 1.0 / (mf * m1).powi(2) * (kt_xx_sum.powi(2) + kt_yy_sum.powi(2))
            + 1.0 / (mf * mf * m1) * (sqn(&kxy_sums_1) + sqn(&kxy_sums_0) - 2.0 * kxy_2_sum)
            - 2.0 / mf.powi(4) * kxy_sum.powi(2)
            - 2.0 / (mf * mf * m1) * (dot_xx_xy + dot_yy_yx)
            + 2.0 / (mf.powi(3) * m1) * (kt_xx_sum + kt_yy_sum) * kxy_sum;
        let zeta2 = 1.0 / (mf * m1) * (kt_xx_2_sum + kt_yy_2_sum)
            - 1.0 / (mf * m1).powi(2) * (kt_xx_sum.powi(2) + kt_yy_sum.powi(2))
            + 2.0 / (mf * mf) * kxy_2_sum
            - 2.0 / mf.powi(4) * kxy_sum.powi(2)
            - 4.0 / (mf * mf * m1) * (dot_xx_xy + dot_yy_yx)
            + 4.0 / (mf.powi(3) * m1) * (kt_xx_sum + kt_yy_sum) * kxy_sum;
        4.0 * (mf - 2.0) / (mf * (mf - 1.0)) * zeta1 + 2.0 / (mf * (mf - 1.0)) * zeta2
    });
    Ok(PolynomialMmd {
        unbiased,
        biased,
        u_statistic,
        variance,
    })
}
