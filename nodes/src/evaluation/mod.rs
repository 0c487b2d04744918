//! Evaluation: the paper's metrics (CSD↑, CMMD↓, KID↓, FID↓) of generated images against
//! real test images, number for number with the reference implementations.
//!
//! - [`preprocess`]: the exact image preprocessing of each reference (PIL's resampling
//!   reproduced bit for bit on 8-bit images, torch's bilinear resize without antialias,
//!   centre crops), so features match the Python tools;
//! - [`inception`]: Inception v3 in its FID variant (pytorch-fid's port of the TF 2015-12-05
//!   network) and, as an option, torchvision's ImageNet Inception v3;
//! - [`clip_vision`]: transformers' `CLIPVisionModelWithProjection` (ViT-L/14-336 for CMMD);
//! - [`csd`]: the Contrastive Style Descriptor (OpenAI CLIP ViT-L/14 vision tower + style head);
//! - [`stats`]: the estimators — FID (f64, symmetric eigendecompositions), KID (seeded
//!   subsets), CMMD (biased Gaussian MMD), the paper's CSD score, bootstrap intervals; a
//!   crate of their own (`metrics/`), so that its linear algebra is optimised even in test
//!   builds and its tests build without candle.
//!
//! The `evaluate` node and `nsync eval` are built on these. See `shared/docs/metrics.md`
//! for the definitions every module here follows.

pub mod artifacts;
pub mod clip_vision;
pub mod csd;
pub mod evaluate;
pub mod evaluator;
pub mod extractor;
pub mod inception;
pub mod preprocess;
pub mod report;
pub use nsync_metrics as stats;
pub mod tiny_evaluators;
pub mod vit;
