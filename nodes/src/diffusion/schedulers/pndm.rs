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

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::error::{Result, SchedulerError};
use super::ops::{check_float, discrete_timestep, div, mul, same_shape};
use super::schedule::NoiseSchedule;
use super::spacing::discrete_timesteps;
use super::{Scheduler, SchedulerKind};

pub struct Pndm {
    schedule: NoiseSchedule,
    v_prediction: bool,
    spacing: TimestepSpacing,
    steps_offset: usize,
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
        let v_prediction = match config.prediction_type {
            PredictionType::Epsilon => false,
            PredictionType::VPrediction => true,
            PredictionType::Sample => {
                return Err(config.reject(
                    "PNDM with \"prediction_type\": \"sample\"",
                    "PNDM takes epsilon or v_prediction; choose ddim or ddpm",
                ))
            }
        };
        // PNDMScheduler does not accept rescale_betas_zero_snr: diffusers ignores the key.
        let schedule = NoiseSchedule::new(config, false)?;
        let final_alpha_cumprod = if config.set_alpha_to_one_for(SchedulerKind::Pndm) {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(Pndm {
            schedule,
            v_prediction,
            spacing: config.timestep_spacing_for(SchedulerKind::Pndm),
            steps_offset: config.steps_offset,
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
        let acp = self.schedule.alphas_cumprod();
        let a_t = *acp.get(t).ok_or_else(|| {
            SchedulerError::usage(format!(
                "PNDM: timestep {t} is past the schedule; pass the values of `timesteps()`"
            ))
        })?;
        let a_prev = if prev_t >= 0 {
            acp[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let eps = if self.v_prediction {
            (mul(eps, a_t.sqrt())? + mul(sample, b_t.sqrt())?)?
        } else {
            eps.clone()
        };
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
        let noisiest_first = discrete_timesteps(
            self.spacing,
            num_inference_steps,
            self.schedule.num_train_timesteps(),
            self.steps_offset,
        )?;
        // diffusers: concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1] over ascending ts, i.e. the
        // second-noisiest timestep twice.
        let mut ts: Vec<f64> = noisiest_first.iter().map(|&t| t as f64).collect();
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

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.clone())
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
            .ok_or_else(|| SchedulerError::usage("PNDM: call set_timesteps before step"))?;
        check_float(model_output, "the model output")?;
        same_shape(model_output, sample, "the sample")?;
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
