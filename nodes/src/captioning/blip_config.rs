//! BLIP's configuration, read from a Hugging Face `config.json`.
//!
//! The fields of transformers' `BlipConfig`, `BlipTextConfig` and `BlipVisionConfig` that
//! shape the computation, with transformers' defaults for absent ones (the hub configs of
//! 2022 omit few; transformers 5 writes them all). As in transformers, the text decoder's
//! cross-attention width (`encoder_hidden_size`) is always the vision hidden size.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diffusion::ModelError;

/// A feed-forward activation named by `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: exact, with erf (BLIP's).
    Gelu,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`: the tanh approximation.
    GeluTanh,
    QuickGelu,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Activation> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    pub fn forward(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::Gelu => super::fast_ops::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Relu => x.relu(),
        }
    }
}

/// `image_size` / `patch_size`: one number, or `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Size2 {
    Square(usize),
    Rect([usize; 2]),
}

impl Size2 {
    pub fn hw(self) -> (usize, usize) {
        match self {
            Size2::Square(n) => (n, n),
            Size2::Rect([h, w]) => (h, w),
        }
    }
}

/// transformers' `BlipVisionConfig` (defaults as in transformers 5).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BlipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: Size2,
    pub patch_size: Size2,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for BlipVisionConfig {
    fn default() -> Self {
        BlipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: Size2::Square(384),
            patch_size: Size2::Square(16),
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl BlipVisionConfig {
    /// `(height, width)` of the input image.
    pub fn image_hw(&self) -> (usize, usize) {
        self.image_size.hw()
    }

    /// The patch grid `(rows, columns)`.
    pub fn grid(&self) -> (usize, usize) {
        let (h, w) = self.image_size.hw();
        let (ph, pw) = self.patch_size.hw();
        (h / ph, w / pw)
    }

    /// Tokens the encoder outputs per image: the class token and one per patch.
    pub fn num_positions(&self) -> usize {
        let (gh, gw) = self.grid();
        gh * gw + 1
    }
}

/// transformers' `BlipTextConfig` (defaults as in transformers 5).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BlipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    /// `[DEC]`: the first token of every caption.
    pub bos_token_id: u32,
    /// `[SEP]`: generation stops after it.
    pub sep_token_id: u32,
    pub pad_token_id: u32,
    /// Not used by captioning (the hub configs say 2, an unused BERT token).
    pub eos_token_id: u32,
}

impl Default for BlipTextConfig {
    fn default() -> Self {
        BlipTextConfig {
            vocab_size: 30524,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            bos_token_id: 30522,
            sep_token_id: 102,
            pad_token_id: 0,
            eos_token_id: 2,
        }
    }
}

/// transformers' `BlipConfig`: the vision encoder, the text decoder and the weight tying.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BlipConfig {
    pub text_config: BlipTextConfig,
    pub vision_config: BlipVisionConfig,
    /// The LM head reuses the word embeddings (and `cls.predictions.bias`); the default.
    pub tie_word_embeddings: bool,
}

impl Default for BlipConfig {
    fn default() -> Self {
        BlipConfig {
            text_config: BlipTextConfig::default(),
            vision_config: BlipVisionConfig::default(),
            tie_word_embeddings: true,
        }
    }
}

impl BlipConfig {
    /// Read a `config.json`.
    pub fn from_file(path: &Path) -> Result<BlipConfig, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: format!("a BLIP model folder needs config.json ({e})"),
        })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::bad(path, format!("not valid JSON: {e}")))?;
        match v.get("model_type").and_then(|t| t.as_str()) {
            Some("blip") | None => {}
            Some(other) => {
                return Err(ModelError::bad(
                    path,
                    format!(
                        "model_type is `{other}`, expected `blip` (BlipForConditionalGeneration)"
                    ),
                ))
            }
        }
        let cfg: BlipConfig = serde_json::from_value(v)
            .map_err(|e| ModelError::bad(path, format!("not a BlipConfig: {e}")))?;
        cfg.validate().map_err(|e| ModelError::bad(path, e))?;
        Ok(cfg)
    }

    /// Shape checks that would otherwise fail deep inside a forward pass.
    pub fn validate(&self) -> Result<(), String> {
        let (v, t) = (&self.vision_config, &self.text_config);
        for (what, act) in [("vision", &v.hidden_act), ("text", &t.hidden_act)] {
            if Activation::parse(act).is_none() {
                return Err(format!("{what} hidden_act `{act}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu)"));
            }
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err("vision hidden_size is not a multiple of num_attention_heads".into());
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err("text hidden_size is not a multiple of num_attention_heads".into());
        }
        let (h, w) = v.image_size.hw();
        let (ph, pw) = v.patch_size.hw();
        if ph == 0 || pw == 0 || h % ph != 0 || w % pw != 0 {
            return Err(format!(
                "vision image_size {h}×{w} is not a whole number of {ph}×{pw} patches"
            ));
        }
        for (name, id) in [
            ("bos_token_id", t.bos_token_id),
            ("sep_token_id", t.sep_token_id),
            ("pad_token_id", t.pad_token_id),
        ] {
            if id as usize >= t.vocab_size {
                return Err(format!(
                    "text {name} {id} is outside the vocabulary ({})",
                    t.vocab_size
                ));
            }
        }
        Ok(())
    }

    /// `Salesforce/blip-image-captioning-large`: ViT-L/16 at 384 px (24 layers, 1024 wide,
    /// 16 heads) and the 12-layer BERT-base decoder (768 wide, 12 heads) over the 30524-token
    /// `bert-base-uncased` + `[DEC]`, `[ENC]` vocabulary; the values of the hub `config.json`.
    pub fn large() -> BlipConfig {
        BlipConfig {
            text_config: BlipTextConfig {
                num_attention_heads: 12,
                ..BlipTextConfig::default()
            },
            vision_config: BlipVisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                ..BlipVisionConfig::default()
            },
            tie_word_embeddings: true,
        }
    }

    /// `Salesforce/blip-image-captioning-base`: ViT-B/16 at 384 px and the same decoder.
    pub fn base() -> BlipConfig {
        BlipConfig {
            text_config: BlipTextConfig {
                num_attention_heads: 12,
                ..BlipTextConfig::default()
            },
            vision_config: BlipVisionConfig::default(),
            tie_word_embeddings: true,
        }
    }
}
