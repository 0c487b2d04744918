//! Errors while loading model files: each names the file (and tensor) and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: missing; {hint}")]
    MissingFile { path: PathBuf, hint: String },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
}

impl ModelError {
    pub fn bad(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ModelError::BadFile {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Any failure while running a diffusion model.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Scheduler(#[from] super::schedulers::SchedulerError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Input(String),
}
