//! The estimators of the four metrics, on feature rows, in f64, number for number with the
//! reference implementations (definitions: `shared/docs/metrics.md`; reference values:
//! `tests/fixtures/eval/metrics_refs.json`, checked by `metrics/tests/metrics_refs.rs`).
//!
//! - [`Features`]: validated feature rows (one per image);
//! - [`fid()`]: FID, μ and Σ in f64 with the `N − 1` divisor, `Tr (Σ1 Σ2)^½` through the
//!   symmetric form with symmetric eigendecompositions (exact rewrites that stay fast at
//!   10,000 × 2048 and well defined with fewer images than dimensions); [`frechet_distance`]
//!   for given statistics;
//! - [`kid()`]: KID, unbiased polynomial MMD² over seeded subsets ([`polynomial_mmd`] for the
//!   other estimators and the variance estimate);
//! - [`cmmd()`]: CMMD, biased Gaussian MMD² (σ = 10, ×1000);
//! - [`csd_score`]: the paper's CSD score;
//! - [`bootstrap()`]: seeded percentile intervals for any of them;
//! - [`lcg_matrix`]: the references' deterministic feature generator (tests, benchmarks).
//!
//! Heavy products go through faer (blocked, SIMD, multithreaded on the current rayon pool);
//! results do not depend on the thread count.

mod bootstrap;
mod cmmd;
mod csd_score;
mod error;
mod features;
mod fid;
mod gaussian;
mod kid;
mod lcg;
mod linalg;
mod mt19937;
mod sampling;

pub use bootstrap::{bootstrap, Interval};
pub use cmmd::{cmmd, CMMD_SCALE, CMMD_SIGMA};
pub use csd_score::{csd_per_image, csd_score};
pub use error::{MetricError, Result, Set};
pub use features::Features;
pub use fid::{fid, frechet_distance, FidValue, SqrtTraceMethod};
pub use gaussian::GaussianStats;
pub use kid::{
    kid, kid_with, polynomial_kernel, polynomial_mmd, KidSettings, KidValue, PolynomialMmd,
};
pub use lcg::{lcg_matrix, Lcg};
pub use mt19937::Mt19937;
pub use sampling::SubsetSampler;

#[cfg(test)]
mod tests;
