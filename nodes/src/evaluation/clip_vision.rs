//! CMMD's feature extractor: transformers' `CLIPVisionModelWithProjection`, whose output
//! (the class token → `post_layernorm` → `visual_projection`) is L2-normalised.
//!
//! The checkpoint CMMD uses is `openai/clip-vit-large-patch14-336` on the Hugging Face hub
//! (ViT-L/14 at 336 px, 768-d embeddings). It is a full `CLIPModel`; get its config and
//! weights once with
//! `huggingface-cli download openai/clip-vit-large-patch14-336 config.json model.safetensors --local-dir /models/clip-vit-large-patch14-336`
//! and point the evaluator at that folder. The text tower in the file (`text_model.…`,
//! `text_projection.weight`, `logit_scale`) is deliberately ignored; every vision tensor
//! must be present with its shape, and any other tensor is an error naming the file. A
//! folder written by `CLIPVisionModelWithProjection.save_pretrained` (a `CLIPVisionConfig`)
//! loads too.
//!
//! The network is [`super::vit`]'s tower with transformers' tensor names.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::vit::{
    l2_normalise, safetensors_shapes, Activation, BlockTensors, Dense, Vit, VitConfig, VitTensors,
};
use crate::diffusion::weights::{component_file, Weights};
use crate::diffusion::ModelError;

/// The fields of transformers' `CLIPVisionConfig` that shape the computation; defaults are
/// transformers' (those of `openai/clip-vit-base-patch32`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    /// Output width of `visual_projection`. When the `vision_config` of a full `CLIPConfig`
    /// lacks it, the top-level `projection_dim` is used.
    #[serde(default = "d512")]
    pub projection_dim: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d32")]
    pub patch_size: usize,
    /// `quick_gelu` or `gelu` (exact erf).
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
}

fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn d512() -> usize {
    512
}
fn d12() -> usize {
    12
}
fn d3() -> usize {
    3
}
fn d224() -> usize {
    224
}
fn d32() -> usize {
    32
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// The `vision_config` of `openai/clip-vit-large-patch14-336` (its `config.json`).
    pub fn vit_large_patch14_336() -> ClipVisionConfig {
        ClipVisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: 768,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 336,
            patch_size: 14,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }

    /// Read a `config.json`: a full `CLIPConfig` (its `vision_config`) or a `CLIPVisionConfig`.
    pub fn from_file(path: &Path) -> Result<ClipVisionConfig, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: e.to_string(),
        })?;
        let root: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::bad(path, format!("not JSON: {e}")))?;
        let mut vision = match root.get("vision_config") {
            Some(v) => v.clone(),
            None => root.clone(),
        };
        if let (Some(obj), Some(p)) = (vision.as_object_mut(), root.get("projection_dim")) {
            obj.entry("projection_dim").or_insert_with(|| p.clone());
        }
        // transformers 5 allows `[h, w]` sizes; only square ones are CLIP's.
        for key in ["image_size", "patch_size"] {
            if let Some(serde_json::Value::Array(a)) = vision.get(key) {
                if a.len() != 2 || a[0] != a[1] {
                    return Err(ModelError::bad(
                        path,
                        format!("`{key}` {a:?} is not square"),
                    ));
                }
                let side = a[0].clone();
                vision[key] = side;
            }
        }
        let cfg: ClipVisionConfig = serde_json::from_value(vision)
            .map_err(|e| ModelError::bad(path, format!("not a CLIP vision config: {e}")))?;
        cfg.vit().map_err(|e| ModelError::bad(path, e))?;
        Ok(cfg)
    }

    fn vit(&self) -> Result<VitConfig, String> {
        let act = match self.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(format!(
                    "unsupported hidden_act `{other}` (quick_gelu or gelu)"
                ))
            }
        };
        if self.num_channels != 3 {
            return Err(format!(
                "num_channels {} (RGB images need 3)",
                self.num_channels
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err("hidden_size is not a multiple of num_attention_heads".into());
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err("image_size is not a multiple of patch_size".into());
        }
        Ok(VitConfig {
            image_size: self.image_size,
            patch_size: self.patch_size,
            width: self.hidden_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            mlp_width: self.intermediate_size,
            eps: self.layer_norm_eps,
            act,
        })
    }
}

/// `CLIPVisionModelWithProjection` → L2-normalised image embeddings.
pub struct ClipVision {
    config: ClipVisionConfig,
    vit: Vit,
    projection: Dense,
}

/// Tensors of a full `CLIPModel` file that the image tower deliberately leaves unused.
fn is_text_tower(name: &str) -> bool {
    name.starts_with("text_model.") || name.starts_with("text_projection.") || name == "logit_scale"
}

impl ClipVision {
    /// Load a transformers folder: `config.json` and `model.safetensors` (or
    /// `model.fp16.safetensors`), e.g. `openai/clip-vit-large-patch14-336`.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<ClipVision, ModelError> {
        let config = ClipVisionConfig::from_file(&dir.join("config.json"))?;
        let file = component_file(dir, "model")?;
        // Names only (the header), to tell the text tower apart before loading.
        let ignored: Vec<String> = safetensors_shapes(&file)?
            .into_keys()
            .filter(|k| is_text_tower(k) || k.ends_with("embeddings.position_ids"))
            .collect();
        let weights = Weights::load(&file, DType::F32, device)?;
        let model = Self::from_weights(config, &weights)?;
        let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
        weights.finish(&ignored)?;
        Ok(model)
    }

    /// Build from open weights (a file, or [`Weights::random`]); the caller checks for
    /// unused tensors with [`Weights::finish`].
    pub fn from_weights(config: ClipVisionConfig, w: &Weights) -> Result<ClipVision, ModelError> {
        let vit_cfg = config.vit().map_err(|e| ModelError::bad(w.path(), e))?;
        let (d, m, p) = (
            config.hidden_size,
            config.intermediate_size,
            config.patch_size,
        );
        let tokens = vit_cfg.tokens();
        let get = |name: &str, shape: &[usize]| w.get(&format!("vision_model.{name}"), shape);
        let pair = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                get(&format!("{name}.weight"), &[out, inp])?,
                get(&format!("{name}.bias"), &[out])?,
            ))
        };
        let norm = |name: &str| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                get(&format!("{name}.weight"), &[d])?,
                get(&format!("{name}.bias"), &[d])?,
            ))
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let n = format!("encoder.layers.{l}");
            blocks.push(BlockTensors {
                ln1: norm(&format!("{n}.layer_norm1"))?,
                q: pair(&format!("{n}.self_attn.q_proj"), d, d)?,
                k: pair(&format!("{n}.self_attn.k_proj"), d, d)?,
                v: pair(&format!("{n}.self_attn.v_proj"), d, d)?,
                out: pair(&format!("{n}.self_attn.out_proj"), d, d)?,
                ln2: norm(&format!("{n}.layer_norm2"))?,
                fc1: pair(&format!("{n}.mlp.fc1"), m, d)?,
                fc2: pair(&format!("{n}.mlp.fc2"), d, m)?,
            });
        }
        let tensors = VitTensors {
            patch: get("embeddings.patch_embedding.weight", &[d, 3, p, p])?,
            class: get("embeddings.class_embedding", &[d])?,
            positions: get("embeddings.position_embedding.weight", &[tokens, d])?,
            ln_pre: norm("pre_layrnorm")?,
            blocks,
            ln_post: norm("post_layernorm")?,
        };
        let proj = w.get("visual_projection.weight", &[config.projection_dim, d])?;
        let bad = |e: candle_core::Error| ModelError::bad(w.path(), e);
        Ok(ClipVision {
            vit: Vit::new(vit_cfg, tensors).map_err(bad)?,
            projection: Dense::from_torch(&proj, None).map_err(bad)?,
            config,
        })
    }

    /// A model with random weights drawn from `seed` (benchmarks, tiny test models), on
    /// the CPU.
    pub fn random_weights(config: ClipVisionConfig, seed: u64) -> Result<ClipVision, ModelError> {
        Self::from_weights(
            config,
            &Weights::random(seed, "<random CLIP vision weights>"),
        )
    }

    /// Write a random-weight model folder (`config.json` as a `CLIPVisionConfig`,
    /// `model.safetensors`) that [`Self::from_dir`] and transformers both load.
    pub fn write_random(
        dir: &Path,
        config: &ClipVisionConfig,
        seed: u64,
    ) -> Result<(), ModelError> {
        let w = Weights::random(seed, "<random CLIP vision weights>");
        Self::from_weights(config.clone(), &w)?;
        let tensors: HashMap<String, Tensor> = w.into_tensors();
        std::fs::create_dir_all(dir).map_err(|e| ModelError::bad(dir, e))?;
        let mut json = serde_json::to_value(config).map_err(|e| ModelError::bad(dir, e))?;
        json["model_type"] = "clip_vision_model".into();
        json["architectures"] = serde_json::json!(["CLIPVisionModelWithProjection"]);
        let cfg_path = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&json).map_err(|e| ModelError::bad(&cfg_path, e))?;
        std::fs::write(&cfg_path, text + "\n").map_err(|e| ModelError::bad(&cfg_path, e))?;
        let file = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &file).map_err(|e| ModelError::bad(&file, e))
    }

    /// L2-normalised embeddings `[n, projection_dim]` of images `[n, 3, size, size]`,
    /// already normalised with the CLIP mean and std.
    pub fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let cls = self.vit.forward(x)?;
        l2_normalise(&self.projection.forward(&cls)?)
    }

    /// The input side length the model takes (336 for CMMD's checkpoint).
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// The embedding width (`projection_dim`).
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }
}
