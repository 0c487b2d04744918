//! Inference timesteps, placed as diffusers places them.
//!
//! diffusers computes them with numpy, and the exact integers matter (a sampler at
//! timestep 800 instead of 801 reads another `ᾱ`). So the numpy operations are reproduced
//! rather than re-derived: `np.arange` with a float step fills `start + i·d` where
//! `d = (start + step) − start`, `np.linspace` is `i·step + start` with the last value set
//! to `stop`, and `np.round` rounds half to even.
//!
//! One deliberate difference: for some step counts (61, 103, 121, … of 1000) the float
//! `np.arange` of `trailing` spacing yields one value too many, which diffusers turns into
//! a timestep of −1 (then indexes `ᾱ[-1]`, the noisiest value). That spurious last
//! timestep is dropped here, so `n` steps are `n` timesteps.

use super::config::{SchedulerConfig, TimestepSpacing};
use super::error::{Result, SchedulerError};
use super::kind::SchedulerKind;

/// Where a scheduler places its inference timesteps: the config's spacing (or that
/// scheduler class's default) and `steps_offset`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub(crate) spacing: TimestepSpacing,
    steps_offset: usize,
}

impl Placement {
    pub(crate) fn new(config: &SchedulerConfig, kind: SchedulerKind) -> Placement {
        Placement {
            spacing: config.timestep_spacing_for(kind),
            steps_offset: config.steps_offset,
        }
    }

    /// [`discrete_timesteps`], as the `f64`s of `Scheduler::timesteps`.
    pub(crate) fn discrete(&self, n: usize, num_train: usize) -> Result<Vec<f64>> {
        let ts = discrete_timesteps(self.spacing, n, num_train, self.steps_offset)?;
        Ok(ts.into_iter().map(|t| t as f64).collect())
    }

    /// [`euler_timesteps`].
    pub(crate) fn euler(&self, n: usize, num_train: usize) -> Result<Vec<f32>> {
        euler_timesteps(self.spacing, n, num_train, self.steps_offset)
    }
}

/// The timesteps of DDIM and DDPM for `n` inference steps, noisiest first.
pub fn discrete_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    num_train: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    check_steps(n, num_train)?;
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Leading => {
            let ratio = num_train / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / n as f64;
            numpy_arange(num_train as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
        TimestepSpacing::Linspace => numpy_linspace(0.0, (num_train - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
    };
    let ts: Vec<i64> = ts.into_iter().filter(|&t| t >= 0).collect();
    match ts.iter().find(|&&t| t as usize >= num_train) {
        Some(t) => Err(SchedulerError::usage(format!(
            "timestep {t} for {n} steps is past the last training timestep {}; \
             steps_offset ({steps_offset}) is too large for this spacing",
            num_train - 1
        ))),
        None => Ok(ts.into_iter().map(|t| t as usize).collect()),
    }
}

/// The timesteps of Euler ancestral: as [`discrete_timesteps`], except that `linspace`
/// is not rounded (diffusers keeps it as float32, so 10 steps of 1000 are integers but 7
/// steps fall between training timesteps).
pub fn euler_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    num_train: usize,
    steps_offset: usize,
) -> Result<Vec<f32>> {
    match spacing {
        TimestepSpacing::Linspace => {
            check_steps(n, num_train)?;
            Ok(numpy_linspace(0.0, (num_train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t as f32)
                .collect())
        }
        _ => Ok(discrete_timesteps(spacing, n, num_train, steps_offset)?
            .into_iter()
            .map(|t| t as f32)
            .collect()),
    }
}

fn check_steps(n: usize, num_train: usize) -> Result<()> {
    if n == 0 || n > num_train {
        return Err(SchedulerError::usage(format!(
            "{n} inference steps: choose between 1 and num_train_timesteps ({num_train})"
        )));
    }
    Ok(())
}

/// `np.arange(start, stop, step)` for floats.
pub(crate) fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let delta = (start + step) - start;
    (0..len as usize)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (endpoint included).
pub(crate) fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use TimestepSpacing::*;

    #[test]
    fn diffusers_examples() {
        // Values printed by diffusers 0.42 (DDIMScheduler, num_train_timesteps=1000).
        assert_eq!(
            discrete_timesteps(Leading, 7, 1000, 1).unwrap(),
            [853, 711, 569, 427, 285, 143, 1]
        );
        assert_eq!(
            discrete_timesteps(Trailing, 7, 1000, 1).unwrap(),
            [999, 856, 713, 570, 428, 285, 142]
        );
        assert_eq!(
            discrete_timesteps(Linspace, 7, 1000, 1).unwrap(),
            [999, 832, 666, 500, 333, 166, 0]
        );
        assert_eq!(
            euler_timesteps(Linspace, 7, 1000, 1).unwrap(),
            [999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0]
        );
    }

    #[test]
    fn trailing_never_yields_minus_one() {
        let ts = discrete_timesteps(Trailing, 61, 1000, 0).unwrap();
        assert_eq!(ts.len(), 61);
        assert_eq!(ts[60], 15);
    }

    #[test]
    fn step_counts_are_checked() {
        assert!(discrete_timesteps(Leading, 0, 1000, 0).is_err());
        assert!(discrete_timesteps(Leading, 1001, 1000, 0).is_err());
        assert!(discrete_timesteps(Leading, 10, 1000, 200).is_err());
        assert_eq!(discrete_timesteps(Linspace, 1, 1000, 0).unwrap(), [0]);
    }
}
