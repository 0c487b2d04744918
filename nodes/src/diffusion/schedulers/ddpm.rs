//! DDPM (Ho et al. 2020), diffusers' `DDPMScheduler`: the posterior mean
//! `q(x_prev | x_t, x₀)` plus noise of the posterior variance (`fixed_small`) or of `β_t`
//! (`fixed_large`).
//!
//! Unlike DDIM, the previous timestep is the next one in the list (`timesteps()`), and the
//! step after the last timestep uses `ᾱ = 1`. Noise is drawn at every step but the one at
//! timestep 0, exactly where diffusers draws it, so a caller that draws only when
//! [`Scheduler::needs_noise`] says so consumes its random stream as diffusers does.

use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig};
use super::error::{Result, SchedulerError};
use super::ops::{
    call_set_timesteps_first, check_step_inputs, discrete_timestep, mul, required_noise,
};
use super::prediction::predicted_x0;
use super::schedule::NoiseSchedule;
use super::spacing::Placement;
use super::{Scheduler, SchedulerKind};

/// The variance DDPM adds per step (diffusers' `variance_type`; the learned ones need a
/// model that predicts its variance, which Stable Diffusion's does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FixedVariance {
    Small,
    SmallLog,
    Large,
}

pub struct Ddpm {
    schedule: NoiseSchedule,
    prediction: PredictionType,
    placement: Placement,
    clip_range: Option<f64>,
    variance_type: FixedVariance,
    timesteps: Vec<f64>,
}

impl Ddpm {
    pub fn new(config: &SchedulerConfig) -> Result<Ddpm> {
        config.refuse_thresholding()?;
        let variance_type = match config.variance_type.as_deref() {
            None | Some("fixed_small") => FixedVariance::Small,
            Some("fixed_small_log") => FixedVariance::SmallLog,
            Some("fixed_large") => FixedVariance::Large,
            Some(other) => {
                return Err(config.reject(
                    &format!("DDPM \"variance_type\": \"{other}\""),
                    "use fixed_small, fixed_small_log or fixed_large",
                ))
            }
        };
        Ok(Ddpm {
            schedule: NoiseSchedule::from_config(config)?,
            prediction: config.prediction_type,
            placement: Placement::new(config, SchedulerKind::Ddpm),
            clip_range: config.clip_range(),
            variance_type,
            timesteps: Vec::new(),
        })
    }

    /// The timestep after `t` in the schedule, or −1 after the last.
    fn previous_timestep(&self, t: usize) -> Result<i64> {
        let i = self
            .timesteps
            .iter()
            .position(|&x| x == t as f64)
            .ok_or_else(|| {
                SchedulerError::usage(format!(
                    "DDPM: timestep {t} is not in the schedule; pass the values of `timesteps()`"
                ))
            })?;
        Ok(self.timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }

    /// `ᾱ_t` and `ᾱ_prev` (1 past the end).
    fn alphas(&self, t: usize) -> Result<(f32, f32)> {
        let prev_t = self.previous_timestep(t)?;
        let a_prev = self.schedule.alpha_cumprod_prev(prev_t, 1.0);
        Ok((self.schedule.alphas_cumprod()[t], a_prev))
    }

    /// The standard deviation of the noise added at `t` (diffusers' `_get_variance`, then
    /// the square root `step` takes, or the `exp(½·log)` of `fixed_small_log`).
    fn noise_std(&self, t: usize) -> Result<f32> {
        let (a_t, a_prev) = self.alphas(t)?;
        let beta_t = 1.0 - a_t / a_prev;
        let variance = ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20);
        Ok(match self.variance_type {
            FixedVariance::Small => variance.sqrt(),
            FixedVariance::SmallLog => (0.5 * variance.ln()).exp(),
            FixedVariance::Large => beta_t.sqrt(),
        })
    }
}

impl Scheduler for Ddpm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddpm
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = self
            .placement
            .discrete(num_inference_steps, self.schedule.num_train_timesteps())?;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, timestep: f64) -> bool {
        timestep > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.timesteps.is_empty() {
            return Err(call_set_timesteps_first("DDPM"));
        }
        check_step_inputs(model_output, sample)?;
        let t = discrete_timestep(timestep, self.schedule.num_train_timesteps())?;
        let (a_t, a_prev) = self.alphas(t)?;
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let alpha_t = a_t / a_prev;
        let beta_t = 1.0 - alpha_t;
        let x0 = predicted_x0(self.prediction, model_output, sample, a_t, self.clip_range)?;
        let x0_coeff = a_prev.sqrt() * beta_t / b_t;
        let sample_coeff = alpha_t.sqrt() * b_prev / b_t;
        let mean = (mul(&x0, x0_coeff)? + mul(sample, sample_coeff)?)?;
        if t == 0 {
            return Ok(mean);
        }
        let noise = required_noise(noise, model_output, "DDPM")?;
        Ok((mean + mul(noise, self.noise_std(t)?)?)?)
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::super::TimestepSpacing;
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn last_step_is_noise_free() {
        let c = SchedulerConfig {
            timestep_spacing: Some(TimestepSpacing::Linspace),
            ..Default::default()
        };
        let mut s = Ddpm::new(&c).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(*s.timesteps().last().unwrap(), 0.0);
        assert!(!s.needs_noise(0.0));
        let x = Tensor::ones((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        s.step(&x, 0.0, &x, None).unwrap();
        let e = s.step(&x, 111.0, &x, None).unwrap_err().to_string();
        assert!(e.contains("noise"), "{e}");
        let e = s.step(&x, 112.0, &x, None).unwrap_err().to_string();
        assert!(e.contains("not in the schedule"), "{e}");
    }

    #[test]
    fn learned_variance_is_rejected_by_ddpm_only() {
        let c = SchedulerConfig::from_json_str(
            r#"{"variance_type": "learned_range"}"#,
            std::path::Path::new("s.json"),
        )
        .unwrap();
        let e = Ddpm::new(&c).err().unwrap().to_string();
        assert!(
            e.starts_with("s.json: ") && e.contains("learned_range"),
            "{e}"
        );
        assert!(super::super::Ddim::new(&c).is_ok());
    }
}
