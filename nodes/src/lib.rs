//! The node kinds of nsync, grouped by what they produce.
//!
//! - [`sources`]: items from the filesystem — `images` (decoded, converted to RGB8) and
//!   `captions` (from sidecar `.txt` files, JSONL or CSV);
//! - [`prompts`]: `prompt_template`, per-item text templating (the negative-prompt
//!   generator of the paper: `"{caption} in the style of painting"`).
//!
//! [`register_all`] puts every kind into a registry; the binary calls it once.

pub mod captioning;
pub mod diffusion;
pub mod evaluation;
pub mod policy;
pub mod prompts;
pub mod sources;
pub mod training;

use nsync_engine::Registry;

/// A registry with every node kind this crate provides.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    register_all(&mut r);
    r
}

pub fn register_all(r: &mut Registry) {
    r.register(sources::images::ImagesKind);
    r.register(sources::captions::CaptionsKind);
    r.register(captioning::caption_node::CaptionKind);
    r.register(captioning::tiny_captioner::TinyCaptionerKind);
    r.register(prompts::prompt_template::PromptTemplateKind);
    r.register(diffusion::tiny_sd::TinySdKind);
    r.register(diffusion::sd_sample::SdSampleKind);
    r.register(training::contrastive_train::ContrastiveTrainKind);
    r.register(evaluation::evaluate::EvaluateKind);
    r.register(evaluation::tiny_evaluators::TinyEvaluatorsKind);
    r.register_type(diffusion::model_artifact::SD_MODEL);
    r.register_type(captioning::caption_model::CAPTION_MODEL);
    r.register_type(evaluation::artifacts::METRICS);
    r.register_type(evaluation::artifacts::METRICS_REPORT);
    r.register_type(evaluation::artifacts::EVAL_MODELS);
    r.register_type(training::artifacts::EMBEDDING);
    r.register_type(training::artifacts::LORA);
    r.register_type(training::artifacts::CURVES);
}
