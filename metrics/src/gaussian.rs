//! [`GaussianStats`]: the mean and covariance FID compares, as pytorch-fid computes them
//! (`np.mean(act, axis=0)`, `np.cov(act, rowvar=False)`: float64, `N − 1` divisor), or given
//! directly (precomputed statistics, closed-form tests).

use faer::Mat;

use crate::error::{MetricError, Result};
use crate::features::Features;
use crate::linalg;

/// Mean `μ` and covariance `Σ` (full, symmetric) of a feature set.
#[derive(Clone, Debug)]
pub struct GaussianStats {
    pub(crate) mean: Vec<f64>,
    pub(crate) cov: Mat<f64>,
}

impl GaussianStats {
    /// `μ` and `Σ` of `features` (at least 2 rows: the `N − 1` divisor).
    pub fn from_features(features: &Features) -> Result<Self> {
        if features.n() < 2 {
            return Err(MetricError::Statistics(format!(
                "a covariance needs at least 2 feature rows (the N − 1 divisor); got {}",
                features.n()
            )));
        }
        let mean = linalg::mean(features);
        let cov = linalg::covariance(features, &mean);
        Ok(GaussianStats { mean, cov })
    }

    /// Statistics given directly: `mean` of length `d` and a row-major `d × d` symmetric
    /// positive semi-definite `covariance`.
    pub fn from_parts(mean: Vec<f64>, covariance: &[f64]) -> Result<Self> {
        let d = mean.len();
        if d == 0 {
            return Err(MetricError::Statistics("the mean is empty".into()));
        }
        if covariance.len() != d * d {
            return Err(MetricError::Statistics(format!(
                "the mean has {d} values, so the covariance needs {d} × {d} = {} values; got {}",
                d * d,
                covariance.len()
            )));
        }
        if mean.iter().chain(covariance).any(|v| !v.is_finite()) {
            return Err(MetricError::Statistics(
                "the mean or covariance holds NaN or infinity".into(),
            ));
        }
        let cov = Mat::from_fn(d, d, |i, j| covariance[i * d + j]);
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (cov[(i, j)], cov[(j, i)]);
                if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                    return Err(MetricError::Statistics(format!(
                        "the covariance is not symmetric: Σ[{i}][{j}] = {a} but Σ[{j}][{i}] = {b}"
                    )));
                }
            }
        }
        Ok(GaussianStats { mean, cov })
    }

    /// Dimension `d`.
    pub fn d(&self) -> usize {
        self.mean.len()
    }

    /// `μ`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// `Σ[i][j]`.
    pub fn covariance(&self, i: usize, j: usize) -> f64 {
        self.cov[(i, j)]
    }

    /// `Tr Σ`.
    pub fn trace(&self) -> f64 {
        (0..self.d()).map(|i| self.cov[(i, i)]).sum()
    }
}
