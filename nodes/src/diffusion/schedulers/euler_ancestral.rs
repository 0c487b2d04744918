//! Euler ancestral sampling (Karras et al. 2022, k-diffusion), diffusers'
//! `EulerAncestralDiscreteScheduler`.
//!
//! It works in σ space, `σ_t = sqrt((1−ᾱ_t)/ᾱ_t)`: the latents start at `σ_max`-scaled
//! noise (`init_noise_sigma`), the model sees `x / sqrt(σ² + 1)` (`scale_model_input`),
//! and each step takes an Euler step down to `σ_down` and adds fresh noise of `σ_up`, with
//! `σ_down² + σ_up² = σ_next²`. Timesteps are float32 (with `linspace` spacing they fall
//! between training timesteps, and σ is interpolated linearly as `np.interp` does).
//!
//! The position in the schedule is a counter, as in diffusers: the first call finds the
//! timestep in `timesteps()` (the second match if it occurs twice) and each `step`
//! advances by one; `set_timesteps` resets it.

use candle_core::{DType, Tensor};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::error::{Result, SchedulerError};
use super::ops::{call_set_timesteps_first, check_step_inputs, div, mul, required_noise};
use super::schedule::NoiseSchedule;
use super::spacing::Placement;
use super::{Scheduler, SchedulerKind};

pub struct EulerAncestral {
    schedule: NoiseSchedule,
    v_prediction: bool,
    placement: Placement,
    timesteps: Vec<f64>,
    /// σ per timestep, then a final 0.
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerAncestral {
    pub fn new(config: &SchedulerConfig) -> Result<EulerAncestral> {
        let v_prediction = match config.prediction_type {
            PredictionType::Epsilon => false,
            PredictionType::VPrediction => true,
            PredictionType::Sample => {
                return Err(config.reject(
                    "Euler ancestral with \"prediction_type\": \"sample\"",
                    "it takes epsilon or v_prediction; choose ddim or ddpm",
                ))
            }
        };
        let mut schedule = NoiseSchedule::from_config(config)?;
        if config.rescale_betas_zero_snr {
            // A zero ᾱ would make the first σ infinite; diffusers uses 2⁻²⁴ instead.
            schedule.set_last_alpha_cumprod(2f32.powi(-24));
        }
        let mut sigmas = sigma_table(&schedule);
        sigmas.reverse();
        sigmas.push(0.0);
        Ok(EulerAncestral {
            schedule,
            v_prediction,
            placement: Placement::new(config, SchedulerKind::EulerAncestral),
            timesteps: Vec::new(),
            sigmas,
            step_index: None,
        })
    }

    /// σ per timestep of the current schedule, then 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' `index_for_timestep`: the position of `t`, the second one if repeated.
    fn index_of(&self, t: f64) -> Result<usize> {
        let hits: Vec<usize> = (0..self.timesteps.len())
            .filter(|&i| self.timesteps[i] as f32 == t as f32)
            .collect();
        match hits.as_slice() {
            [] => Err(SchedulerError::usage(format!(
                "Euler ancestral: timestep {t} is not in the schedule; pass the values of \
                 `timesteps()` (after set_timesteps)"
            ))),
            [i] => Ok(*i),
            [_, i, ..] => Ok(*i),
        }
    }

    fn current_index(&self, t: f64) -> Result<usize> {
        match self.step_index {
            Some(i) => Ok(i),
            None => self.index_of(t),
        }
    }
}

/// `((1 − ᾱ) / ᾱ) ** 0.5` over the training timesteps, in float32 as diffusers has it (up
/// to torch's not correctly rounded sqrt, see `ops.rs`).
fn sigma_table(schedule: &NoiseSchedule) -> Vec<f32> {
    schedule
        .alphas_cumprod()
        .iter()
        .map(|&a| ((1.0 - a) / a).sqrt())
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)` (f64 arithmetic on the float32 table).
fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let slope = fp[j + 1] as f64 - fp[j] as f64;
    slope * (x - j as f64) + fp[j] as f64
}

impl Scheduler for EulerAncestral {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let ts = self
            .placement
            .euler(num_inference_steps, self.schedule.num_train_timesteps())?;
        let table = sigma_table(&self.schedule);
        self.sigmas = ts
            .iter()
            .map(|&t| interp(t as f64, &table) as f32)
            .chain([0.0])
            .collect();
        self.timesteps = ts.into_iter().map(|t| t as f64).collect();
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// `σ_max` (`sqrt(σ_max² + 1)` with `leading` spacing, whose first timestep is not the
    /// noisiest training timestep), as diffusers defines it.
    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.placement.spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let sigma = self.sigmas[self.current_index(timestep)?];
        div(sample, (sigma * sigma + 1.0).sqrt())
    }

    fn needs_noise(&self, _timestep: f64) -> bool {
        true
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.timesteps.is_empty() {
            return Err(call_set_timesteps_first("Euler ancestral"));
        }
        check_step_inputs(model_output, sample)?;
        let noise = required_noise(noise, model_output, "Euler ancestral")?;
        let i = self.current_index(timestep)?;
        if i + 1 >= self.sigmas.len() {
            return Err(SchedulerError::usage(
                "Euler ancestral: stepped past the last timestep; call set_timesteps to sample again",
            ));
        }
        let (sigma, sigma_to) = (self.sigmas[i], self.sigmas[i + 1]);
        // diffusers steps in float32 and returns the model output's dtype.
        let out_dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;
        let x0 = if self.v_prediction {
            let s2p1 = sigma * sigma + 1.0;
            (mul(&model_output, -sigma / s2p1.sqrt())? + div(&sample, s2p1)?)?
        } else {
            (&sample - mul(&model_output, sigma)?)?
        };
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div(&(&sample - x0)?, sigma)?;
        let prev = (&sample + mul(&derivative, sigma_down - sigma)?)?;
        let prev = (prev + mul(&noise.to_dtype(DType::F32)?, sigma_up)?)?;
        self.step_index = Some(i + 1);
        Ok(prev.to_dtype(out_dtype)?)
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp(-1.0, &fp), 1.0);
        assert_eq!(interp(0.5, &fp), 2.0);
        assert_eq!(interp(1.0, &fp), 3.0);
        assert_eq!(interp(1.25, &fp), 4.0);
        assert_eq!(interp(9.0, &fp), 7.0);
    }

    #[test]
    fn steps_down_to_zero() {
        let c = SchedulerConfig {
            timestep_spacing: Some(TimestepSpacing::Trailing),
            ..Default::default()
        };
        let mut s = EulerAncestral::new(&c).unwrap();
        s.set_timesteps(4).unwrap();
        assert_eq!(s.sigmas().len(), 5);
        assert_eq!(s.sigmas()[4], 0.0);
        assert_eq!(s.init_noise_sigma(), s.sigmas()[0] as f64);
        let x = Tensor::ones((1, 4, 2, 2), DType::F32, &candle_core::Device::Cpu).unwrap();
        let ts = s.timesteps().to_vec();
        for &t in &ts {
            s.step(&x, t, &x, Some(&x)).unwrap();
        }
        let e = s.step(&x, ts[0], &x, Some(&x)).unwrap_err().to_string();
        assert!(e.contains("past the last"), "{e}");
    }
}
