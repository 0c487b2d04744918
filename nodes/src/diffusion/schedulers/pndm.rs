//! PNDM's linear multistep half (PLMS, Liu et al. 2022), diffusers' `PNDMScheduler` with
//! `skip_prk_steps: true`, the scheduler Stable Diffusion 1.x ships with.
//!
//! PLMS combines the last up to four model outputs (Adams–Bashforth). It has no history at
//! the start, so diffusers runs the first timestep twice: step 0 goes from `t₀` to
//! `t₀ − r` (`r = num_train_timesteps / n`) with the first output alone and remembers the
//! sample; step 1, at the repeated timestep `t₁`, averages both outputs and redoes the step
//! from the remembered sample, as if from `t₁ + r` to `t₁`. Hence `n + 1` timesteps for
//! `n` steps, `[901, 801, 801, 701, …]`. Like diffusers, it always steps by `r`, even where
//! the spacing (`linspace`) places timesteps `r ± 1` apart.
//!
//! The Runge–Kutta warm-up (`skip_prk_steps: false`, diffusers' default for this class)
//! is not implemented; such a config is rejected.

use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig};
use super::error::{Result, SchedulerError};
use super::ops::{call_set_timesteps_first, check_step_inputs, discrete_timestep, div, mul};
use super::prediction::predicted_eps;
use super::schedule::NoiseSchedule;
use super::spacing::Placement;
use super::{Scheduler, SchedulerKind};

pub struct Pndm {
    schedule: NoiseSchedule,
    /// Epsilon or v-prediction.
    prediction: PredictionType,
    placement: Placement,
    final_alpha_cumprod: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f64>,
    /// Steps taken since `set_timesteps`.
    counter: usize,
    /// The last (up to four) model outputs, oldest first (diffusers' `ets`).
    history: Vec<Tensor>,
    /// The sample at the first timestep, which step 1 starts again from.
    first_sample: Option<Tensor>,
}

impl Pndm {
    pub fn new(config: &SchedulerConfig) -> Result<Pndm> {
        if !config.skip_prk_steps.unwrap_or(false) {
            return Err(config.reject(
                "PNDM's Runge-Kutta warm-up (\"skip_prk_steps\": false or absent)",
                "set \"skip_prk_steps\": true (as Stable Diffusion's configs do) or choose ddim",
            ));
        }
        if config.prediction_type == PredictionType::Sample {
            return Err(config.reject(
                "PNDM with \"prediction_type\": \"sample\"",
                "PNDM takes epsilon or v_prediction; choose ddim or ddpm",
            ));
        }
        // PNDMScheduler does not accept rescale_betas_zero_snr: diffusers ignores the key.
        let schedule = NoiseSchedule::new(config, false)?;
        let final_alpha_cumprod =
            schedule.final_alpha_cumprod(config.set_alpha_to_one_for(SchedulerKind::Pndm));
        Ok(Pndm {
            schedule,
            prediction: config.prediction_type,
            placement: Placement::new(config, SchedulerKind::Pndm),
            final_alpha_cumprod,
            num_inference_steps: None,
            timesteps: Vec::new(),
            counter: 0,
            history: Vec::new(),
            first_sample: None,
        })
    }

    /// diffusers' `_get_prev_sample`: formula (9) of the PNDM paper, from `t` to `prev_t`.
    fn prev_sample(&self, sample: &Tensor, t: usize, prev_t: i64, eps: &Tensor) -> Result<Tensor> {
        let a_t = *self.schedule.alphas_cumprod().get(t).ok_or_else(|| {
            SchedulerError::usage(format!(
                "PNDM: timestep {t} is past the schedule; pass the values of `timesteps()`"
            ))
        })?;
        let a_prev = self
            .schedule
            .alpha_cumprod_prev(prev_t, self.final_alpha_cumprod);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = predicted_eps(self.prediction, eps, sample, a_t)?;
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        Ok((mul(sample, sample_coeff)? - div(&mul(&eps, a_prev - a_t)?, denom)?)?)
    }
}

impl Scheduler for Pndm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pndm
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        // diffusers: concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1] over ascending ts, i.e. the
        // second-noisiest timestep twice.
        let mut ts = self
            .placement
            .discrete(num_inference_steps, self.schedule.num_train_timesteps())?;
        if ts.len() >= 2 {
            ts.insert(1, ts[1]);
        }
        self.timesteps = ts;
        self.num_inference_steps = Some(num_inference_steps);
        self.counter = 0;
        self.history.clear();
        self.first_sample = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, _timestep: f64) -> bool {
        false
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self
            .num_inference_steps
            .ok_or_else(|| call_set_timesteps_first("PNDM"))?;
        check_step_inputs(model_output, sample)?;
        let ratio = (self.schedule.num_train_timesteps() / n) as i64;
        let mut t = discrete_timestep(timestep, self.schedule.num_train_timesteps())? as i64;
        let mut prev_t = t - ratio;
        if self.counter != 1 {
            if self.history.len() > 3 {
                self.history.remove(0);
            }
            self.history.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let mut sample = sample.clone();
        let e = &self.history;
        let eps = match (e.len(), self.counter) {
            (1, 0) => {
                self.first_sample = Some(sample.clone());
                model_output.clone()
            }
            (1, 1) => {
                sample = self.first_sample.take().ok_or_else(|| {
                    SchedulerError::usage("PNDM: call set_timesteps before the first step")
                })?;
                div(&(model_output + &e[0])?, 2.0)?
            }
            (2, _) => div(&(mul(&e[1], 3.0)? - &e[0])?, 2.0)?,
            (3, _) => div(
                &((mul(&e[2], 23.0)? - mul(&e[1], 16.0)?)? + mul(&e[0], 5.0)?)?,
                12.0,
            )?,
            (4, _) => mul(
                &(((mul(&e[3], 55.0)? - mul(&e[2], 59.0)?)? + mul(&e[1], 37.0)?)?
                    - mul(&e[0], 9.0)?)?,
                (1.0f64 / 24.0) as f32,
            )?,
            _ => {
                return Err(SchedulerError::usage(
                    "PNDM: step history out of order; call set_timesteps before sampling again",
                ))
            }
        };
        let prev = self.prev_sample(&sample, t as usize, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_runge_kutta_and_sample_prediction() {
        let e = Pndm::new(&SchedulerConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("skip_prk_steps"), "{e}");
        let c = SchedulerConfig {
            skip_prk_steps: Some(true),
            prediction_type: PredictionType::Sample,
            ..Default::default()
        };
        assert!(Pndm::new(&c).is_err());
    }

    #[test]
    fn one_step_has_one_timestep() {
        let c = SchedulerConfig {
            skip_prk_steps: Some(true),
            ..Default::default()
        };
        let mut s = Pndm::new(&c).unwrap();
        s.set_timesteps(1).unwrap();
        assert_eq!(s.timesteps(), [0.0]);
    }
}
