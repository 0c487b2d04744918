//! Seeded percentile bootstrap intervals for any metric: each replicate resamples the real
//! and the generated images with replacement (each set to its own size, real first) and
//! recomputes the metric; the interval is the `(1 ± level)/2` quantiles of the replicates,
//! linearly interpolated as `numpy.percentile` does.
//!
//! (The FID numbers of the NSYNC paper are the *mean* of 10 unseeded bootstrap FIDs, which
//! [`Interval::mean`] reproduces in kind.)

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{MetricError, Result};
use crate::features::Features;
use crate::sampling::below;

/// A bootstrap interval and the replicates' summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Lower bound: the `(1 − level)/2` quantile.
    pub low: f64,
    /// Upper bound: the `(1 + level)/2` quantile.
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Number of replicates.
    pub replicates: usize,
    /// Mean of the replicates.
    pub mean: f64,
    /// Sample standard deviation of the replicates (0 for one replicate).
    pub std: f64,
}

/// A percentile interval of `metric(real*, generated*)` over `replicates` seeded resamples.
pub fn bootstrap<F>(
    real: &Features,
    generated: &Features,
    metric: &F,
    replicates: usize,
    seed: u64,
    level: f64,
) -> Result<Interval>
where
    F: Fn(&Features, &Features) -> Result<f64> + ?Sized,
{
    if replicates == 0 {
        return Err(MetricError::Setting {
            name: "bootstrap",
            problem: "needs at least 1 replicate (200 or more for a 95% interval)".into(),
        });
    }
    if !(level > 0.0 && level < 1.0) {
        return Err(MetricError::Setting {
            name: "confidence",
            problem: format!("must be between 0 and 1 (e.g. 0.95); got {level}"),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(replicates);
    for _ in 0..replicates {
        let mut draw = |n: usize| -> Vec<usize> {
            (0..n).map(|_| below(&mut rng, n as u64) as usize).collect()
        };
        let r = real.select(&draw(real.n()));
        let g = generated.select(&draw(generated.n()));
        values.push(metric(&r, &g)?);
    }
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (k - 1.0)).sqrt()
    } else {
        0.0
    };
    values.sort_by(f64::total_cmp);
    Ok(Interval {
        low: quantile(&values, (1.0 - level) / 2.0),
        high: quantile(&values, (1.0 + level) / 2.0),
        level,
        replicates,
        mean,
        std,
    })
}

/// The `q` quantile of sorted values, linear interpolation (numpy's default).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = pos - lo as f64;
    sorted[lo] + t * (sorted[hi] - sorted[lo])
}
