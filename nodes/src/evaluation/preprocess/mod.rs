//! The evaluator's image preprocessing, matching each metric's reference bit for bit.
//!
//! Resizing choices move FID by several points, so every network gets exactly the pixels
//! its reference implementation feeds it:
//!
//! - [`pil_resample`] (with [`pil_coeffs`]): Pillow's `Image.resize` — box, bilinear,
//!   hamming, bicubic and lanczos, antialiased by widening the filter when reducing — on
//!   8-bit images (22-bit fixed point, rounded and clipped after each pass) and on float
//!   planes (clean-fid's per-channel 'F' images), bit-exact;
//! - [`torch_interpolate`]: torch's bilinear `F.interpolate` with `align_corners=False` and
//!   no antialias (pytorch-fid), bit for bit with torch's AVX2 CPU kernel, within an ulp or
//!   two of its other kernels;
//! - [`tf1_bilinear`]: torch-fidelity's TensorFlow-1-compatible bilinear resize;
//! - [`crop`]: crop boxes and the two centre-crop rules (floor, round half to even);
//! - [`view`]: borrowed pixel windows, so crops copy nothing;
//! - [`recipe`]: the [`Recipe`] of each network and [`prepare`] / [`prepare_batch`].
//!
//! Parity: `nodes/tests/resize_parity.rs` against `tests/fixtures/eval/resize_refs.json`
//! (small integer images) and `tests/fixtures/eval/preprocess/` (real paintings; made by
//! `tools/make_resize_fixtures.py` with Pillow, torch, torchvision, transformers, clean-fid).

pub mod crop;
pub mod pil_coeffs;
pub mod pil_resample;
pub mod recipe;
pub mod tf1_bilinear;
pub mod torch_interpolate;
pub mod view;

pub use crop::CropBox;
pub use pil_coeffs::PilFilter;
pub use pil_resample::{resize_f32, resize_u8, PilResize};
pub use recipe::{prepare, prepare_batch, Recipe, CLIP_MEAN, CLIP_STD};
pub use tf1_bilinear::tf1_bilinear_resize;
pub use torch_interpolate::{bilinear_resize, TorchBilinear};
pub use view::PixelView;
