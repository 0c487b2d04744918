//! The training examples: real images with captions, matched by item id to their
//! synthetic negatives, decoded once and resized to the training resolution.
//!
//! Random choices (which example, the anchor, the flip) are drawn per step from the
//! pipeline seed and the step number, so a resumed run draws exactly what an uninterrupted
//! one would.

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;
use nsync_cache::Store;
use nsync_engine::node::{Inputs, NodeError};

pub struct Example {
    pub id: String,
    pub caption: String,
    pub image: RgbImage,
    pub negative: Option<RgbImage>,
}

fn decode(
    store: &Store,
    digest: &nsync_cache::Digest,
    what: &str,
    size: u32,
) -> Result<RgbImage, NodeError> {
    let bytes = store.get_blob(digest)?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| NodeError::msg(format!("{what}: cannot decode: {e}")))?
        .to_rgb8();
    Ok(image::imageops::resize(
        &img,
        size,
        size,
        FilterType::CatmullRom,
    ))
}

/// Examples from the `images`, `captions` and (if `with_negatives`) `negatives` inputs.
pub fn load(
    store: &Store,
    inputs: &Inputs,
    with_negatives: bool,
    size: u32,
) -> Result<Vec<Example>, NodeError> {
    load_ports(
        store,
        inputs,
        ["images", "captions", "negatives"],
        with_negatives,
        size,
    )
}

/// Examples from the inputs named `ports` (images, captions, negatives; the negatives only
/// if `with_negatives`), e.g. one style's `images_monet`, `captions_monet`,
/// `negatives_monet`.
pub fn load_ports(
    store: &Store,
    inputs: &Inputs,
    ports: [&str; 3],
    with_negatives: bool,
    size: u32,
) -> Result<Vec<Example>, NodeError> {
    let items = |port: &str| {
        inputs
            .get(port)
            .and_then(|a| a.items())
            .ok_or_else(|| NodeError::msg(format!("input `{port}` is missing")))
    };
    let images = items(ports[0])?;
    let captions = items(ports[1])?;
    let negatives = if with_negatives {
        Some(items(ports[2])?)
    } else {
        None
    };
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (id, blob) in images.iter() {
        let Some(cap) = captions.get(id) else {
            missing.push(format!("`{id}` has no caption"));
            continue;
        };
        let negative = match &negatives {
            Some(n) => match n.get(id) {
                Some(b) => Some(decode(store, &b.digest, &format!("negative `{id}`"), size)?),
                None => {
                    missing.push(format!("`{id}` has no negative image"));
                    continue;
                }
            },
            None => None,
        };
        let caption = String::from_utf8(store.get_blob(&cap.digest)?)
            .map_err(|_| NodeError::msg(format!("caption of `{id}` is not UTF-8")))?;
        out.push(Example {
            id: id.clone(),
            caption,
            image: decode(store, &blob.digest, &format!("image `{id}`"), size)?,
            negative,
        });
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
        return Err(NodeError::msg(format!(
            "{} training image(s) of `{}` cannot be used: {}; every positive needs a caption (and a negative for this variant)",
            missing.len(),
            ports[0],
            shown.join(", ")
        )));
    }
    if out.is_empty() {
        return Err(NodeError::msg(format!(
            "no training images in `{}`",
            ports[0]
        )));
    }
    Ok(out)
}

/// `[1, 3, s, s]` in `[-1, 1]`, optionally mirrored left-right.
pub fn to_tensor(img: &RgbImage, flip: bool, device: &Device) -> candle_core::Result<Tensor> {
    let img = if flip {
        image::imageops::flip_horizontal(img)
    } else {
        img.clone()
    };
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .into_raw()
        .into_iter()
        .map(|v| v as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)
}

/// Per-step draws, from the pipeline seed and the step only.
pub struct Draws {
    pub seed: u64,
}

impl Draws {
    fn u64(&self, purpose: &str, step: usize, k: usize) -> u64 {
        crate::diffusion::noise::derive(self.seed, purpose, ((step as u64) << 20) | k as u64)
    }

    /// Index of the positive of triple `k` at `step`.
    pub fn positive(&self, step: usize, k: usize, n: usize) -> usize {
        (self.u64("positive", step, k) % n as u64) as usize
    }

    /// Index of the anchor: another example than `pos` when there is one.
    pub fn anchor(&self, step: usize, k: usize, n: usize, pos: usize) -> usize {
        if n < 2 {
            return pos;
        }
        let r = (self.u64("anchor", step, k) % (n as u64 - 1)) as usize;
        if r >= pos {
            r + 1
        } else {
            r
        }
    }

    pub fn flip(&self, step: usize, k: usize) -> bool {
        self.u64("flip", step, k) & 1 == 1
    }

    /// A seed for one pass of one triple (VAE sample noise, diffusion noise, timestep).
    pub fn pass_seed(&self, step: usize, k: usize, pass: usize) -> u64 {
        self.u64("pass", step, k * 4 + pass)
    }
}

/// Which images a pass trains on.
pub fn pick(examples: &[Example], idx: usize, negative: bool) -> (&RgbImage, &str) {
    let e = &examples[idx];
    let img = if negative {
        e.negative
            .as_ref()
            .expect("negatives loaded for this variant")
    } else {
        &e.image
    };
    (img, e.caption.as_str())
}
