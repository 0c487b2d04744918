//! The preprocessing of each network the evaluator runs, exactly as its reference does it.
//!
//! Input images are RGB8: the `images` node's decoder converts grayscale, palette, CMYK,
//! 16-bit and alpha images to RGB8 as Pillow's `convert("RGB")` does, which is what every
//! reference applies first (pytorch-fid, clean-fid and CSD call `convert("RGB")`; CMMD tiles
//! grayscale to RGB, the same values). Each recipe returns a CHW f32 image of
//! `3 × size × size`:
//!
//! | recipe | reference | geometry | values |
//! |---|---|---|---|
//! | [`Recipe::PytorchFid`] | pytorch-fid 0.3 `InceptionV3` | torch bilinear to 299×299, no antialias (aspect not kept) | `u8/255`, then `2x − 1` |
//! | [`Recipe::CleanFid`] | clean-fid 0.1.35, mode "clean" | PIL bicubic on f32 planes to 299×299, clip to [0, 255] | `(x − 128)/128` |
//! | [`Recipe::TorchvisionInception`] | gan-metrics-pytorch (the NSYNC authors' FID/KID) | as pytorch-fid | as pytorch-fid |
//! | [`Recipe::Cmmd`] | cmmd-pytorch (Google's CMMD) | centre square crop (floor), PIL bicubic 8-bit to 336 | `(u8/255 − mean)/std`, CLIP mean/std |
//! | [`Recipe::Csd`] | CSD `transforms_branch0` (torchvision) | shorter side to 224 (PIL bicubic 8-bit), centre crop 224 (round half even) | `(u8/255 − mean)/std`, CLIP mean/std |
//!
//! PIL's 8-bit and float resizes are bit-exact ([`super::pil_resample`]); the normalisations
//! are the references' f32 operations in their order, so CMMD, CSD and clean-fid inputs are
//! the references' bits; the torch bilinear resize is bit-exact with torch's AVX2 CPU kernel
//! and within an ulp or two of its others ([`super::torch_interpolate`]).
//! `tests/fixtures/eval/preprocess/` (made by `tools/make_resize_fixtures.py`) checks all
//! five on real paintings.
//!
//! Notes on the references:
//! - CMMD's embedding code also runs torch bicubic interpolation to 336 on the already
//!   336×336 image: at equal size it is the identity (weights 0, 1, 0, 0), so it is omitted.
//! - torchvision's ImageNet Inception v3 normally sees ImageNet-normalised input that
//!   `transform_input=True` turns back into `2x − 1`; gan-metrics-pytorch calls the blocks
//!   directly on `2x − 1` of a bilinear 299 resize, so its input is pytorch-fid's input.
//!   (torchmetrics' FID instead uses torch-fidelity: the FID Inception with a TF1-style
//!   bilinear resize, [`super::tf1_bilinear`], and `(x − 128)/128`; not a recipe here.)
//! - Pillow versions: clean-fid's float resize of an image at most 299 wide and more than
//!   299 tall follows Pillow 13's pass order (vertical first, [`super::pil_resample`]);
//!   Pillow ≤ 12.1 goes horizontal first there, an ulp or so apart. The 8-bit CMMD and CSD
//!   resizes scale both axes alike and agree with every Pillow version.
//! - gan-metrics-pytorch reads files with `np.array(Image.open(f))`, without
//!   `convert("RGB")`: it fails on grayscale or RGBA files where this recipe converts them.
//! - Degenerate inputs: images smaller than the target are upscaled by the same formulas;
//!   1-pixel rows or columns work (the CSD resize computes only the cropped window, so a
//!   1×1000 image does not become 224×224000 in memory); an empty image (0 pixels) is
//!   treated as one black pixel.

use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;

use super::crop::CropBox;
use super::pil_coeffs::PilFilter;
use super::pil_resample::PilResize;
use super::torch_interpolate::TorchBilinear;
use super::view::PixelView;

/// OpenAI CLIP's per-channel normalisation (also CSD's), with the published digits; the
/// references round them to f32 as these literals are.
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How images are prepared for one network; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recipe {
    /// pytorch-fid: bilinear to 299 without antialias, `2x − 1`.
    PytorchFid,
    /// clean-fid "clean": PIL bicubic on floats to 299, clip to [0, 255], `(x − 128)/128`.
    CleanFid,
    /// torchvision's ImageNet Inception as gan-metrics-pytorch feeds it (the paper's FID/KID):
    /// the same pixels as [`Recipe::PytorchFid`].
    TorchvisionInception,
    /// CMMD: centre square crop, PIL bicubic (8-bit) to 336, `/255`, CLIP mean/std.
    Cmmd,
    /// CSD: shorter side to 224 with PIL bicubic (8-bit), centre crop 224, `/255`, CLIP mean/std.
    Csd,
}

impl Recipe {
    pub const ALL: [Recipe; 5] = [
        Recipe::PytorchFid,
        Recipe::CleanFid,
        Recipe::TorchvisionInception,
        Recipe::Cmmd,
        Recipe::Csd,
    ];

    /// A stable identifier for cache keys. Bump the version when the output changes.
    pub fn id(&self) -> &'static str {
        match self {
            Recipe::PytorchFid => "pytorch-fid/bilinear-299/v1",
            Recipe::CleanFid => "clean-fid/pil-bicubic-f32-299/v1",
            Recipe::TorchvisionInception => "gan-metrics-pytorch/bilinear-299/v1",
            Recipe::Cmmd => "cmmd/square-crop-pil-bicubic-336-clip-norm/v1",
            Recipe::Csd => "csd/short-side-pil-bicubic-224-center-crop-clip-norm/v1",
        }
    }

    /// Side of the square the recipe produces.
    pub fn size(&self) -> usize {
        match self {
            Recipe::PytorchFid | Recipe::CleanFid | Recipe::TorchvisionInception => 299,
            Recipe::Cmmd => 336,
            Recipe::Csd => 224,
        }
    }
}

/// One image prepared for `recipe`: CHW f32, `3 × size × size`.
pub fn prepare(recipe: Recipe, img: &RgbImage) -> Vec<f32> {
    if img.width() == 0 || img.height() == 0 {
        return prepare(recipe, &RgbImage::new(1, 1));
    }
    match recipe {
        Recipe::PytorchFid | Recipe::TorchvisionInception => torch_bilinear(img, 299)
            .into_iter()
            .map(|x| 2.0 * x - 1.0)
            .collect(),
        Recipe::CleanFid => {
            let hwc = clean_fid_resize(img);
            let mut out = vec![0.0f32; hwc.len()];
            let plane = hwc.len() / 3;
            for (i, px) in hwc.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = (px[c] - 128.0) / 128.0;
                }
            }
            out
        }
        Recipe::Cmmd => clip_normalize(&cmmd_resize(img)),
        Recipe::Csd => clip_normalize(&csd_resize(img)),
    }
}

/// A batch `[N, 3, size, size]` (f32) on `device`; images are prepared in parallel.
pub fn prepare_batch(
    recipe: Recipe,
    imgs: &[&RgbImage],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let s = recipe.size();
    let prepared: Vec<Vec<f32>> = imgs.par_iter().map(|img| prepare(recipe, img)).collect();
    let data: Vec<f32> = prepared.concat();
    Tensor::from_vec(data, (imgs.len(), 3, s, s), device)
}

/// CMMD's geometry: the centre square, PIL bicubic to 336×336 (RGB8).
pub fn cmmd_resize(img: &RgbImage) -> RgbImage {
    let view = PixelView::rgb(img);
    let crop = CropBox::center_square(view.width(), view.height());
    resize_view(&view, crop, 336, 336, CropBox::full(336, 336))
}

/// CSD's geometry: torchvision `Resize(224, BICUBIC)` on a PIL image (shorter side to 224,
/// longer `int(224 · long / short)`) then `CenterCrop(224)`; only the crop is computed.
pub fn csd_resize(img: &RgbImage) -> RgbImage {
    let view = PixelView::rgb(img);
    let (w, h) = (view.width(), view.height());
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((224 * long) as f64 / short as f64) as usize;
    let (new_w, new_h) = if w <= h {
        (224, new_long)
    } else {
        (new_long, 224)
    };
    let crop = CropBox::torchvision_center(new_w, new_h, 224);
    resize_view(&view, CropBox::full(w, h), new_w, new_h, crop)
}

/// clean-fid's "clean" resize: each channel as a PIL 'F' image, bicubic to 299×299, clipped
/// to [0, 255]; HWC f32 like the array clean-fid builds.
pub fn clean_fid_resize(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let resize = PilResize::new(w, h, 299, 299, PilFilter::Bicubic);
    let raw = img.as_raw();
    let mut out = vec![0.0f32; 299 * 299 * 3];
    for c in 0..3 {
        let plane: Vec<f32> = raw.iter().skip(c).step_by(3).map(|&v| v as f32).collect();
        let resized = resize.apply_f32(&plane).expect("plane of the image's size");
        for (i, v) in resized.into_iter().enumerate() {
            out[i * 3 + c] = v.clamp(0.0, 255.0);
        }
    }
    out
}

/// `ToTensor()` then torch bilinear to `size × size` (no antialias): CHW in [0, 1].
pub fn torch_bilinear(img: &RgbImage, size: usize) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let resize = TorchBilinear::new(w, h, size, size);
    let raw = img.as_raw();
    let mut out = Vec::with_capacity(3 * size * size);
    for c in 0..3 {
        out.extend(resize.apply_with(|y, x| raw[(y * w + x) * 3 + c] as f32 / 255.0));
    }
    out
}

fn resize_view(
    view: &PixelView,
    crop: CropBox,
    out_w: usize,
    out_h: usize,
    window: CropBox,
) -> RgbImage {
    let src = view.crop(crop).expect("crop inside the image");
    let resize = PilResize::window(
        src.width(),
        src.height(),
        out_w,
        out_h,
        PilFilter::Bicubic,
        window,
    );
    let (w, h) = resize.output_size();
    let pixels = resize
        .apply_u8(&src)
        .expect("an RGB view of the resize's size");
    RgbImage::from_raw(w as u32, h as u32, pixels).expect("w·h·3 bytes")
}

/// `/255` then CLIP mean/std, HWC u8 → CHW f32, in the references' f32 order.
fn clip_normalize(img: &RgbImage) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_sizes_match() {
        let mut ids: Vec<&str> = Recipe::ALL.iter().map(|r| r.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
        for r in Recipe::ALL {
            let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
            assert_eq!(prepare(r, &img).len(), 3 * r.size() * r.size(), "{r:?}");
        }
    }

    #[test]
    fn degenerate_images_do_not_panic() {
        for (w, h) in [(0, 0), (0, 5), (1, 1), (1, 1000), (1000, 1), (2, 3)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x + y) as u8, 3, 250]));
            for r in Recipe::ALL {
                let v = prepare(r, &img);
                assert_eq!(v.len(), 3 * r.size() * r.size(), "{r:?} {w}x{h}");
                assert!(v.iter().all(|x| x.is_finite()), "{r:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 91, image::Rgb([10, 128, 255]));
        for r in Recipe::ALL {
            let v = prepare(r, &img);
            let plane = r.size() * r.size();
            // PIL's weights sum to one exactly enough to keep the value; torch's λ0·a + λ1·a
            // may round by an ulp.
            let tol = if r.size() == 299 && r != Recipe::CleanFid {
                1e-6
            } else {
                0.0
            };
            for c in 0..3 {
                let first = v[c * plane];
                let ch = &v[c * plane..(c + 1) * plane];
                assert!(ch.iter().all(|&x| (x - first).abs() <= tol), "{r:?}");
            }
        }
        assert_eq!(
            prepare(Recipe::PytorchFid, &img)[0],
            2.0 * (10.0f32 / 255.0) - 1.0
        );
        assert_eq!(prepare(Recipe::CleanFid, &img)[0], (10.0 - 128.0) / 128.0);
    }

    #[test]
    fn batch_has_the_images_in_order() {
        let a = RgbImage::from_pixel(8, 8, image::Rgb([0, 0, 0]));
        let b = RgbImage::from_pixel(8, 6, image::Rgb([255, 255, 255]));
        let t = prepare_batch(Recipe::Csd, &[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 224, 224]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = 3 * 224 * 224;
        assert_eq!(&v[..n], prepare(Recipe::Csd, &a).as_slice());
        assert_eq!(&v[n..], prepare(Recipe::Csd, &b).as_slice());
        let empty = prepare_batch(Recipe::Cmmd, &[], &Device::Cpu).unwrap();
        assert_eq!(empty.dims(), &[0, 3, 336, 336]);
    }
}
