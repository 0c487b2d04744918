//! Tiny random BLIP captioners in the Hugging Face layout, made by nsync itself.
//!
//! The demo pipeline and tests need a captioner but no download is possible, so
//! `nsync model init-tiny` writes one with [`write_tiny_blip`]: the configuration of the
//! parity fixtures (`tools/make_blip_fixtures.py`: a 2-layer ViT at 96 px and a 2-layer
//! decoder), every tensor name and shape from the very loaders that read hub checkpoints,
//! values drawn from a seed, and a WordPiece vocabulary of a few hundred common and caption
//! words (the same list as the fixtures'), so random captions are made of real words.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::bert_tokenizer::BlipTokenizer;
use super::blip_captioner::BlipCaptioner;
use super::blip_config::BlipConfig;
use super::blip_preprocess::BlipPreprocessor;
use crate::diffusion::noise;
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// The words of the tiny vocabulary (shared with the tiny Stable Diffusion tokenizer).
const WORDS: &str = include_str!("../diffusion/tiny_words.txt");
const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const PUNCTUATION: &str = ".,'!?-():;\"/&";
/// Image side of the tiny model.
pub const TINY_IMAGE_SIZE: u32 = 96;
/// Added to the `[SEP]` logit bias, so that tiny random captions end at varied lengths.
const SEP_BOOST: f64 = 6.0;

/// The tiny WordPiece vocabulary: the BERT specials, punctuation, digits, letters, the same
/// as continuation pieces (`##a`), then the words (sorted); `[DEC]` and `[ENC]` follow as
/// added tokens. `tools/make_blip_fixtures.py` builds the same list.
pub fn tiny_vocab() -> Vec<String> {
    let chars: Vec<String> = ('0'..='9')
        .chain('a'..='z')
        .map(|c| c.to_string())
        .collect();
    let mut toks: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    toks.extend(PUNCTUATION.chars().map(|c| c.to_string()));
    toks.extend(chars.iter().cloned());
    toks.extend(chars.iter().map(|c| format!("##{c}")));
    let mut words: Vec<&str> = WORDS
        .lines()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    words.sort_unstable();
    words.dedup();
    for w in words {
        if !toks.iter().any(|t| t == w) {
            toks.push(w.to_string());
        }
    }
    toks
}

/// A vocabulary of `size` tokens laid out like `bert-base-uncased` (`[PAD]` 0, `[UNK]` 100,
/// `[CLS]` 101, `[SEP]` 102, `[MASK]` 103), holding the tiny vocabulary's other tokens from
/// id 1000 on and `[unusedN]` elsewhere: a stand-in for full-size random models.
pub fn bert_layout_vocab(size: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..size).map(|i| format!("[unused{i}]")).collect();
    for (id, t) in [0, 100, 101, 102, 103]
        .into_iter()
        .zip(SPECIALS.iter().copied())
    {
        if id < size {
            v[id] = t.to_string();
        }
    }
    let rest = tiny_vocab()
        .into_iter()
        .filter(|t| !SPECIALS.contains(&t.as_str()));
    for (slot, t) in v.iter_mut().skip(1000).zip(rest) {
        *slot = t;
    }
    v
}

/// `config.json` of the tiny model, as transformers 5 writes it.
pub fn tiny_config_json(vocab_size: usize, bos: usize) -> Value {
    json!({
        "architectures": ["BlipForConditionalGeneration"],
        "dtype": "float32",
        "image_text_hidden_size": 32,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "label_smoothing": 0.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "blip",
        "projection_dim": 32,
        "text_config": {
            "attention_probs_dropout_prob": 0.0, "bos_token_id": bos, "encoder_hidden_size": 48,
            "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 32,
            "initializer_range": 0.02, "intermediate_size": 64, "is_decoder": true, "label_smoothing": 0.0,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "blip_text_model",
            "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 0, "projection_dim": 768,
            "sep_token_id": 3, "tie_word_embeddings": true, "use_cache": true, "vocab_size": vocab_size
        },
        "tie_word_embeddings": true,
        "transformers_version": "5.24.0",
        "vision_config": {
            "attention_dropout": 0.0, "hidden_act": "gelu", "hidden_size": 48, "image_size": TINY_IMAGE_SIZE,
            "initializer_range": 1e-10, "intermediate_size": 96, "layer_norm_eps": 1e-05,
            "model_type": "blip_vision_model", "num_attention_heads": 4, "num_hidden_layers": 2,
            "patch_size": 16, "projection_dim": 512
        }
    })
}

fn write(path: &Path, text: &str) -> Result<(), ModelError> {
    std::fs::write(path, text).map_err(|e| ModelError::bad(path, e))
}

fn write_json(path: &Path, v: &Value) -> Result<(), ModelError> {
    write(
        path,
        &(serde_json::to_string_pretty(v).expect("JSON serialises") + "\n"),
    )
}

/// The value of tensor `name`: like the fixtures' weights (weights N(0, 1/fan_in), biases
/// N(0, 0.1²), norm scales 1 + N(0, 0.1²), word embeddings N(0, 1), other embeddings
/// N(0, 0.5²)), so that a caption depends on every tensor.
fn draw(seed: u64, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
    let n = noise::gaussian(noise::derive(seed, name, 1), shape, &Device::Cpu)?;
    let leaf = name.rsplit('.').next().unwrap_or("");
    let lower = name.to_lowercase();
    let is_norm = lower.contains("layernorm") || lower.contains("layer_norm");
    if is_norm && leaf == "weight" {
        n.affine(0.1, 1.0)
    } else if leaf == "bias" {
        n.affine(0.1, 0.0)
    } else if name.contains("word_embeddings") {
        Ok(n)
    } else if name.contains("embedding") && !name.contains("patch_embedding") {
        n.affine(0.5, 0.0)
    } else {
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        n.affine(1.0 / (fan_in as f64).sqrt(), 0.0)
    }
}

/// Write a tiny random BLIP captioner into `dir` (created; must not hold a model already):
/// `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
/// `preprocessor_config.json`, loadable by [`BlipCaptioner::from_dir`] and by transformers'
/// `BlipForConditionalGeneration` / `BlipProcessor`. The same seed gives the same bytes.
pub fn write_tiny_blip(dir: &Path, seed: u64) -> Result<(), ModelError> {
    if dir.join("model.safetensors").exists() {
        return Err(ModelError::bad(
            dir,
            "already holds a model (model.safetensors); choose an empty folder",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::bad(dir, e))?;
    let vocab = tiny_vocab();
    let tok_json = BlipTokenizer::bert_json(&vocab).map_err(|e| ModelError::bad(dir, e))?;
    let tokenizer =
        BlipTokenizer::from_json(&tok_json, false).map_err(|e| ModelError::bad(dir, e))?;
    let cfg_json = tiny_config_json(vocab.len() + 2, vocab.len());
    let config: BlipConfig = serde_json::from_value(cfg_json.clone()).expect("valid config");
    let sep = config.text_config.sep_token_id as usize;
    // The loaders name every tensor and its shape; the values are then drawn here.
    let w = Weights::random(seed, "model.safetensors");
    BlipCaptioner::from_weights(
        config,
        BlipPreprocessor::clip_style(TINY_IMAGE_SIZE),
        tokenizer,
        &w,
        &Device::Cpu,
    )?;
    let weights_path = dir.join("model.safetensors");
    let bad = |e: candle_core::Error| ModelError::bad(&weights_path, e);
    let mut tensors = w.into_tensors();
    for (name, t) in tensors.iter_mut() {
        let mut v = draw(seed, name, t.dims()).map_err(bad)?;
        if name == "text_decoder.cls.predictions.bias" {
            let mut host: Vec<f32> = v.to_vec1().map_err(bad)?;
            host[sep] += SEP_BOOST as f32;
            v = Tensor::new(host, &Device::Cpu).map_err(bad)?;
        }
        *t = v;
    }
    candle_core::safetensors::save(&tensors, &weights_path).map_err(bad)?;
    write_json(&dir.join("config.json"), &cfg_json)?;
    write(&dir.join("tokenizer.json"), &tok_json)?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "backend": "tokenizers", "bos_token": "[DEC]", "cls_token": "[CLS]", "do_lower_case": true,
            "extra_special_tokens": ["[ENC]"], "mask_token": "[MASK]", "model_max_length": 512,
            "pad_token": "[PAD]", "sep_token": "[SEP]", "strip_accents": null, "tokenize_chinese_chars": true,
            "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"
        }),
    )?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "BlipImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "BlipProcessor",
            "resample": 3, "rescale_factor": 0.00392156862745098,
            "size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
        }),
    )?;
    Ok(())
}
