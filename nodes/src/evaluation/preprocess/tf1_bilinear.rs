//! TensorFlow 1.x's bilinear resize, as torch-fidelity reproduces it (and so torchmetrics'
//! FID/KID, which use torch-fidelity's Inception).
//!
//! TF 1's `resize_bilinear` without half-pixel centres maps output index `i` to
//! `src = i · in/out` (no `+0.5`/`−0.5`: the image shifts by half a pixel), reads
//! `floor(src)` and the next index (clamped), and interpolates. torch-fidelity's
//! `interpolate_bilinear_2d_like_tensorflow1x(..., align_corners=False)` ("slow" method,
//! the default) does it in f32: `src = i · (f32)(in/out)`, `lo = (long)src`,
//! `hi = min(lo + 1, in − 1)`, `d = src − lo`, rows first `a + (b − a)·dx`, then columns.
//! Not one of the evaluator's recipes (torch-fidelity feeds it `(x − 128)/128` of 0..255
//! floats); kept tested so that the torchmetrics variant is one recipe away.

struct Tf1Axis {
    lo: Vec<usize>,
    hi: Vec<usize>,
    d: Vec<f32>,
}

impl Tf1Axis {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = (in_size as f64 / out_size as f64) as f32;
        let last = in_size.saturating_sub(1);
        let mut axis = Tf1Axis {
            lo: Vec::with_capacity(out_size),
            hi: Vec::with_capacity(out_size),
            d: Vec::with_capacity(out_size),
        };
        for i in 0..out_size {
            let src = i as f32 * scale;
            let lo = (src as usize).min(last);
            axis.lo.push(lo);
            axis.hi.push((lo + 1).min(last));
            axis.d.push(src - lo as f32);
        }
        axis
    }
}

/// torch-fidelity's TF1-compatible bilinear resize of a CHW f32 image to `out_h × out_w`.
/// Sizes must be positive; `None` if `src` has another length.
pub fn tf1_bilinear_resize(
    src: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Option<Vec<f32>> {
    let plane = in_h * in_w;
    if src.len() != channels * plane {
        return None;
    }
    let (x, y) = (Tf1Axis::new(in_w, out_w), Tf1Axis::new(in_h, out_h));
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let p = &src[c * plane..(c + 1) * plane];
        let at = |r: usize, col: usize| p[r * in_w + col];
        for oy in 0..out_h {
            let (r0, r1, dy) = (y.lo[oy], y.hi[oy], y.d[oy]);
            for ox in 0..out_w {
                let (c0, c1, dx) = (x.lo[ox], x.hi[ox], x.d[ox]);
                let top = at(r0, c0) + (at(r0, c1) - at(r0, c0)) * dx;
                let bottom = at(r1, c0) + (at(r1, c1) - at(r1, c0)) * dx;
                out.push(top + (bottom - top) * dy);
            }
        }
    }
    Some(out)
}
