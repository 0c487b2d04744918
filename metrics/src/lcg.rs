//! The deterministic feature generator of `shared/docs/metrics.md`, shared with the Python
//! scripts that wrote the weight-free reference values: a 64-bit LCG,
//! `s ← s·6364136223846793005 + 1442695040888963407 (mod 2⁶⁴)`, stepped before each use,
//! `u = (s >> 11)·2⁻⁵³`, value `scale·(2u − 1) + shift`, row-major.
//!
//! Tests use it to rebuild the reference inputs; benchmarks use it for large feature sets
//! (10,000 × 2048) without any network.

use crate::error::Result;
use crate::features::Features;

/// The generator's state.
#[derive(Clone, Debug)]
pub struct Lcg {
    state: u64,
}

impl Lcg {
    /// A generator whose first step starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Lcg { state: seed }
    }

    /// Steps, then returns `u ∈ [0, 1)` with 53 random bits.
    pub fn next_unit(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.state >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `scale·(2u − 1) + shift`: uniform on `[shift − scale, shift + scale)`.
    pub fn next_value(&mut self, scale: f64, shift: f64) -> f64 {
        scale * (2.0 * self.next_unit() - 1.0) + shift
    }
}

/// `lcg_matrix(seed, n, d, scale, shift)` of the references: `n` rows of `d` values.
pub fn lcg_matrix(seed: u64, n: usize, d: usize, scale: f64, shift: f64) -> Result<Features> {
    let mut g = Lcg::new(seed);
    let data = (0..n * d).map(|_| g.next_value(scale, shift)).collect();
    Features::from_vec(n, d, data)
}
