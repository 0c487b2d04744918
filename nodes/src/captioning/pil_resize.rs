//! Pillow's bicubic resize of 8-bit RGB images, bit for bit.
//!
//! BLIP's image processor (transformers' `BlipImageProcessorPil`, and the original BLIP code
//! through torchvision's PIL path) resizes with `PIL.Image.resize(size, Image.BICUBIC)`. A
//! different bicubic (other kernel support when downscaling, float arithmetic, no clipping
//! between the passes) moves pixels by a level or more, which is enough to change a greedy
//! caption. This follows Pillow's `libImaging/Resample.c` (Pillow 9–13): the cubic kernel
//! with `a = -0.5` widened by the scale factor when downscaling, coefficients normalised per
//! output pixel and rounded to 22-bit fixed point, a horizontal pass into an 8-bit
//! intermediate image, then a vertical pass, each rounding and clipping to `0..=255`.

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// The bicubic filter's support (`BICUBIC` in Pillow's `filters`).
const SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
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

/// Per output pixel: the first input index, and the fixed-point weights of the inputs from
/// there on (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; the clamp makes that a floor here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass over an interleaved RGB8 buffer `w`×`h`: along the rows (`horizontal`, to
/// `out_len` columns) or along the columns (to `out_len` rows).
fn pass(src: &[u8], w: usize, h: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    if horizontal {
        let coeffs = coefficients(w, out_len);
        let mut out = vec![0u8; out_len * h * 3];
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = half;
                    for (i, &kv) in k.iter().enumerate() {
                        acc += row[(xmin + i) * 3 + c] as i32 * kv;
                    }
                    out[(y * out_len + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        let coeffs = coefficients(h, out_len);
        let mut out = vec![0u8; w * out_len * 3];
        for (yy, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..w * 3 {
                let mut acc = half;
                for (i, &kv) in k.iter().enumerate() {
                    acc += src[(ymin + i) * w * 3 + x] as i32 * kv;
                }
                out[yy * w * 3 + x] = clip8(acc);
            }
        }
        out
    }
}

/// `img.resize((width, height), Image.BICUBIC)` as Pillow 13 computes it for mode `"RGB"`.
///
/// Each pass rounds to 8 bits, so the order of the two passes matters. Pillow's C source up
/// to 11 always resamples the rows first; Pillow 13.0 (the version the fixtures were made
/// with) resamples the columns first when the height shrinks and
/// `2·(width − in_width) > height − in_height`, a rule read off its output (it agrees on
/// every one of ~800 random size pairs, ties included); with older Pillow releases images
/// of such sizes differ in a few pixels by a few levels.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let (w1, h1) = (width as usize, height as usize);
    if (w0, h0) == (w1, h1) {
        return img.clone();
    }
    let src = img.as_raw();
    let out = if w1 == w0 {
        pass(src, w0, h0, h1, false)
    } else if h1 == h0 {
        pass(src, w0, h0, w1, true)
    } else if h1 < h0 && 2 * (w1 as i64 - w0 as i64) > h1 as i64 - h0 as i64 {
        let tmp = pass(src, w0, h0, h1, false);
        pass(&tmp, w0, h1, w1, true)
    } else {
        let tmp = pass(src, w0, h0, w1, true);
        pass(&tmp, w1, h0, h1, false)
    };
    RgbImage::from_raw(width, height, out).expect("buffer has width·height·3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(160, 96), (72, 96), (256, 384), (500, 384)] {
            for (_, k) in coefficients(n_in, n_out) {
                let s: i64 = k.iter().map(|&v| v as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{s}");
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 3, 77]));
        let out = resize_bicubic(&img, 96, 61);
        assert!(out.pixels().all(|p| p.0 == [200, 3, 77]));
    }
}
