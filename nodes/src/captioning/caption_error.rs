//! Errors of the captioning models: loading (a [`ModelError`] naming the file and tensor),
//! bad input, or a failed tensor computation.

use crate::diffusion::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum CaptionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Input(String),
}
