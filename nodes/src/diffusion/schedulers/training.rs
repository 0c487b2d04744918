//! The forward process for training (diffusers' `DDPMScheduler.add_noise` and
//! `get_velocity`): noise a clean latent to a per-sample timestep, and the v-prediction
//! target. Textual Inversion trains against `noise` (epsilon models) or the velocity
//! (v-prediction models).
//!
//! The coefficients `sqrt(ᾱ_t)` and `sqrt(1 − ᾱ_t)` are taken in float32 from the float32
//! `ᾱ`, as diffusers does, and broadcast over each sample.

use candle_core::Tensor;

use super::error::{Result, SchedulerError};
use super::ops::{check_float, same_shape};
use super::schedule::NoiseSchedule;

impl NoiseSchedule {
    /// `x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·noise`, with `timesteps[i]` for sample `i`.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        let (a, b) = self.coefficients(x0, noise, timesteps)?;
        Ok((x0.broadcast_mul(&a)? + noise.broadcast_mul(&b)?)?)
    }

    /// The v-prediction target `v = sqrt(ᾱ_t)·noise − sqrt(1 − ᾱ_t)·x₀`.
    pub fn get_velocity(
        &self,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> Result<Tensor> {
        let (a, b) = self.coefficients(sample, noise, timesteps)?;
        Ok((noise.broadcast_mul(&a)? - sample.broadcast_mul(&b)?)?)
    }

    /// `sqrt(ᾱ_t)` and `sqrt(1 − ᾱ_t)` per sample, shaped `[batch, 1, 1, …]`.
    fn coefficients(
        &self,
        x: &Tensor,
        noise: &Tensor,
        timesteps: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        check_float(x, "the clean sample")?;
        same_shape(x, noise, "the noise")?;
        let batch = *x.dims().first().ok_or_else(|| {
            SchedulerError::usage("the sample is a scalar; expected [batch, channels, …]")
        })?;
        if timesteps.len() != batch {
            return Err(SchedulerError::usage(format!(
                "{} timesteps for a batch of {batch}: pass one timestep per sample",
                timesteps.len()
            )));
        }
        let acp = self.alphas_cumprod();
        let mut a = Vec::with_capacity(batch);
        let mut b = Vec::with_capacity(batch);
        for &t in timesteps {
            let alpha = *acp.get(t).ok_or_else(|| {
                SchedulerError::usage(format!(
                    "timestep {t} is out of range: training timesteps are 0..{}",
                    acp.len()
                ))
            })?;
            a.push(alpha.sqrt());
            b.push((1.0 - alpha).sqrt());
        }
        let mut shape = vec![1usize; x.rank()];
        shape[0] = batch;
        let column = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, shape.as_slice(), x.device())?.to_dtype(x.dtype())?)
        };
        Ok((column(a)?, column(b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::SchedulerConfig;
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn checks_batch_and_range() {
        let s = NoiseSchedule::from_config(&SchedulerConfig::default()).unwrap();
        let x = Tensor::zeros((2, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.add_noise(&x, &x, &[1]).is_err());
        assert!(s.add_noise(&x, &x, &[1, 1000]).is_err());
        let out = s.add_noise(&x, &x.ones_like().unwrap(), &[0, 999]).unwrap();
        assert_eq!(out.dims(), [2, 4, 2, 2]);
    }
}
