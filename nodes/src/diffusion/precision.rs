//! The precision sampling runs in: `f32` (the default, what every parity test checks), or
//! half precision (`f16`, `bf16`) for the text encoder and the UNet (`sd_sample`'s `dtype`,
//! `nsync sample --dtype`). The VAE always decodes in f32, as diffusers' `force_upcast`.
//!
//! Half precision is for GPU builds. On the CPU it halves the weights' memory (the SD 1.5
//! UNet: 3.4 → 1.7 GB) but saves no time and costs precision: candle's CPU kernels compute
//! it in f32 (gemm widens f16 while packing; there is no bf16 matrix product or convolution
//! at all, so bf16 layers here compute in f32 and round each result back to bf16). Measured
//! on the SD 1.5-size UNet, one guided call at 256 px, 2 threads, on a shared machine
//! (`nodes/tests/sample_dtype.rs`, ignored test): f32 9.1–10.3 s, f16 10.4 s, bf16 9.8 s,
//! i.e. the same within the machine's noise; the output's largest error against f32 was
//! 0.27 % (f16) and 1.9 % (bf16) of its largest value. On the tiny test models a 5-step
//! image moves by up to 0.016 (f16) and 0.093 (bf16) in [0, 1] pixels.
//! Reductions that half precision cannot hold (group norm statistics, softmax sums) are
//! computed in f32 for both half types, as PyTorch's kernels accumulate in f32.
//! None of this touches the f32 path: its results stay bit for bit what they were.

use candle_core::{DType, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The dtype of the text encoder's and the UNet's weights and activations while sampling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SampleDtype {
    /// 32-bit floats (the default; bit for bit reproducible, matches diffusers' f32).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl SampleDtype {
    pub fn dtype(self) -> DType {
        match self {
            SampleDtype::F32 => DType::F32,
            SampleDtype::F16 => DType::F16,
            SampleDtype::Bf16 => DType::BF16,
        }
    }

    /// For `skip_serializing_if`: the default stays out of cache keys, so that leaving
    /// `dtype` unset and writing `dtype = "f32"` give the same key as before it existed.
    pub fn is_f32(&self) -> bool {
        *self == SampleDtype::F32
    }

    /// `"f32"`, `"f16"` or `"bf16"`.
    pub fn parse(s: &str) -> Result<SampleDtype, String> {
        match s {
            "f32" => Ok(SampleDtype::F32),
            "f16" => Ok(SampleDtype::F16),
            "bf16" => Ok(SampleDtype::Bf16),
            _ => Err(format!("unknown dtype `{s}`; use f32, f16 or bf16")),
        }
    }
}

/// Whether `t` is a half-precision float (reductions over it are computed in f32).
pub fn is_half(t: &Tensor) -> bool {
    matches!(t.dtype(), DType::F16 | DType::BF16)
}

/// Whether candle has no kernel for `t`'s dtype on its device: bf16 on the CPU (matrix
/// products and convolutions then run in f32 and round back).
pub fn cpu_bf16(t: &Tensor) -> bool {
    t.dtype() == DType::BF16 && t.device().is_cpu()
}

/// `a.matmul(b)`, for bf16 on the CPU computed in f32 and rounded back.
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_bf16(a) {
        return a
            .to_dtype(DType::F32)?
            .matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16);
    }
    a.matmul(b)
}

/// `a.broadcast_matmul(b)`, for bf16 on the CPU computed in f32 and rounded back.
pub fn broadcast_matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if cpu_bf16(a) {
        return a
            .to_dtype(DType::F32)?
            .broadcast_matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16);
    }
    a.broadcast_matmul(b)
}

/// Softmax over the last dimension (the composite op, which records a backward pass);
/// half-precision input is summed in f32 and rounded back.
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    if is_half(x) {
        return candle_nn::ops::softmax(&x.to_dtype(DType::F32)?, candle_core::D::Minus1)?
            .to_dtype(x.dtype());
    }
    candle_nn::ops::softmax(x, candle_core::D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_serialises_as_lowercase() {
        for (s, d) in [
            ("f32", SampleDtype::F32),
            ("f16", SampleDtype::F16),
            ("bf16", SampleDtype::Bf16),
        ] {
            assert_eq!(SampleDtype::parse(s).unwrap(), d);
            assert_eq!(serde_json::to_value(d).unwrap(), serde_json::json!(s));
        }
        assert!(SampleDtype::parse("f64").is_err());
        assert!(SampleDtype::default().is_f32());
    }
}
