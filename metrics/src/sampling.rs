//! Seeded index draws for KID subsets and bootstrap resamples.
//!
//! Draws use ChaCha8 (`rand_chacha`, a stream fixed by its specification) and a bounded
//! integer by masked rejection on `next_u64`, written here rather than taken from `rand`'s
//! `random_range`, so the indices, and therefore the numbers, never change with a `rand`
//! upgrade.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::mt19937::Mt19937;

/// Which generator draws KID's subsets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SubsetSampler {
    /// ChaCha8 seeded with `seed`, partial Fisher–Yates (the default).
    #[default]
    ChaCha8,
    /// torch-fidelity's draws: `np.random.RandomState(seed).choice(n, m, replace=False)`,
    /// real subset then generated subset, per subset. `seed` must fit in 32 bits.
    NumpyLegacy,
}

/// A seeded source of index sets.
pub(crate) enum IndexRng {
    ChaCha(Box<ChaCha8Rng>),
    Numpy(Box<Mt19937>),
}

impl IndexRng {
    pub(crate) fn chacha(seed: u64) -> Self {
        IndexRng::ChaCha(Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    pub(crate) fn numpy(seed: u32) -> Self {
        IndexRng::Numpy(Box::new(Mt19937::new(seed)))
    }

    /// `m` distinct indices of `0..n` in draw order (`m ≤ n`).
    pub(crate) fn subset(&mut self, n: usize, m: usize) -> Vec<usize> {
        match self {
            IndexRng::ChaCha(rng) => {
                let mut p: Vec<usize> = (0..n).collect();
                for i in 0..m {
                    let j = i + below(rng, (n - i) as u64) as usize;
                    p.swap(i, j);
                }
                p.truncate(m);
                p
            }
            IndexRng::Numpy(mt) => {
                let mut p = mt.permutation(n);
                p.truncate(m);
                p
            }
        }
    }
}

/// Uniform on `0..bound` (`bound ≥ 1`) by masked rejection.
pub(crate) fn below(rng: &mut impl RngCore, bound: u64) -> u64 {
    let max = bound - 1;
    if max == 0 {
        return 0;
    }
    let mask = u64::MAX >> max.leading_zeros();
    loop {
        let v = rng.next_u64() & mask;
        if v <= max {
            return v;
        }
    }
}
