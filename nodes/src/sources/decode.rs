//! Decoding any image file to RGB8, explicitly.
//!
//! Every conversion is spelled out rather than left to a library default, because the
//! reference pipelines (diffusers' training scripts, the metric packages) all start from
//! Pillow's `Image.convert("RGB")`, and we must give the same pixels:
//! - grayscale: the value replicated in R, G and B;
//! - alpha: dropped (as Pillow does), or composited over white or black if asked;
//! - 16-bit: each value `v` becomes `round(v / 257)` (full range preserved);
//! - palette: expanded by the decoder;
//! - CMYK JPEG: converted by the decoder (Adobe inverted CMYK handled).

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer, ImageReader, Rgb, RgbImage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlphaMode {
    /// Drop the alpha channel (Pillow's `convert("RGB")`, used by the reference scripts).
    #[default]
    Drop,
    /// Composite over white.
    White,
    /// Composite over black.
    Black,
}

/// Decode `bytes` and convert to RGB8. The error says what is wrong in words.
pub fn decode_rgb8(bytes: &[u8], alpha: AlphaMode) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not a recognised image format (JPEG, PNG, WebP, TIFF, BMP, GIF)".into());
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && jpeg_truncated(bytes) {
        return Err("the JPEG is truncated (no end-of-image marker after its image data)".into());
    }
    let img = reader.decode().map_err(|e| format!("cannot decode: {e}"))?;
    Ok(to_rgb8(img, alpha))
}

/// A JPEG whose last end-of-image marker (FF D9) does not follow its last start-of-scan
/// (FF DA) lost its tail. Decoders differ here: some fill the missing part with grey and
/// report success; Pillow refuses ("image file is truncated"), and so do we.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi < sos,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

fn u16_to_u8(v: u16) -> u8 {
    ((v as u32 + 128) / 257) as u8
}

fn f32_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn composite(c: u8, a: u8, bg: u8) -> u8 {
    ((c as u32 * a as u32 + bg as u32 * (255 - a as u32) + 127) / 255) as u8
}

fn with_alpha(w: u32, h: u32, px: impl Iterator<Item = [u8; 4]>, alpha: AlphaMode) -> RgbImage {
    let bg = match alpha {
        AlphaMode::Drop => None,
        AlphaMode::White => Some(255),
        AlphaMode::Black => Some(0),
    };
    let data: Vec<u8> = px
        .flat_map(|[r, g, b, a]| match bg {
            None => [r, g, b],
            Some(bg) => [
                composite(r, a, bg),
                composite(g, a, bg),
                composite(b, a, bg),
            ],
        })
        .collect();
    ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, data).expect("sized")
}

/// The explicit conversion table.
pub fn to_rgb8(img: DynamicImage, alpha: AlphaMode) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma8(i) => {
            let data = i.into_raw().into_iter().flat_map(|v| [v, v, v]).collect();
            RgbImage::from_raw(w, h, data).expect("sized")
        }
        DynamicImage::ImageLumaA8(i) => {
            with_alpha(w, h, i.pixels().map(|p| [p[0], p[0], p[0], p[1]]), alpha)
        }
        DynamicImage::ImageRgba8(i) => with_alpha(w, h, i.pixels().map(|p| p.0), alpha),
        DynamicImage::ImageLuma16(i) => {
            let data = i.into_raw().into_iter().flat_map(|v| {
                let x = u16_to_u8(v);
                [x, x, x]
            });
            RgbImage::from_raw(w, h, data.collect()).expect("sized")
        }
        DynamicImage::ImageLumaA16(i) => with_alpha(
            w,
            h,
            i.pixels().map(|p| {
                let l = u16_to_u8(p[0]);
                [l, l, l, u16_to_u8(p[1])]
            }),
            alpha,
        ),
        DynamicImage::ImageRgb16(i) => {
            RgbImage::from_raw(w, h, i.into_raw().into_iter().map(u16_to_u8).collect())
                .expect("sized")
        }
        DynamicImage::ImageRgba16(i) => {
            with_alpha(w, h, i.pixels().map(|p| p.0.map(u16_to_u8)), alpha)
        }
        DynamicImage::ImageRgb32F(i) => {
            RgbImage::from_raw(w, h, i.into_raw().into_iter().map(f32_to_u8).collect())
                .expect("sized")
        }
        DynamicImage::ImageRgba32F(i) => {
            with_alpha(w, h, i.pixels().map(|p| p.0.map(f32_to_u8)), alpha)
        }
        other => other.to_rgb8(),
    }
}

/// Encode as PNG (fast compression: these blobs are working data, not archives).
pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_rounds_like_division_by_257() {
        assert_eq!(u16_to_u8(0), 0);
        assert_eq!(u16_to_u8(65535), 255);
        assert_eq!(u16_to_u8(257 * 100 + 128), 100);
        assert_eq!(u16_to_u8(257 * 100 + 129), 101);
    }

    #[test]
    fn composite_over_white() {
        assert_eq!(composite(0, 0, 255), 255);
        assert_eq!(composite(10, 255, 255), 10);
        assert_eq!(composite(0, 128, 255), 127);
    }
}
