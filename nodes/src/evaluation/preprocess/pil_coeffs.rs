//! Pillow's resampling filters and the per-axis coefficient tables of `Image.resize`.
//!
//! Pillow (`src/libImaging/Resample.c`; 10.4, 12.1 and 13.0 compute the same weights)
//! resizes separably. For each axis and each output index `i` it places the filter at the centre
//! `(i + 0.5) · scale` of the output pixel in input coordinates (`scale = in / out`),
//! widens the filter by `max(scale, 1)` when reducing (this *is* the antialiasing: the
//! support grows with the downscale factor), takes the input pixels whose centres fall in
//! the support, evaluates the filter at their distance and normalises the weights to sum 1.
//! Everything is in f64, in the same order of operations as Pillow, so the weights are the
//! same bits. 8-bit images then use the weights rounded to 22-bit fixed point
//! ([`AxisCoeffs::fixed_point`]); float images use them as they are.

use std::ops::Range;

/// Pillow's `Image.Resampling` filters that have a support (not `NEAREST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PilFilter {
    Box,
    Bilinear,
    Hamming,
    Bicubic,
    Lanczos,
}

impl PilFilter {
    /// Half-width of the filter at scale 1.
    pub fn support(self) -> f64 {
        match self {
            PilFilter::Box => 0.5,
            PilFilter::Bilinear | PilFilter::Hamming => 1.0,
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }

    /// The filter's weight at distance `x`, as Pillow computes it (f64; `Hamming` keeps
    /// Pillow's single-precision constants 0.54f and 0.46f).
    pub fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            PilFilter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            PilFilter::Bicubic => {
                // Keys' cubic convolution with a = −0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fractional bits of the fixed-point weights of the 8-bit path: 32 − 8 − 2.
pub const PRECISION_BITS: u32 = 22;

/// The weights of one axis for a range of output indices.
#[derive(Clone, Debug)]
pub struct AxisCoeffs {
    /// Weights per output index (`ksize` slots, the first `count` used).
    ksize: usize,
    /// First input index read by each output index.
    first: Vec<usize>,
    /// Number of input indices read by each output index.
    count: Vec<usize>,
    weights: Vec<f64>,
}

impl AxisCoeffs {
    /// The weights of output indices `outputs` (a sub-range of `0..out_size`) when
    /// resizing `in_size` pixels to `out_size` with `filter`. Sizes must be positive.
    pub fn new(in_size: usize, out_size: usize, filter: PilFilter, outputs: Range<usize>) -> Self {
        // Pillow passes the source box as floats: (in1 − in0) is computed in f32.
        let scale = in_size as f32 as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let n = outputs.len();
        let mut first = Vec::with_capacity(n);
        let mut count = Vec::with_capacity(n);
        let mut weights = vec![0.0f64; n * ksize];
        for (slot, i) in outputs.enumerate() {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) truncates towards zero; then clamp to the image.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let cnt = hi.saturating_sub(lo).min(ksize);
            let k = &mut weights[slot * ksize..slot * ksize + cnt];
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate() {
                *w = filter.weight(((x + lo) as f64 - center + 0.5) * inv_filterscale);
                total += *w;
            }
            if total != 0.0 {
                for w in k.iter_mut() {
                    *w /= total;
                }
            }
            first.push(lo);
            count.push(cnt);
        }
        AxisCoeffs {
            ksize,
            first,
            count,
            weights,
        }
    }

    /// Number of output indices.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Input indices read by output slot `i`.
    pub fn span(&self, i: usize) -> Range<usize> {
        self.first[i]..self.first[i] + self.count[i]
    }

    /// The input indices read by any output slot (empty if there are none).
    pub fn input_span(&self) -> Range<usize> {
        let lo = self.first.iter().copied().min().unwrap_or(0);
        let hi = (0..self.len()).map(|i| self.span(i).end).max().unwrap_or(0);
        lo..hi.max(lo)
    }

    /// The normalised f64 weights of output slot `i`, one per index of [`Self::span`].
    pub fn weights(&self, i: usize) -> &[f64] {
        &self.weights[i * self.ksize..i * self.ksize + self.count[i]]
    }

    /// The weights in 22-bit fixed point, rounded half away from zero like Pillow's
    /// `normalize_coeffs_8bpc`; same layout as [`Self::weights`] (`ksize` per slot).
    pub fn fixed_point(&self) -> FixedCoeffs {
        let one = (1u32 << PRECISION_BITS) as f64;
        let weights = self
            .weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        FixedCoeffs {
            ksize: self.ksize,
            weights,
        }
    }
}

/// Fixed-point weights of an [`AxisCoeffs`], for the 8-bit path.
#[derive(Clone, Debug)]
pub struct FixedCoeffs {
    ksize: usize,
    weights: Vec<i32>,
}

impl FixedCoeffs {
    /// The first `count` fixed-point weights of output slot `i`.
    pub fn weights(&self, i: usize, count: usize) -> &[i32] {
        &self.weights[i * self.ksize..i * self.ksize + count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_widen_when_reducing() {
        for filter in [
            PilFilter::Box,
            PilFilter::Bilinear,
            PilFilter::Hamming,
            PilFilter::Bicubic,
            PilFilter::Lanczos,
        ] {
            for (n_in, n_out) in [(768, 336), (256, 336), (1, 7), (7, 1), (5, 5)] {
                let c = AxisCoeffs::new(n_in, n_out, filter, 0..n_out);
                for i in 0..n_out {
                    let s: f64 = c.weights(i).iter().sum();
                    assert!(
                        (s - 1.0).abs() < 1e-12,
                        "{filter:?} {n_in}->{n_out} slot {i}: {s}"
                    );
                    assert!(c.span(i).end <= n_in);
                }
            }
        }
        // Bicubic reducing 768 → 336 reads 2·2·(768/336) ≈ 9.1 inputs per output.
        let c = AxisCoeffs::new(768, 336, PilFilter::Bicubic, 0..336);
        assert!((9..=10).contains(&c.span(100).len()));
        assert_eq!(
            AxisCoeffs::new(256, 336, PilFilter::Bicubic, 0..336)
                .span(100)
                .len(),
            4
        );
        // A window of outputs has the same weights as the full table.
        let w = AxisCoeffs::new(768, 336, PilFilter::Bicubic, 100..110);
        assert_eq!(w.weights(3), c.weights(103));
        assert_eq!(w.span(3), c.span(103));
    }

    #[test]
    fn fixed_point_rounds_half_away_from_zero() {
        let c = AxisCoeffs::new(6, 4, PilFilter::Bicubic, 0..4);
        let f = c.fixed_point();
        for i in 0..4 {
            let sum: i64 = f
                .weights(i, c.span(i).len())
                .iter()
                .map(|&w| w as i64)
                .sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= 2, "{sum}");
        }
    }
}
