//! DDIM (Song et al. 2021), diffusers' `DDIMScheduler`.
//!
//! Deterministic at `eta = 0`; with `eta > 0` each step adds `σ_t · noise` with
//! `σ_t = eta · sqrt((1−ᾱ_prev)/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_prev))` (eta 1 is DDPM's variance).
//! As in diffusers, the previous timestep is always `t − num_train_timesteps / n`, whatever
//! the spacing: with `linspace` spacing the step from 999 lands on 899 although the next
//! timestep in the list is 888.

use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig};
use super::error::{Result, SchedulerError};
use super::ops::{
    call_set_timesteps_first, check_step_inputs, discrete_timestep, mul, required_noise,
};
use super::prediction::{predicted_eps, predicted_x0};
use super::schedule::NoiseSchedule;
use super::spacing::Placement;
use super::{Scheduler, SchedulerKind};

pub struct Ddim {
    schedule: NoiseSchedule,
    prediction: PredictionType,
    placement: Placement,
    /// `ᾱ` used past timestep 0: 1 (`set_alpha_to_one`) or `ᾱ₀`.
    final_alpha_cumprod: f32,
    /// Clamp the predicted `x₀` to `±range` (`clip_sample`).
    clip_range: Option<f64>,
    eta: f64,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f64>,
}

impl Ddim {
    pub fn new(config: &SchedulerConfig) -> Result<Ddim> {
        config.refuse_thresholding()?;
        let schedule = NoiseSchedule::from_config(config)?;
        let final_alpha_cumprod =
            schedule.final_alpha_cumprod(config.set_alpha_to_one_for(SchedulerKind::Ddim));
        Ok(Ddim {
            schedule,
            prediction: config.prediction_type,
            placement: Placement::new(config, SchedulerKind::Ddim),
            final_alpha_cumprod,
            clip_range: config.clip_range(),
            eta: 0.0,
            num_inference_steps: None,
            timesteps: Vec::new(),
        })
    }

    /// The weight of the noise added per step: 0 is deterministic DDIM, 1 is DDPM.
    pub fn with_eta(mut self, eta: f64) -> Result<Ddim> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(SchedulerError::usage(format!(
                "DDIM eta is {eta}; it must be 0 (deterministic) or positive (1 = DDPM)"
            )));
        }
        self.eta = eta;
        Ok(self)
    }

    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl Scheduler for Ddim {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = self
            .placement
            .discrete(num_inference_steps, self.schedule.num_train_timesteps())?;
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn needs_noise(&self, _timestep: f64) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self
            .num_inference_steps
            .ok_or_else(|| call_set_timesteps_first("DDIM"))?;
        check_step_inputs(model_output, sample)?;
        let num_train = self.schedule.num_train_timesteps();
        let t = discrete_timestep(timestep, num_train)?;
        let prev_t = t as i64 - (num_train / n) as i64;
        let a_t = self.schedule.alphas_cumprod()[t];
        let a_prev = self
            .schedule
            .alpha_cumprod_prev(prev_t, self.final_alpha_cumprod);
        let x0 = predicted_x0(self.prediction, model_output, sample, a_t, self.clip_range)?;
        let eps = predicted_eps(self.prediction, model_output, sample, a_t)?;
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev = self.eta as f32 * variance.sqrt();
        let direction = mul(&eps, (1.0 - a_prev - std_dev * std_dev).sqrt())?;
        let prev = (mul(&x0, a_prev.sqrt())? + direction)?;
        if self.eta > 0.0 {
            let noise = required_noise(noise, model_output, "DDIM with eta > 0")?;
            return Ok((prev + mul(noise, std_dev)?)?);
        }
        Ok(prev)
    }

    fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// With eta 0, stepping from t with the noise that made x_t from x₀ lands exactly on the
    /// forward process at t_prev: `sqrt(ᾱ_prev)·x₀ + sqrt(1−ᾱ_prev)·ε`.
    #[test]
    fn eta_zero_is_consistent_with_the_forward_process() {
        for prediction in ["epsilon", "v_prediction", "sample"] {
            let config = SchedulerConfig::from_json_str(
                &format!(
                    r#"{{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                        "clip_sample": false, "prediction_type": "{prediction}"}}"#
                ),
                std::path::Path::new("test.json"),
            )
            .unwrap();
            let mut s = Ddim::new(&config).unwrap();
            s.set_timesteps(20).unwrap();
            let dev = Device::Cpu;
            let x0 = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
            let eps = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
            let (t, t_prev) = (s.timesteps()[3] as usize, s.timesteps()[4] as usize);
            let sched = s.schedule().clone();
            let x_t = sched.add_noise(&x0, &eps, &[t, t]).unwrap();
            let model_output = match prediction {
                "epsilon" => eps.clone(),
                "sample" => x0.clone(),
                _ => sched.get_velocity(&x0, &eps, &[t, t]).unwrap(),
            };
            let prev = s.step(&model_output, t as f64, &x_t, None).unwrap();
            let expected = sched.add_noise(&x0, &eps, &[t_prev, t_prev]).unwrap();
            let err = (prev - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(err < 1e-4, "{prediction}: {err}");
        }
    }

    #[test]
    fn eta_needs_noise() {
        let mut s = Ddim::new(&SchedulerConfig::default())
            .unwrap()
            .with_eta(0.5)
            .unwrap();
        s.set_timesteps(10).unwrap();
        let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(s.needs_noise(901.0));
        let e = s.step(&x, 901.0, &x, None).unwrap_err().to_string();
        assert!(e.contains("noise"), "{e}");
        assert!(Ddim::new(&SchedulerConfig::default())
            .unwrap()
            .with_eta(-1.0)
            .is_err());
    }
}
