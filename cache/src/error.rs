//! The one error type of the cache crate. Every variant names the file involved, because the
//! user's fix is almost always "look at / delete / free space for this path".

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} is missing from the cache at {path}")]
    MissingBlob { digest: String, path: PathBuf },
    #[error("blob {expected} at {path} is corrupt (its content hashes to {actual}); it has been quarantined and will be recomputed")]
    CorruptBlob {
        expected: String,
        actual: String,
        path: PathBuf,
    },
    #[error("{path} is not an nsync cache of a format this version understands ({detail}); use another --cache-dir or remove it")]
    IncompatibleLayout { path: PathBuf, detail: String },
    #[error("malformed digest `{0}`: expected 64 hexadecimal characters")]
    BadDigest(String),
    #[error("could not serialise {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl CacheError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attach a path to an I/O result.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, CacheError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, CacheError> {
        self.map_err(|e| CacheError::io(path, e))
    }
}
