//! Tiny random Stable Diffusion models in diffusers layout, made by nsync itself.
//!
//! Tests and the demo pipeline need a complete SD model but no download is possible, so
//! `nsync model init-tiny` (and the `tiny_sd` node) write one: the same configuration
//! shapes as the reference fixtures (`tools/make_sd_fixtures.py`), weights drawn from a seed
//! through the very loaders that read real checkpoints ([`Weights::random`]), so every
//! tensor name and shape is the one diffusers expects. The tokenizer is byte-level BPE
//! trained on a few hundred common and caption words, so captions tokenise to roughly as
//! many tokens as with the real CLIP vocabulary.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde_json::{json, Value};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::clip_text::{ClipTextConfig, ClipTextModel};
use super::unet::config::UNetConfig;
use super::unet::UNet;
use super::vae::{config::VaeConfig, AutoencoderKl};
use super::weights::Weights;
use super::ModelError;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TinyVariant {
    /// SD 1.x-like: convolution projections, quick-gelu text encoder, PNDM, epsilon.
    Sd15,
    /// SD 2.x-like: linear projections, gelu text encoder, DDIM, v-prediction, `!` padding.
    Sd2,
}

fn write_json(path: &Path, v: &Value) -> Result<(), ModelError> {
    let text = serde_json::to_string_pretty(v).expect("JSON serialises") + "\n";
    std::fs::write(path, text).map_err(|e| ModelError::bad(path, e))
}

fn save(path: &Path, w: Weights) -> Result<(), ModelError> {
    let tensors = w.into_tensors();
    candle_core::safetensors::save(&tensors, path).map_err(|e| ModelError::bad(path, e))
}

/// Words the tiny tokenizer keeps whole (the demo captions' words and common English), so
/// that a caption plus " in the style of <token>" fits in 77 tokens as with real CLIP.
const WORDS: &str = include_str!("tiny_words.txt");

/// The tiny vocabulary and merges: byte-level BPE learned on [`WORDS`], every byte's
/// character with and without `</w>`, and the two special tokens.
///
/// The merges are learned here, greedily (the most frequent adjacent pair, ties broken by
/// the pair's text), rather than with the `tokenizers` crate's trainer: that trainer numbers
/// symbols through a randomly seeded hash map, so its tie-breaks (and the vocabulary) change
/// from one process to the next, and a tiny model must be the same bytes for the same seed.
fn vocab_and_merges() -> Result<(BTreeMap<String, u32>, String), String> {
    const MERGES: usize = 1500;
    let mut words: Vec<Vec<String>> = WORDS
        .lines()
        .map(str::trim)
        .filter(|w| !w.is_empty() && w.is_ascii())
        .map(|w| {
            let mut sym: Vec<String> = w.chars().map(|c| c.to_string()).collect();
            let last = sym.pop().expect("non-empty");
            sym.push(format!("{last}</w>"));
            sym
        })
        .collect();
    let mut merges: Vec<(String, String)> = Vec::new();
    for _ in 0..MERGES {
        let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for w in &words {
            for p in w.windows(2) {
                *counts.entry((p[0].as_str(), p[1].as_str())).or_default() += 1;
            }
        }
        // Highest count; among equals the smallest pair (BTreeMap order) wins.
        let Some((pair, _)) =
            counts
                .iter()
                .fold(None::<(&(&str, &str), usize)>, |best, (p, &c)| match best {
                    Some((_, bc)) if bc >= c => best,
                    _ => Some((p, c)),
                })
        else {
            break;
        };
        let (a, b) = (pair.0.to_string(), pair.1.to_string());
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = format!("{a}{b}");
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push((a, b));
    }
    let mut chars: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    chars.sort();
    let mut v = BTreeMap::new();
    let tokens = chars
        .iter()
        .map(|c| c.to_string())
        .chain(chars.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|(a, b)| format!("{a}{b}")))
        .chain(["<|startoftext|>".to_string(), "<|endoftext|>".to_string()]);
    for t in tokens {
        let next = v.len() as u32;
        v.entry(t).or_insert(next);
    }
    let text = std::iter::once("#version: 0.2".to_string())
        .chain(merges.iter().map(|(a, b)| format!("{a} {b}")))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    Ok((v, text))
}

/// Write a complete tiny model into `dir` (created; must not hold a model already).
pub fn write_tiny(dir: &Path, seed: u64, variant: TinyVariant) -> Result<(), ModelError> {
    if dir.join("model_index.json").exists() {
        return Err(ModelError::bad(
            dir,
            "already holds a model (model_index.json); choose an empty folder",
        ));
    }
    let sd2 = variant == TinyVariant::Sd2;
    for sub in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| ModelError::bad(dir.join(sub), e))?;
    }
    // Tokenizer.
    let (vocab, merges_txt) = vocab_and_merges().map_err(|e| {
        ModelError::bad(
            dir.join("tokenizer"),
            format!("cannot build the tiny tokenizer: {e}"),
        )
    })?;
    let (bos, eos) = (vocab["<|startoftext|>"], vocab["<|endoftext|>"]);
    let pad_token = if sd2 { "!" } else { "<|endoftext|>" };
    let pad_id = vocab[pad_token];
    write_json(&dir.join("tokenizer/vocab.json"), &json!(vocab))?;
    std::fs::write(dir.join("tokenizer/merges.txt"), merges_txt)
        .map_err(|e| ModelError::bad(dir.join("tokenizer/merges.txt"), e))?;
    write_json(
        &dir.join("tokenizer/special_tokens_map.json"),
        &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad_token, "unk_token": "<|endoftext|>"}),
    )?;
    write_json(
        &dir.join("tokenizer/tokenizer_config.json"),
        &json!({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": true,
                "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad_token, "unk_token": "<|endoftext|>"}),
    )?;
    // Text encoder.
    let te = json!({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": vocab.len(),
        "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
        "max_position_embeddings": 77, "hidden_act": if sd2 { "gelu" } else { "quick_gelu" },
        "layer_norm_eps": 1e-5, "projection_dim": 32, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad_id,
        "initializer_factor": 1.0, "initializer_range": 0.02, "attention_dropout": 0.0, "dtype": "float32"
    });
    write_json(&dir.join("text_encoder/config.json"), &te)?;
    let cfg: ClipTextConfig = serde_json::from_value(te).expect("valid config");
    let w = Weights::random(seed ^ 0x7e57, "text_encoder/model.safetensors");
    ClipTextModel::from_weights(cfg, &w, &Device::Cpu)?;
    save(&dir.join("text_encoder/model.safetensors"), w)?;
    // UNet.
    let unet = json!({
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.42.1", "sample_size": 8,
        "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn", "cross_attention_dim": 32,
        "attention_head_dim": if sd2 { json!([2, 4]) } else { json!(8) }, "use_linear_projection": sd2,
        "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": true, "freq_shift": 0, "act_fn": "silu",
        "downsample_padding": 1, "center_input_sample": false, "transformer_layers_per_block": 1
    });
    write_json(&dir.join("unet/config.json"), &unet)?;
    let cfg: UNetConfig = serde_json::from_value(unet).expect("valid config");
    let w = Weights::random(seed ^ 0x0e7, "unet/diffusion_pytorch_model.safetensors");
    UNet::from_weights(cfg, &w)?;
    save(&dir.join("unet/diffusion_pytorch_model.safetensors"), w)?;
    // VAE.
    let vae = json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1", "in_channels": 3, "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4,
        "norm_num_groups": 32, "sample_size": 64, "scaling_factor": 0.18215
    });
    write_json(&dir.join("vae/config.json"), &vae)?;
    let cfg = VaeConfig::from_file(&dir.join("vae/config.json"))?;
    let w = Weights::random(seed ^ 0x7ae, "vae/diffusion_pytorch_model.safetensors");
    AutoencoderKl::from_weights(cfg, &w)?;
    save(&dir.join("vae/diffusion_pytorch_model.safetensors"), w)?;
    // Scheduler: SD 1.5's PNDM, or SD 2's DDIM with v-prediction.
    let common = json!({"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                        "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": false,
                        "clip_sample": false, "_diffusers_version": "0.42.1"});
    let mut sched = common.as_object().expect("object").clone();
    if sd2 {
        sched.insert("_class_name".into(), json!("DDIMScheduler"));
        sched.insert("prediction_type".into(), json!("v_prediction"));
    } else {
        sched.insert("_class_name".into(), json!("PNDMScheduler"));
        sched.insert("prediction_type".into(), json!("epsilon"));
        sched.insert("skip_prk_steps".into(), json!(true));
    }
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &Value::Object(sched),
    )?;
    let sched_class = if sd2 {
        "DDIMScheduler"
    } else {
        "PNDMScheduler"
    };
    write_json(
        &dir.join("model_index.json"),
        &json!({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
                "feature_extractor": [null, null], "requires_safety_checker": false, "safety_checker": [null, null],
                "image_encoder": [null, null],
                "scheduler": ["diffusers", sched_class], "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"]}),
    )?;
    Ok(())
}
