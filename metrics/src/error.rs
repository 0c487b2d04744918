//! The one error type of the estimators: each message says what is wrong and how to fix it.

use std::fmt;

/// Which of the two feature sets a problem concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// The real (reference, test) images.
    Real,
    /// The generated images.
    Generated,
}

impl Set {
    /// "real image(s)" / "generated image(s)" for messages.
    fn noun(self, count: usize) -> &'static str {
        match (self, count == 1) {
            (Set::Real, true) => "real image",
            (Set::Real, false) => "real images",
            (Set::Generated, true) => "generated image",
            (Set::Generated, false) => "generated images",
        }
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Set::Real => "real",
            Set::Generated => "generated",
        })
    }
}

/// Errors of the estimators in [`super`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricError {
    /// No rows, or rows of length 0.
    #[error("no features: {what}; extract features of at least one image first")]
    Empty { what: &'static str },

    /// Rows of different lengths.
    #[error(
        "feature row {row} has {len} values but row 0 has {expected}; \
         every image must be described by the same network"
    )]
    Ragged {
        row: usize,
        len: usize,
        expected: usize,
    },

    /// A flat buffer whose length is not `n × d`.
    #[error("{len} feature values cannot form {n} rows of {d}; pass exactly n × d values")]
    Shape { n: usize, d: usize, len: usize },

    /// NaN or infinity in the input.
    #[error(
        "feature row {row}, column {col} is {value}; features must be finite \
         (a NaN usually means a broken image or weights)"
    )]
    NonFinite { row: usize, col: usize, value: f64 },

    /// The two sets come from different networks.
    #[error(
        "real features are {real}-d but generated features are {generated}-d; \
         compute both sets with the same network"
    )]
    DimensionMismatch { real: usize, generated: usize },

    /// Too few images for an estimator.
    #[error("{metric} needs at least {need} images per set; got {got} {noun}", noun = set.noun(*got))]
    TooFewImages {
        metric: &'static str,
        need: usize,
        got: usize,
        set: Set,
    },

    /// An explicit KID subset size larger than a set.
    #[error(
        "KID subset size {subset_size} is larger than the {set} set ({available} images); \
         set `kid_subset_size` to at most {available}, or leave it unset to use \
         min(n_real, n_generated, 1000)"
    )]
    SubsetTooLarge {
        subset_size: usize,
        available: usize,
        set: Set,
    },

    /// A setting outside its range.
    #[error("`{name}` {problem}")]
    Setting { name: &'static str, problem: String },

    /// A zero row where unit-length rows are needed (cosines, normalisation).
    #[error(
        "{context}: feature row {row} is all zeros, so it has no direction; \
         check that image's features"
    )]
    ZeroRow { context: String, row: usize },

    /// A statistics object whose parts do not fit together.
    #[error("Gaussian statistics: {0}")]
    Statistics(String),

    /// A decomposition that did not converge (never seen on finite input).
    #[error("{0} did not converge; the features are probably degenerate (check for huge values)")]
    NoConvergence(&'static str),
}

/// `Result` with [`MetricError`].
pub type Result<T, E = MetricError> = std::result::Result<T, E>;
