//! The training noise schedule: the betas and the cumulative products `ᾱ_t` of
//! `1 − β_t` that every scheduler indexes, and the training helpers use (`add_noise`,
//! `get_velocity`, in `training.rs`).
//!
//! Precision follows diffusers step by step, because a sampler that reads `ᾱ_t` one ulp
//! off drifts from the reference: diffusers builds the betas as float32 tensors
//! (`torch.linspace(..., dtype=float32)`, squared in float32; the cosine schedule in Python
//! floats, then converted), takes `1 − β` in float32 and `torch.cumprod`, which on the CPU
//! accumulates in double and rounds each product to float32. The values here are those
//! float32 numbers, bit for bit: `torch.linspace` on x86-64 computes `start + step·i`
//! (first half) and `end − step·(n−1−i)` (second half) with a fused multiply-add, which
//! [`torch_linspace_f32`] reproduces with `mul_add`.

use super::config::{BetaSchedule, SchedulerConfig};
use super::error::{Result, SchedulerError};

/// Betas and `ᾱ` of a config, as diffusers' float32 tensors.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// The schedule of DDPM/DDIM/Euler for `config` (with `rescale_betas_zero_snr` applied
    /// when the config asks for it), e.g. for the training noise.
    pub fn from_config(config: &SchedulerConfig) -> Result<NoiseSchedule> {
        NoiseSchedule::new(config, config.rescale_betas_zero_snr)
    }

    /// The schedule for `config`, rescaled to zero terminal SNR if `rescale_zero_snr`
    /// (PNDM does not accept that key, so it passes false).
    pub fn new(config: &SchedulerConfig, rescale_zero_snr: bool) -> Result<NoiseSchedule> {
        let n = config.num_train_timesteps;
        let mut betas = match (&config.trained_betas, config.beta_schedule) {
            (Some(b), _) => b.iter().map(|&x| x as f32).collect(),
            (None, BetaSchedule::Linear) => {
                torch_linspace_f32(config.beta_start, config.beta_end, n)
            }
            (None, BetaSchedule::ScaledLinear) => {
                torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => squaredcos_cap_v2(n),
        };
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && (0.0..=1.0).contains(*b)))
        {
            return Err(SchedulerError::config(
                &config.origin,
                format!("beta {i} is {b}; betas must lie in [0, 1] (check beta_start, beta_end, trained_betas)"),
            ));
        }
        if rescale_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        Ok(NoiseSchedule {
            alphas_cumprod: cumprod(&alphas),
            betas,
        })
    }

    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// `ᾱ_t` for t in `0..num_train_timesteps`.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// DDIM's and PNDM's `final_alpha_cumprod`, the `ᾱ` of the step past timestep 0: 1
    /// with `set_alpha_to_one`, else `ᾱ₀`.
    pub(crate) fn final_alpha_cumprod(&self, set_alpha_to_one: bool) -> f32 {
        if set_alpha_to_one {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// `ᾱ` of the previous timestep `prev_t`, or `past_zero` where the step from timestep
    /// 0 leads past the schedule (`prev_t < 0`).
    pub(crate) fn alpha_cumprod_prev(&self, prev_t: i64, past_zero: f32) -> f32 {
        if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            past_zero
        }
    }

    /// Set `ᾱ` of the last timestep (Euler ancestral's guard against a zero terminal `ᾱ`).
    pub(crate) fn set_last_alpha_cumprod(&mut self, value: f32) {
        if let Some(last) = self.alphas_cumprod.last_mut() {
            *last = value;
        }
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` as the x86-64 CPU kernel computes it.
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine `ᾱ`, in f64, then float32.
fn squaredcos_cap_v2(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod` of a float32 tensor on the CPU: a double accumulator, float32 outputs.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, algorithm 1), in float32 as
/// diffusers computes it: shift and scale `sqrt(ᾱ)` so the last is 0 and the first unchanged.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_ab: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    let scale = first / (first - last);
    for s in &mut sqrt_ab {
        *s = (*s - last) * scale;
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for w in ab.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly() {
        let v = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(v[0], 0.0001f32);
        assert_eq!(v[999], 0.02f32);
        assert_eq!(torch_linspace_f32(0.5, 2.0, 1), vec![0.5]);
    }

    #[test]
    fn zero_snr_ends_at_zero() {
        let config = SchedulerConfig::default();
        let s = NoiseSchedule::new(&config, true).unwrap();
        assert_eq!(*s.alphas_cumprod().last().unwrap(), 0.0);
        let plain = NoiseSchedule::new(&config, false).unwrap();
        let rel = (s.alphas_cumprod()[0] - plain.alphas_cumprod()[0]).abs();
        assert!(rel < 1e-6, "first ᾱ changed by {rel}");
    }

    #[test]
    fn cosine_is_capped_and_increasing() {
        let b = squaredcos_cap_v2(1000);
        assert!(b.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*b.last().unwrap(), 0.999);
    }
}
