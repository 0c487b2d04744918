//! Pillow's `img.resize((width, height), Image.BICUBIC)` on RGB images, as BLIP's image
//! processor calls it: a thin wrapper over the evaluator's bit-exact Pillow resampler
//! ([`crate::evaluation::preprocess`]), which follows Pillow 13's pass order.

use image::RgbImage;

use crate::evaluation::preprocess::{resize_u8, PilFilter};

/// `img.resize((width, height), Image.BICUBIC)` as Pillow 13 computes it for mode `"RGB"`.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if (img.width(), img.height()) == (width, height) {
        return img.clone();
    }
    let out = resize_u8(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        3,
        width as usize,
        height as usize,
        PilFilter::Bicubic,
    )
    .expect("non-empty RGB images resize");
    RgbImage::from_raw(width, height, out).expect("the resampler returns width × height × 3 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 3, 77]));
        let out = resize_bicubic(&img, 96, 61);
        assert!(out.pixels().all(|p| p.0 == [200, 3, 77]));
    }
}
