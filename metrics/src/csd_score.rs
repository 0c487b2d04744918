//! The NSYNC paper's CSD score: `mean_i cos(mean_j r_j, g_i)`, the cosine between each
//! generated image's style vector `g_i` and the mean style vector of the real test images
//! `r_j` (not re-normalised before the cosine, which normalises it anyway), averaged over the
//! generated images. Higher is better.

use crate::error::{MetricError, Result};
use crate::features::{at_least, same_dimension, Features};
use crate::linalg;

/// The CSD score of `generated` against `real` style vectors.
pub fn csd_score(real: &Features, generated: &Features) -> Result<f64> {
    let cos = csd_per_image(real, generated)?;
    Ok(cos.iter().sum::<f64>() / cos.len() as f64)
}

/// `cos(mean_j r_j, g_i)` for every generated image `i`, in order.
pub fn csd_per_image(real: &Features, generated: &Features) -> Result<Vec<f64>> {
    same_dimension(real, generated)?;
    at_least("CSD", 1, real, generated)?;
    let centre = linalg::mean(real);
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let centre_norm = norm(&centre);
    if centre_norm == 0.0 {
        return Err(MetricError::Setting {
            name: "real",
            problem: "style vectors average to zero, so their mean has no direction; \
                      check the CSD features of the real images"
                .into(),
        });
    }
    (0..generated.n())
        .map(|i| {
            let g = generated.row(i);
            let gn = norm(g);
            if gn == 0.0 {
                return Err(MetricError::ZeroRow {
                    context: "CSD, generated set".into(),
                    row: i,
                });
            }
            let dot: f64 = centre.iter().zip(g).map(|(a, b)| a * b).sum();
            Ok(dot / (centre_norm * gn))
        })
        .collect()
}
