//! Prompt nodes: per-item text built from other per-item texts.

pub mod prompt_template;
pub mod template;
