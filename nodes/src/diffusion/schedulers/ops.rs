//! Small helpers shared by the schedulers: float32 scalars applied to tensors the way
//! PyTorch applies a 0-dim float32 tensor, and the checks of the caller's arguments.
//!
//! diffusers computes each step's coefficients as 0-dim float32 tensors
//! (`alpha_prod_t ** 0.5`, `1 - alpha_prod_t`, …), so the schedulers compute them as Rust
//! `f32` in the same order, and these helpers apply them without a second rounding:
//! `affine(c, 0)` multiplies by the f32 `c` exactly, and a division divides (candle's
//! `tensor / f64` would multiply by a rounded reciprocal). What remains is torch's float32
//! square root (MKL's `vsSqrt` on x86-64 builds), which is not correctly rounded: about one
//! value in seven is an ulp away from Rust's `f32::sqrt`, hence step results within
//! ~2e-7 of diffusers rather than identical.

use candle_core::{DType, Tensor};

use super::error::{Result, SchedulerError};

/// `c · x` with `c` a float32 scalar.
pub(crate) fn mul(x: &Tensor, c: f32) -> Result<Tensor> {
    Ok(x.affine(c as f64, 0.0)?)
}

/// `x / c` with `c` a float32 scalar.
pub(crate) fn div(x: &Tensor, c: f32) -> Result<Tensor> {
    let c = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&c)?)
}

/// The training timestep `t` as an index into `ᾱ`: discrete schedulers take only the
/// integers their `timesteps()` hold.
pub(crate) fn discrete_timestep(t: f64, num_train: usize) -> Result<usize> {
    if t.fract() != 0.0 || t < 0.0 || t >= num_train as f64 {
        return Err(SchedulerError::usage(format!(
            "timestep {t} is not one of this scheduler's timesteps (integers in 0..{num_train}); \
             pass the values of `timesteps()`"
        )));
    }
    Ok(t as usize)
}

/// The error of a `step` before `set_timesteps` (`who` names the scheduler).
pub(crate) fn call_set_timesteps_first(who: &str) -> SchedulerError {
    SchedulerError::usage(format!("{who}: call set_timesteps before step"))
}

/// The checks of `step`'s tensors: the model output holds floats and the sample has its
/// shape.
pub(crate) fn check_step_inputs(model_output: &Tensor, sample: &Tensor) -> Result<()> {
    check_float(model_output, "the model output")?;
    same_shape(model_output, sample, "the sample")
}

/// Both tensors have the same shape (`what` names the second in the error).
pub(crate) fn same_shape(reference: &Tensor, other: &Tensor, what: &str) -> Result<()> {
    if reference.dims() != other.dims() {
        return Err(SchedulerError::usage(format!(
            "{what} has shape {:?} but the model output has {:?}",
            other.dims(),
            reference.dims()
        )));
    }
    Ok(())
}

/// The noise of a stochastic step: present and shaped like the model output.
pub(crate) fn required_noise<'a>(
    noise: Option<&'a Tensor>,
    model_output: &Tensor,
    who: &str,
) -> Result<&'a Tensor> {
    let noise = noise.ok_or_else(|| {
        SchedulerError::usage(format!(
            "{who} draws noise at this step: pass a standard normal tensor shaped like the \
             model output (see `Scheduler::needs_noise`)"
        ))
    })?;
    same_shape(model_output, noise, "the noise")?;
    Ok(noise)
}

/// Whether the tensor holds floats the scheduler can compute with.
pub(crate) fn check_float(x: &Tensor, what: &str) -> Result<()> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        other => Err(SchedulerError::usage(format!(
            "{what} has dtype {other:?}; schedulers step floating-point latents"
        ))),
    }
}
