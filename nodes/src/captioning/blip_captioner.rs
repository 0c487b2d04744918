//! The BLIP captioner: a Hugging Face BLIP captioning folder in, one caption per image out.
//!
//! Loads the hub layout of `Salesforce/blip-image-captioning-base` / `-large`
//! (`config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `preprocessor_config.json`) strictly: every tensor of `BlipForConditionalGeneration` must
//! be present with its shape and nothing else may be (besides `position_ids` buffers and the
//! tied LM-head copies). Captions are what transformers'
//! `model.generate(**processor(images, prompt), do_sample=False, num_beams=1,
//! max_new_tokens=N)` produces, without the prompt: see [`super::generate`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::bert_tokenizer::BlipTokenizer;
use super::blip_config::BlipConfig;
use super::blip_preprocess::BlipPreprocessor;
use super::blip_text::BlipTextDecoder;
use super::blip_vision::BlipVisionModel;
use super::caption_error::CaptionError;
use super::generate::{greedy, Greedy};
use super::tiny_blip::bert_layout_vocab;
use crate::diffusion::weights::{component_file, Weights};
use crate::diffusion::ModelError;

/// One image's caption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caption {
    /// The decoded caption without the prompt, special tokens dropped, trimmed.
    pub text: String,
    /// The generated tokens after the prompt, ending with `[SEP]` unless `max_new_tokens`
    /// ran out: `prefix ++ token_ids` is the row transformers' `generate` returns (without
    /// its padding), `prefix` being [`BlipCaptioner::prefix`].
    pub token_ids: Vec<u32>,
}

pub struct BlipCaptioner {
    pub config: BlipConfig,
    pub preprocessor: BlipPreprocessor,
    pub tokenizer: BlipTokenizer,
    vision: BlipVisionModel,
    decoder: BlipTextDecoder,
    device: Device,
}

/// Buffers some checkpoints carry that the model does not use.
const IGNORED: &[&str] = &["position_ids"];

impl BlipCaptioner {
    /// Load a BLIP captioning folder (f32 weights, kept on `device`).
    pub fn from_dir(dir: &Path, device: &Device) -> Result<BlipCaptioner, ModelError> {
        let config = BlipConfig::from_file(&dir.join("config.json"))?;
        let pre_path = dir.join("preprocessor_config.json");
        let preprocessor = BlipPreprocessor::from_file(&pre_path)?;
        let (h, w) = config.vision_config.image_hw();
        if (preprocessor.height as usize, preprocessor.width as usize) != (h, w) {
            return Err(ModelError::bad(
                &pre_path,
                format!(
                    "size is {}×{} but the vision model (config.json) takes {h}×{w}",
                    preprocessor.height, preprocessor.width
                ),
            ));
        }
        let tokenizer = BlipTokenizer::from_dir(dir)?;
        let weights = Weights::load(&component_file(dir, "model")?, DType::F32, device)?;
        let m = Self::from_weights(config, preprocessor, tokenizer, &weights, device)?;
        weights.finish(IGNORED)?;
        Ok(m)
    }

    /// Build from already-open weights (a file, or [`Weights::random`]).
    pub fn from_weights(
        config: BlipConfig,
        preprocessor: BlipPreprocessor,
        tokenizer: BlipTokenizer,
        w: &Weights,
        device: &Device,
    ) -> Result<BlipCaptioner, ModelError> {
        config
            .validate()
            .map_err(|e| ModelError::bad(w.path(), e))?;
        let t = &config.text_config;
        if tokenizer.vocab_size() > t.vocab_size {
            return Err(ModelError::bad(
                w.path(),
                format!(
                    "the tokenizer has {} tokens but the text decoder only {} (vocab_size)",
                    tokenizer.vocab_size(),
                    t.vocab_size
                ),
            ));
        }
        let vision = BlipVisionModel::load(&config.vision_config, w, "vision_model.")?;
        let decoder = BlipTextDecoder::load(
            t,
            config.vision_config.hidden_size,
            config.tie_word_embeddings,
            w,
            "text_decoder.",
            device,
        )?;
        Ok(BlipCaptioner {
            config,
            preprocessor,
            tokenizer,
            vision,
            decoder,
            device: device.clone(),
        })
    }

    /// A model of `config` with random weights drawn from `seed` (on the CPU): for
    /// benchmarks and tests. Biases are 0 and weights N(0, 1/fan_in) ([`Weights::random`]).
    pub fn random(
        config: BlipConfig,
        preprocessor: BlipPreprocessor,
        tokenizer: BlipTokenizer,
        seed: u64,
    ) -> Result<BlipCaptioner, ModelError> {
        let w = Weights::random(seed, "random BLIP weights");
        Self::from_weights(config, preprocessor, tokenizer, &w, &Device::Cpu)
    }

    /// A `Salesforce/blip-image-captioning-large`-size model ([`BlipConfig::large`], 384 px)
    /// with random weights and a stand-in vocabulary of the same size and special-token ids
    /// (the tiny model's words at BERT's positions, `[unusedN]` elsewhere).
    pub fn random_large(seed: u64) -> Result<BlipCaptioner, ModelError> {
        let config = BlipConfig::large();
        let base = config.text_config.vocab_size - 2;
        let tokenizer = BlipTokenizer::bert_json(&bert_layout_vocab(base))
            .and_then(|j| BlipTokenizer::from_json(&j, false))
            .map_err(|e| ModelError::bad("random BLIP tokenizer", e))?;
        Self::random(config, BlipPreprocessor::clip_style(384), tokenizer, seed)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The decoder's first tokens for `prompt`: `[DEC]` and the prompt's word pieces.
    pub fn prefix(&self, prompt: Option<&str>) -> Result<Vec<u32>, CaptionError> {
        self.tokenizer
            .prefix(prompt, self.config.text_config.bos_token_id)
            .map_err(CaptionError::Input)
    }

    /// `pixel_values` `[batch, 3, h, w]` of `images`, on the model's device.
    pub fn pixel_values(&self, images: &[RgbImage]) -> Result<Tensor, CaptionError> {
        self.preprocessor
            .batch(images, &self.device)
            .map_err(CaptionError::Input)
    }

    /// The vision encoder's `last_hidden_state` `[batch, 1 + patches, width]`.
    pub fn encode_images(&self, pixel_values: &Tensor) -> Result<Tensor, CaptionError> {
        Ok(self.vision.forward(pixel_values)?)
    }

    /// One greedy caption per image (the batch is processed together), stopping at `[SEP]`
    /// or after `max_new_tokens` new tokens; `prompt` (e.g. `"a painting of"`) starts every
    /// caption and is stripped from the text.
    pub fn caption(
        &self,
        images: &[RgbImage],
        prompt: Option<&str>,
        max_new_tokens: usize,
    ) -> Result<Vec<Caption>, CaptionError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pixels = self.pixel_values(images)?;
        self.caption_pixels(&pixels, prompt, max_new_tokens)
    }

    /// [`Self::caption`] for already preprocessed `pixel_values`.
    pub fn caption_pixels(
        &self,
        pixel_values: &Tensor,
        prompt: Option<&str>,
        max_new_tokens: usize,
    ) -> Result<Vec<Caption>, CaptionError> {
        let (prefix, out) = self.generate(pixel_values, prompt, max_new_tokens, false)?;
        out.tokens
            .into_iter()
            .map(|token_ids| {
                let text = self
                    .tokenizer
                    .caption_text(&prefix, &token_ids)
                    .map_err(CaptionError::Input)?;
                Ok(Caption { text, token_ids })
            })
            .collect()
    }

    /// Greedy decoding of `pixel_values`: the prefix and every caption's new tokens (and,
    /// with `keep_logits`, the logits of each step).
    pub fn generate(
        &self,
        pixel_values: &Tensor,
        prompt: Option<&str>,
        max_new_tokens: usize,
        keep_logits: bool,
    ) -> Result<(Vec<u32>, Greedy), CaptionError> {
        let prefix = self.prefix(prompt)?;
        let max_pos = self.config.text_config.max_position_embeddings;
        if prefix.len() + max_new_tokens > max_pos {
            return Err(CaptionError::Input(format!(
                "the prompt ({} tokens with [DEC]) plus max_new_tokens ({max_new_tokens}) exceed the decoder's {max_pos} positions",
                prefix.len()
            )));
        }
        let image_embeds = self.encode_images(pixel_values)?;
        let out = greedy(
            &self.decoder,
            &image_embeds,
            &prefix,
            max_new_tokens,
            self.config.text_config.sep_token_id,
            keep_logits,
        )?;
        Ok((prefix, out))
    }
}
