//! Captioning models: BLIP (transformers' `BlipForConditionalGeneration`) in candle.
//!
//! The first stage of the method captions every training and test image. BLIP gives short,
//! generic captions quickly; this module loads the Hugging Face captioning checkpoints
//! strictly and reproduces transformers' greedy captions token for token:
//!
//! - [`blip_captioner`]: [`BlipCaptioner`] — `from_dir`, `caption`, random full-size models;
//! - [`blip_config`], [`blip_preprocess`] (+ [`pil_resize`], Pillow's bicubic bit for bit),
//!   [`bert_tokenizer`]: the three configuration files of a model folder;
//! - [`blip_vision`] (the ViT), [`blip_text`] (the BERT decoder with a KV cache),
//!   [`layers`], [`fast_ops`] (fused CPU GELU and softmax), [`generate`] (greedy decoding);
//! - [`tiny_blip`]: [`write_tiny_blip`], a tiny random captioner for demos and tests.
//!
//! Nodes: [`caption_node`] (`caption`, per item, with human overrides), [`tiny_captioner`]
//! (`tiny_captioner`), and the [`caption_model::CAPTION_MODEL`] artifact they share.
//!
//! Parity with transformers 5.24 on a tiny random model: `nodes/tests/blip_parity.rs`
//! against `tests/fixtures/caption/`, written by `tools/make_blip_fixtures.py`.
//!
//! Checkpoints: `Salesforce/blip-image-captioning-base` and `-large` from the Hugging Face
//! hub — put `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`
//! and `preprocessor_config.json` of their `main` branch in one folder (`pytorch_model.bin`,
//! `tf_model.h5`, `vocab.txt` are not read). The loader expects exactly the tensors of
//! transformers' `BlipForConditionalGeneration`; it also accepts the tied LM-head copies
//! (`text_decoder.cls.predictions.decoder.*`) and `position_ids` buffers that files saved by
//! older transformers carry. Verified on checkpoints saved by transformers 5.24 (the
//! fixtures); the hub files themselves could not be downloaded here.
//!
//! Preprocessing follows Pillow 13's bicubic (see [`pil_resize`] for the pass order).

pub mod bert_tokenizer;
pub mod blip_captioner;
pub mod blip_config;
pub mod blip_preprocess;
pub mod blip_text;
pub mod blip_vision;
pub mod caption_error;
pub mod caption_model;
pub mod caption_node;
pub mod fast_ops;
pub mod generate;
pub mod layers;
pub mod pil_resize;
pub mod tiny_blip;
pub mod tiny_captioner;

pub use bert_tokenizer::BlipTokenizer;
pub use blip_captioner::{BlipCaptioner, Caption};
pub use blip_config::BlipConfig;
pub use blip_preprocess::BlipPreprocessor;
pub use caption_error::CaptionError;
pub use tiny_blip::write_tiny_blip;
