//! The NSYNC contrastive trainer: the `contrastive_train` node ([`contrastive_train`]),
//! its loop ([`trainer`]) over the training examples ([`dataset`]), and its pure-math core
//! (no tensors, no models):
//!
//! - [`update_rule`]: the training variants (TI, CTO, CTOA, CTM, CTMA) and [`combine`], which
//!   turns the separate gradients of the positive, negative and anchor passes into the update
//!   handed to the optimizer, by the paper's rules or by the reference code's effective ones
//!   ([`Compat`]);
//! - [`optimizer`]: [`Adam`] (PyTorch's `torch.optim.Adam` and `torch.optim.AdamW`), with a
//!   serialisable state for bit-identical resume;
//! - [`lr_schedule`]: [`LrSchedule`], diffusers' `get_scheduler` learning-rate schedules;
//! - [`trainable`]: what is learned (token rows per style, or LoRA adapters on the UNet) as
//!   one flat vector, and the segments the update rule projects over.
//!
//! Everything works on flattened `f32` vectors (the trainable rows are small); dot products
//! and norms are taken in `f64`.

pub mod artifacts;
pub mod contrastive_train;
pub mod dataset;
pub mod lr_schedule;
pub mod optimizer;
pub mod train_params;
pub mod trainable;
pub mod trainer;
pub mod update_rule;

pub use lr_schedule::LrSchedule;
pub use optimizer::Adam;
pub use trainable::{Adapter, LoraLayout, Projection};
pub use update_rule::{combine, combine_segments, Combined, Compat, Variant};
