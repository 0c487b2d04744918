//! Small parameter types shared by several nodes.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with an input that cannot be used (an undecodable image, a missing caption).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop with an error naming every bad input (the default: nothing is dropped silently).
    #[default]
    Fail,
    /// Leave the item out and print a warning naming it.
    Skip,
}

/// Resolve a parameter path against the pipeline file's folder.
pub fn resolve(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}
