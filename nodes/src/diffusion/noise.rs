//! Seeded Gaussian noise, the same on every machine.
//!
//! Every random draw of the diffusion nodes (initial latents, VAE samples, training noise,
//! ancestral steps) comes from a ChaCha8 stream seeded by a 64-bit seed (for per-item work:
//! derived from the pipeline seed and the item's id), so an item's noise never depends on
//! which other items share its batch. ChaCha8 is specified bit for bit, unlike `StdRng`.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Standard normal noise of `shape` (f32) from `seed`.
pub fn gaussian(seed: u64, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, device)
}

/// A further seed from `seed` for a named purpose (e.g. step `i` of a sampler), so one item
/// seed can feed several independent streams.
pub fn derive(seed: u64, purpose: &str, index: u64) -> u64 {
    nsync_cache::FramedHasher::new("nsync.noise.v1")
        .u64(1, seed)
        .str(2, purpose)
        .u64(3, index)
        .finish()
        .to_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_standard() {
        let a = gaussian(7, &[4, 1000], &Device::Cpu).unwrap();
        let b = gaussian(7, &[4, 1000], &Device::Cpu).unwrap();
        let c = gaussian(8, &[4, 1000], &Device::Cpu).unwrap();
        let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(va, c.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        let var = va.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / va.len() as f32;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
        assert_ne!(derive(1, "step", 0), derive(1, "step", 1));
    }
}
