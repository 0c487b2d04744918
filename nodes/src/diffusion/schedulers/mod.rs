//! Noise schedulers, compatible with diffusers 0.42: DDIM, PNDM (PLMS), DDPM and Euler
//! ancestral, read from a diffusers `scheduler_config.json`, plus the forward process
//! used for training.
//!
//! Compatibility here means the same numbers, not the same idea: a sampler whose timesteps
//! are off by one or whose `ᾱ` differs in the last bit produces a different image from the
//! same seed, and a learned embedding trained against slightly different noise levels is
//! not the paper's. So the code mirrors diffusers' arithmetic where it is particular:
//! float32 schedules built as torch builds them ([`schedule`]), timesteps placed as numpy
//! places them ([`spacing`]), per-step coefficients as float32 scalars (`ops.rs`). The
//! parity test (`nodes/tests/scheduler_parity.rs`) checks all of it against diffusers'
//! outputs. Where diffusers' behaviour is surprising it is kept and documented (PNDM's
//! repeated timestep, DDIM's fixed step size under `linspace` spacing), except for one
//! outright bug (a timestep −1 under `trailing` spacing, see [`spacing`]).
//!
//! Randomness belongs to the caller: stochastic steps take the standard normal draw as an
//! argument, so a sampling loop decides the generator and tests can replay diffusers'
//! recorded noise. A sampling loop:
//!
//! ```ignore
//! let mut s = build(&SchedulerConfig::from_file(&dir.join("scheduler_config.json"))?, None, 0.0)?;
//! s.set_timesteps(30)?;
//! let mut x = (noise * s.init_noise_sigma())?;
//! for &t in s.timesteps().to_vec().iter() {
//!     let eps = unet.forward(&s.scale_model_input(&x, t)?, &timestep_input(t, batch, &dev)?, &text)?;
//!     let draw = if s.needs_noise(t) { Some(randn_like(&x)?) } else { None };
//!     x = s.step(&eps, t, &x, draw.as_ref())?;
//! }
//! ```

pub mod config;
mod ddim;
mod ddpm;
pub mod error;
mod euler_ancestral;
mod kind;
mod ops;
mod pndm;
mod prediction;
pub mod schedule;
pub mod spacing;
mod training;

use candle_core::{Device, Tensor};

pub use config::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use error::SchedulerError;
pub use euler_ancestral::EulerAncestral;
pub use kind::{build, SchedulerKind};
pub use pndm::Pndm;
pub use schedule::NoiseSchedule;

/// A sampler over the inference timesteps. Call `set_timesteps` first, then for each `t`
/// of `timesteps()` in order: `scale_model_input`, the model, `step`.
pub trait Scheduler: Send {
    fn kind(&self) -> SchedulerKind;

    /// Place `num_inference_steps` steps among the training timesteps, and reset any
    /// multistep history.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError>;

    /// The timesteps to visit, noisiest first (integers except Euler ancestral's
    /// `linspace` ones; PNDM repeats its second). Empty before `set_timesteps`.
    fn timesteps(&self) -> &[f64];

    /// The standard deviation of the initial latents: 1, or Euler's `σ_max`.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The model's input at `timestep`: the sample itself (Euler ancestral divides by
    /// `sqrt(σ² + 1)`).
    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor, SchedulerError> {
        Ok(sample.clone())
    }

    /// Whether `step` at `timestep` consumes noise; draw it only then to consume a random
    /// stream exactly as diffusers does.
    fn needs_noise(&self, timestep: f64) -> bool;

    /// The sample at the previous (less noisy) timestep. `noise` is the standard normal
    /// draw, shaped like `model_output`, of a stochastic step (an error if it is missing
    /// where [`Scheduler::needs_noise`] says it is needed; ignored elsewhere).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor, SchedulerError>;

    /// The training noise schedule (`ᾱ`, and the training helpers).
    fn schedule(&self) -> &NoiseSchedule;
}

/// The timestep as the UNet takes it: float32, one per sample (diffusers' UNet embeds
/// `timesteps.float()`, so integer timesteps arrive as exact floats).
pub fn timestep_input(timestep: f64, batch: usize, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::full(timestep as f32, batch, device)
}
