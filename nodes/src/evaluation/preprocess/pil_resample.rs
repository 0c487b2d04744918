//! Pillow's `Image.resize`, bit for bit: 8-bit images (L, RGB, …) and float ('F') planes.
//!
//! Pillow resamples in two passes, each a weighted sum with the per-axis weights of
//! [`AxisCoeffs`]; a pass is skipped when its axis keeps its size. The order of the passes
//! changes the 8-bit results by ±1 and float results by an ulp, and it changed between
//! Pillow versions; this follows Pillow 13.0 (the version the fixtures pin): vertical first
//! when the height shrinks and `2·(out_w − in_w) > out_h − in_h`, horizontal first otherwise. Pillow ≤ 12.1
//! always went horizontal first; 12.2–12.3 went vertical first only for images more than
//! 100 times taller than wide whose height shrinks. The evaluator's CMMD and CSD resizes
//! scale both axes the same way, so every version agrees on them.
//!
//! - 8 bits: weights in 22-bit fixed point, each sum starts at `2^21` (rounding), and the
//!   result is `sum >> 22` clipped to 0..=255 after *each* pass, so the intermediate image
//!   is 8-bit too. Integer sums do not depend on their order: the result is exact.
//! - float: each sum is accumulated in f64 (input f32 × weight f64) from 0.0 in tap order
//!   and stored as f32 after each pass, as Pillow's `_32bpc` functions do; same order, same
//!   bits.
//!
//! A [`PilResize`] holds the weight tables of one `(input size, output size, filter)`,
//! computed once and reusable for every image of that size. It may compute only a window
//! of the output (the centre crop that follows a resize): output pixels are independent,
//! so the window holds exactly the pixels of the full resize.

use std::ops::Range;

use super::crop::CropBox;
use super::pil_coeffs::{AxisCoeffs, FixedCoeffs, PilFilter, PRECISION_BITS};
use super::view::PixelView;

/// One axis of a resize: `None` when the axis keeps its size (Pillow skips that pass).
#[derive(Clone, Debug)]
struct Axis {
    coeffs: AxisCoeffs,
    fixed: FixedCoeffs,
}

/// A resize from `in_w × in_h` to `out_w × out_h` with one filter, restricted to a window
/// of the output.
#[derive(Clone, Debug)]
pub struct PilResize {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    window: CropBox,
    horizontal: Option<Axis>,
    vertical: Option<Axis>,
}

impl PilResize {
    /// The full resize. All sizes must be positive.
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize, filter: PilFilter) -> Self {
        Self::window(
            in_w,
            in_h,
            out_w,
            out_h,
            filter,
            CropBox::full(out_w, out_h),
        )
    }

    /// Only the pixels of `window` of the resize (clipped to `out_w × out_h`).
    pub fn window(
        in_w: usize,
        in_h: usize,
        out_w: usize,
        out_h: usize,
        filter: PilFilter,
        window: CropBox,
    ) -> Self {
        let left = window.left.min(out_w);
        let top = window.top.min(out_h);
        let window = CropBox {
            left,
            top,
            width: window.width.min(out_w - left),
            height: window.height.min(out_h - top),
        };
        let axis = |n_in: usize, n_out: usize, start: usize, len: usize| {
            (n_in != n_out).then(|| {
                let coeffs = AxisCoeffs::new(n_in, n_out, filter, start..start + len);
                let fixed = coeffs.fixed_point();
                Axis { coeffs, fixed }
            })
        };
        PilResize {
            in_w,
            in_h,
            out_w,
            out_h,
            window,
            horizontal: axis(in_w, out_w, window.left, window.width),
            vertical: axis(in_h, out_h, window.top, window.height),
        }
    }

    /// Width and height of what [`Self::apply_u8`] and [`Self::apply_f32`] return.
    pub fn output_size(&self) -> (usize, usize) {
        (self.window.width, self.window.height)
    }

    /// Pillow 13's order: vertical first when the height shrinks and
    /// `2·(out_w − in_w) > out_h − in_h` (read off Pillow 13.0's output: it agrees with
    /// every one of ~1,100 random size pairs, ties included).
    fn vertical_first(&self) -> bool {
        let (iw, ih, ow, oh) = (
            self.in_w as i64,
            self.in_h as i64,
            self.out_w as i64,
            self.out_h as i64,
        );
        oh < ih && 2 * (ow - iw) > oh - ih
    }

    /// Input rows the vertical pass reads (all rows of the window when it is skipped).
    fn rows(&self) -> Range<usize> {
        match &self.vertical {
            Some(v) => v.coeffs.input_span(),
            None => self.window.top..self.window.top + self.window.height,
        }
    }

    /// Input columns the horizontal pass reads (all columns of the window when skipped).
    fn columns(&self) -> Range<usize> {
        match &self.horizontal {
            Some(h) => h.coeffs.input_span(),
            None => self.window.left..self.window.left + self.window.width,
        }
    }

    /// Resize an 8-bit image of 1 to 4 interleaved channels, `in_w × in_h`, into tightly
    /// packed pixels of the window. Returns `None` if the view has another size or more
    /// than 4 channels.
    pub fn apply_u8(&self, src: &PixelView) -> Option<Vec<u8>> {
        if src.width() != self.in_w || src.height() != self.in_h {
            return None;
        }
        match src.channels() {
            1 => Some(self.apply_u8_c::<1>(src)),
            2 => Some(self.apply_u8_c::<2>(src)),
            3 => Some(self.apply_u8_c::<3>(src)),
            4 => Some(self.apply_u8_c::<4>(src)),
            _ => None,
        }
    }

    fn apply_u8_c<const C: usize>(&self, src: &PixelView) -> Vec<u8> {
        let (w, h) = (self.window.width, self.window.height);
        if let (true, Some(v)) = (self.vertical_first(), &self.vertical) {
            let cols = self.columns();
            let strip = CropBox {
                left: cols.start,
                top: 0,
                width: cols.len(),
                height: self.in_h,
            };
            let src = src.crop(strip).expect("columns inside the image");
            let buffer = vertical_u8(&src, v, 0);
            let mid = PixelView::new(&buffer, cols.len(), h, C).expect("sized buffer");
            return match &self.horizontal {
                Some(hz) => horizontal_u8::<C>(&mid, 0..h, hz, cols.start),
                None => mid.to_vec(),
            };
        }
        let rows = self.rows();
        let columns = CropBox {
            left: self.window.left,
            top: rows.start,
            width: self.window.width,
            height: rows.len(),
        };
        let buffer;
        let mid = match &self.horizontal {
            Some(h) => {
                buffer = horizontal_u8::<C>(src, rows.clone(), h, 0);
                PixelView::new(&buffer, w, rows.len(), C).expect("sized buffer")
            }
            None => src.crop(columns).expect("window inside the output"),
        };
        match &self.vertical {
            Some(v) => vertical_u8(&mid, v, rows.start),
            None => mid.to_vec(),
        }
    }

    /// Resize one float plane (`in_w · in_h` values, row-major) as Pillow resizes an 'F'
    /// image. Returns `None` if the plane has another size.
    pub fn apply_f32(&self, src: &[f32]) -> Option<Vec<f32>> {
        if src.len() != self.in_w * self.in_h {
            return None;
        }
        let (w, left) = (self.window.width, self.window.left);
        if let (true, Some(v)) = (self.vertical_first(), &self.vertical) {
            let (cols, h) = (self.columns(), self.window.height);
            let mid = vertical_f32(src, self.in_w, cols.start, cols.len(), v, 0);
            return Some(match &self.horizontal {
                Some(hz) => horizontal_f32(&mid, cols.len(), 0..h, hz, cols.start),
                None => mid,
            });
        }
        let rows = self.rows();
        let buffer;
        let (mid, mid_w, mid_left): (&[f32], usize, usize) = match &self.horizontal {
            Some(h) => {
                buffer = horizontal_f32(src, self.in_w, rows.clone(), h, 0);
                (&buffer, w, 0)
            }
            None => (
                &src[rows.start * self.in_w..rows.end * self.in_w],
                self.in_w,
                left,
            ),
        };
        Some(match &self.vertical {
            Some(v) => vertical_f32(mid, mid_w, mid_left, w, v, rows.start),
            None => window_f32(
                mid,
                mid_w,
                self.window.top - rows.start,
                mid_left,
                w,
                self.window.height,
            ),
        })
    }
}

/// Rows `top..top + h`, columns `left..left + w` of a plane `stride` wide.
fn window_f32(src: &[f32], stride: usize, top: usize, left: usize, w: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w * h);
    for y in top..top + h {
        out.extend_from_slice(&src[y * stride + left..y * stride + left + w]);
    }
    out
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `sum >> 22` clipped to a byte (Pillow's `clip8`).
#[inline]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The horizontal pass over `rows` of `src`, whose first column is input column `col0`:
/// `rows.len() × out_w` pixels.
fn horizontal_u8<const C: usize>(
    src: &PixelView,
    rows: Range<usize>,
    h: &Axis,
    col0: usize,
) -> Vec<u8> {
    let out_w = h.coeffs.len();
    // Per output pixel: the byte range of its taps in a row, and its weights.
    let table: Vec<(Range<usize>, &[i32])> = (0..out_w)
        .map(|x| {
            let span = h.coeffs.span(x);
            let bytes = (span.start - col0) * C..(span.end - col0) * C;
            (bytes, h.fixed.weights(x, span.len()))
        })
        .collect();
    let mut out = vec![0u8; rows.len() * out_w * C];
    for (y, dst) in rows.zip(out.chunks_exact_mut((out_w * C).max(1))) {
        let line = src.row(y);
        for (px, (bytes, k)) in dst.chunks_exact_mut(C).zip(&table) {
            let taps = &line[bytes.clone()];
            let mut acc = [HALF; C];
            for (p, &w) in taps.chunks_exact(C).zip(k.iter()) {
                for c in 0..C {
                    acc[c] += p[c] as i32 * w;
                }
            }
            for c in 0..C {
                px[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// The vertical pass; `mid` holds input rows from `row0` on.
fn vertical_u8(mid: &PixelView, v: &Axis, row0: usize) -> Vec<u8> {
    let row_len = mid.width() * mid.channels();
    let mut out = Vec::with_capacity(v.coeffs.len() * row_len);
    let mut acc = vec![0i32; row_len];
    for y in 0..v.coeffs.len() {
        let span = v.coeffs.span(y);
        let k = v.fixed.weights(y, span.len());
        acc.fill(HALF);
        for (r, &w) in span.zip(k) {
            for (a, &p) in acc.iter_mut().zip(mid.row(r - row0)) {
                *a += p as i32 * w;
            }
        }
        out.extend(acc.iter().map(|&a| clip8(a)));
    }
    out
}

/// The horizontal pass over `rows` of a plane `in_w` wide whose first column is input
/// column `col0`.
fn horizontal_f32(src: &[f32], in_w: usize, rows: Range<usize>, h: &Axis, col0: usize) -> Vec<f32> {
    let out_w = h.coeffs.len();
    let mut out = Vec::with_capacity(rows.len() * out_w);
    for y in rows {
        let line = &src[y * in_w..(y + 1) * in_w];
        for x in 0..out_w {
            let span = h.coeffs.span(x);
            let taps = &line[span.start - col0..span.end - col0];
            let mut ss = 0.0f64;
            for (&p, &w) in taps.iter().zip(h.coeffs.weights(x)) {
                ss += p as f64 * w;
            }
            out.push(ss as f32);
        }
    }
    out
}

/// The vertical pass on float rows of `mid_w` values from input row `row0` on, reading
/// columns `left..left + w`.
fn vertical_f32(
    mid: &[f32],
    mid_w: usize,
    left: usize,
    w: usize,
    v: &Axis,
    row0: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.coeffs.len() * w);
    let mut acc = vec![0.0f64; w];
    for y in 0..v.coeffs.len() {
        acc.fill(0.0);
        for (r, &k) in v.coeffs.span(y).zip(v.coeffs.weights(y)) {
            let start = (r - row0) * mid_w + left;
            for (a, &p) in acc.iter_mut().zip(&mid[start..start + w]) {
                *a += p as f64 * k;
            }
        }
        out.extend(acc.iter().map(|&a| a as f32));
    }
    out
}

/// Resize a whole 8-bit image (tightly packed, `channels` interleaved) with Pillow's
/// `Image.resize(size, filter)`. Sizes must be positive; `None` on a buffer of the wrong
/// length or more than 4 channels.
pub fn resize_u8(
    data: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    filter: PilFilter,
) -> Option<Vec<u8>> {
    let view = PixelView::new(data, width, height, channels)?;
    PilResize::new(width, height, out_w, out_h, filter).apply_u8(&view)
}

/// Resize a float plane as Pillow resizes a mode 'F' image. Sizes must be positive.
pub fn resize_f32(
    plane: &[f32],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: PilFilter,
) -> Option<Vec<f32>> {
    PilResize::new(width, height, out_w, out_h, filter).apply_f32(plane)
}
