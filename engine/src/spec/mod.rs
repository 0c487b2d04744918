//! Pipeline files: from TOML text to a validated [`crate::Pipeline`].
//!
//! Three steps, each in its own file:
//! 1. [`load`] reads the file and every file it `extends`, keeping the source span of every
//!    value ([`svalue`]), merges them and substitutes `${var}` references;
//! 2. [`raw`] reads the merged tree into plain structs, still with spans;
//! 3. [`validate`] checks everything against the node registry and builds the
//!    [`crate::Pipeline`] the executor sees. All errors carry file, line, column and a hint.

pub mod diagnostic;
pub mod load;
pub mod raw;
pub mod svalue;
pub mod validate;

pub use diagnostic::{Diag, PipelineError, SourceMap};
