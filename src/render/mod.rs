//! How results reach the user: progress, diagnostics, tables.

pub mod diagnostics;
pub mod progress;
pub mod table;
