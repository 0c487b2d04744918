//! torch's `F.interpolate(x, size, mode="bilinear", align_corners=False)`, no antialias.
//!
//! This is pytorch-fid's resize (inside its `InceptionV3.forward`) and that of
//! gan-metrics-pytorch: each output pixel mixes the 2×2 input pixels around its centre
//! mapped back to the input, `src = (i + 0.5) · in/out − 0.5` (clamped at 0), however
//! much the image shrinks — no antialias, so downscaling aliases, as the references do.
//!
//! The arithmetic follows ATen's CPU kernel (`UpSampleKernel.cpp`,
//! `compute_source_index_and_lambda` and the nested `Interpolate` sums) in f32:
//! `scale = (f32)in / out`, index `min(floor(src), in − 1)`, `λ1 = clamp(src − i0, 0, 1)`,
//! `λ0 = 1 − λ1`, then `t0·w0 + t1·w1` per axis, columns inside rows. On x86-64 CPUs with
//! AVX2, torch runs its AVX2 build of that kernel, where the compiler fuses each
//! `t0·w0 + t1·w1` into `fma(t0, w0, t1·w1)`; this module does the same ([`f32::mul_add`]),
//! and matches torch 2.15 there bit for bit when torch runs on several threads, its default
//! (`nodes/tests/resize_parity.rs`). Single-threaded torch, its kernels without FMA and its
//! GPU kernels round differently, an ulp or two apart (≤ 2.4e-7 on [0, 1]).

/// Source indices and weights of one axis.
#[derive(Clone, Debug)]
struct LinearAxis {
    i0: Vec<usize>,
    i1: Vec<usize>,
    l0: Vec<f32>,
    l1: Vec<f32>,
}

impl LinearAxis {
    fn new(in_size: usize, out_size: usize) -> Self {
        let mut axis = LinearAxis {
            i0: Vec::with_capacity(out_size),
            i1: Vec::with_capacity(out_size),
            l0: Vec::with_capacity(out_size),
            l1: Vec::with_capacity(out_size),
        };
        let last = in_size.saturating_sub(1);
        let scale = in_size as f32 / out_size as f32;
        for i in 0..out_size {
            let (i0, l1) = if in_size == out_size {
                (i, 0.0f32)
            } else {
                let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(last);
                (i0, (src - i0 as f32).clamp(0.0, 1.0))
            };
            axis.i0.push(i0);
            axis.i1.push(if i0 < last { i0 + 1 } else { i0 });
            axis.l0.push(1.0 - l1);
            axis.l1.push(l1);
        }
        axis
    }
}

/// A bilinear resize from `in_w × in_h` to `out_w × out_h`, its index tables computed once.
#[derive(Clone, Debug)]
pub struct TorchBilinear {
    in_w: usize,
    in_h: usize,
    x: LinearAxis,
    y: LinearAxis,
}

impl TorchBilinear {
    /// Sizes must be positive.
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Self {
        TorchBilinear {
            in_w,
            in_h,
            x: LinearAxis::new(in_w, out_w),
            y: LinearAxis::new(in_h, out_h),
        }
    }

    pub fn output_size(&self) -> (usize, usize) {
        (self.x.i0.len(), self.y.i0.len())
    }

    /// Resize one plane whose value at `(row, column)` is `at(row, column)`; row-major.
    pub fn apply_with(&self, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let (out_w, out_h) = self.output_size();
        let mut out = Vec::with_capacity(out_w * out_h);
        for oy in 0..out_h {
            let (y0, y1, h0, h1) = (self.y.i0[oy], self.y.i1[oy], self.y.l0[oy], self.y.l1[oy]);
            for ox in 0..out_w {
                let (x0, x1, w0, w1) = (self.x.i0[ox], self.x.i1[ox], self.x.l0[ox], self.x.l1[ox]);
                let top = at(y0, x0).mul_add(w0, at(y0, x1) * w1);
                let bottom = at(y1, x0).mul_add(w0, at(y1, x1) * w1);
                out.push(top.mul_add(h0, bottom * h1));
            }
        }
        out
    }

    /// Resize `channels` planes stored CHW (`channels · in_h · in_w` values) into CHW.
    /// `None` if `src` has another length.
    pub fn apply(&self, src: &[f32], channels: usize) -> Option<Vec<f32>> {
        let plane = self.in_w * self.in_h;
        if src.len() != channels * plane {
            return None;
        }
        let mut out = Vec::new();
        for c in 0..channels {
            let p = &src[c * plane..(c + 1) * plane];
            out.extend(self.apply_with(|y, x| p[y * self.in_w + x]));
        }
        Some(out)
    }
}

/// `F.interpolate(src, size=(out_h, out_w), mode="bilinear", align_corners=False)` on a
/// CHW f32 image. Sizes must be positive; `None` if `src` has another length.
pub fn bilinear_resize(
    src: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Option<Vec<f32>> {
    TorchBilinear::new(in_w, in_h, out_w, out_h).apply(src, channels)
}
