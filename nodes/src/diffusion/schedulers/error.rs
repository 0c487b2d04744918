//! Errors of the schedulers: a bad configuration names its file and the fix; a misuse (a
//! step before `set_timesteps`, a timestep not in the schedule, a stochastic step without
//! noise) says what the caller must do instead.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The scheduler configuration cannot be read or cannot be used.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The scheduler was called in a way it cannot serve.
    #[error("scheduler: {0}")]
    Usage(String),
    #[error("scheduler: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl SchedulerError {
    pub fn config(path: &Path, message: impl std::fmt::Display) -> Self {
        SchedulerError::Config {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }

    pub fn usage(message: impl std::fmt::Display) -> Self {
        SchedulerError::Usage(message.to_string())
    }
}

pub type Result<T> = std::result::Result<T, SchedulerError>;
