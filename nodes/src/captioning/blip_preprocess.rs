//! BLIP's image preprocessing, exactly as transformers' `BlipImageProcessorPil`.
//!
//! `preprocessor_config.json` → resize the RGB8 image to `size` with Pillow's bicubic
//! ([`super::pil_resize`]), rescale (`x · rescale_factor` in f64, then f32, as numpy does),
//! normalise (`(x − mean) / std` in f32), channels first. This is the processor of the
//! original BLIP code and what transformers 5 uses without torchvision; with torchvision
//! installed transformers 5 defaults to a tensor resize (`BlipImageProcessor`) whose pixels
//! differ by up to a few 8-bit levels on upscaled images (recorded in the fixtures).

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use super::pil_resize::resize_bicubic;
use crate::diffusion::ModelError;

const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// `size` in a preprocessor config: `{"height", "width"}` or (old files) one number.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum SizeField {
    Square(u32),
    HeightWidth { height: u32, width: u32 },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct RawConfig {
    do_resize: bool,
    size: SizeField,
    resample: u32,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: Vec<f64>,
    image_std: Vec<f64>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            do_resize: true,
            size: SizeField::HeightWidth {
                height: 384,
                width: 384,
            },
            resample: 3,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.to_vec(),
            image_std: CLIP_STD.to_vec(),
        }
    }
}

/// The validated preprocessing of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct BlipPreprocessor {
    pub do_resize: bool,
    pub width: u32,
    pub height: u32,
    /// `None`: no rescaling.
    pub rescale_factor: Option<f64>,
    /// `None`: no normalisation; else per-channel `(mean, std)`.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

impl BlipPreprocessor {
    /// The hub captioning models' processor at `size` px (bicubic, 1/255, CLIP mean/std).
    pub fn clip_style(size: u32) -> BlipPreprocessor {
        BlipPreprocessor {
            do_resize: true,
            width: size,
            height: size,
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN, CLIP_STD)),
        }
    }

    /// Read `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<BlipPreprocessor, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: format!("a BLIP model folder needs preprocessor_config.json ({e})"),
        })?;
        let raw: RawConfig = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::bad(path, format!("not a BlipImageProcessor config: {e}")))?;
        if raw.resample != 3 {
            return Err(ModelError::bad(
                path,
                format!(
                    "resample {} is not supported: BLIP uses 3 (bicubic)",
                    raw.resample
                ),
            ));
        }
        let three = |v: &[f64], name: &str| -> Result<[f64; 3], ModelError> {
            <[f64; 3]>::try_from(v).map_err(|_| {
                ModelError::bad(path, format!("{name} must have 3 values, has {}", v.len()))
            })
        };
        let (height, width) = match raw.size {
            SizeField::Square(n) => (n, n),
            SizeField::HeightWidth { height, width } => (height, width),
        };
        if height == 0 || width == 0 {
            return Err(ModelError::bad(path, "size must not be 0"));
        }
        let mean = three(&raw.image_mean, "image_mean")?;
        let std = three(&raw.image_std, "image_std")?;
        if std.contains(&0.0) {
            return Err(ModelError::bad(path, "image_std must not be 0"));
        }
        Ok(BlipPreprocessor {
            do_resize: raw.do_resize,
            width,
            height,
            rescale_factor: raw.do_rescale.then_some(raw.rescale_factor),
            normalize: raw.do_normalize.then_some((mean, std)),
        })
    }

    /// `pixel_values` of one image, `[3, height, width]` f32 on the CPU.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor, String> {
        let v = self.preprocess_vec(img)?;
        Tensor::from_vec(
            v,
            (3, self.height as usize, self.width as usize),
            &Device::Cpu,
        )
        .map_err(|e| e.to_string())
    }

    /// `pixel_values` of a batch, `[batch, 3, height, width]` on `device`.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> Result<Tensor, String> {
        let mut all = Vec::with_capacity(images.len() * 3 * (self.width * self.height) as usize);
        for img in images {
            all.extend(self.preprocess_vec(img)?);
        }
        Tensor::from_vec(
            all,
            (images.len(), 3, self.height as usize, self.width as usize),
            device,
        )
        .map_err(|e| e.to_string())
    }

    fn preprocess_vec(&self, img: &RgbImage) -> Result<Vec<f32>, String> {
        let resized;
        let img = if self.do_resize {
            resized = resize_bicubic(img, self.width, self.height);
            &resized
        } else if img.dimensions() != (self.width, self.height) {
            return Err(format!(
                "image is {}×{}, the model takes {}×{} and do_resize is false",
                img.width(),
                img.height(),
                self.width,
                self.height
            ));
        } else {
            img
        };
        let plane = (self.width * self.height) as usize;
        let mut out = vec![0f32; 3 * plane];
        let norm = self.normalize.map(|(m, s)| {
            (
                [m[0] as f32, m[1] as f32, m[2] as f32],
                [s[0] as f32, s[1] as f32, s[2] as f32],
            )
        });
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let v = px.0[c];
                let x = match self.rescale_factor {
                    Some(f) => (v as f64 * f) as f32,
                    None => v as f32,
                };
                out[c * plane + i] = match norm {
                    Some((m, s)) => (x - m[c]) / s[c],
                    None => x,
                };
            }
        }
        Ok(out)
    }
}
