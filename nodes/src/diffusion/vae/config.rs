//! The VAE's `config.json` (diffusers `AutoencoderKL`), read and checked before any weight.
//!
//! Only the fields that shape the computation are read; defaults are diffusers' own, so a
//! config saved by an older diffusers (which omits newer keys) means what it meant there.
//! `force_upcast`, `sample_size` (tiling) and `latents_mean`/`latents_std` are ignored:
//! they steer the pipeline, not the model. Block types other than the plain
//! `DownEncoderBlock2D`/`UpDecoderBlock2D` of every Stable Diffusion VAE are refused with
//! the config file's name, rather than loaded into the wrong architecture.

use std::path::Path;

use serde::Deserialize;

use crate::diffusion::ModelError;

/// The fields of diffusers' `AutoencoderKL` config that this implementation reads.
#[derive(Clone, Debug, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "default_act")]
    pub act_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latents are `(z - shift_factor) · scaling_factor` in the diffusion model's space.
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn default_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn default_channels() -> Vec<usize> {
    vec![64]
}
fn default_act() -> String {
    "silu".into()
}
fn default_scaling() -> f64 {
    0.18215
}

impl VaeConfig {
    /// Read and check `path` (a component's `config.json`).
    pub fn from_file(path: &Path) -> Result<VaeConfig, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::MissingFile {
            path: path.to_path_buf(),
            hint: e.to_string(),
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::bad(path, format!("not JSON: {e}")))?;
        if let Some(class) = value.get("_class_name").and_then(|c| c.as_str()) {
            if class != "AutoencoderKL" {
                return Err(ModelError::bad(
                    path,
                    format!("`_class_name` is `{class}`; only AutoencoderKL VAEs are supported"),
                ));
            }
        }
        let config: VaeConfig = serde_json::from_value(value)
            .map_err(|e| ModelError::bad(path, format!("not an AutoencoderKL config: {e}")))?;
        config.check().map_err(|m| ModelError::bad(path, m))?;
        Ok(config)
    }

    /// The structural checks; the message is prefixed with the file by the caller.
    pub fn check(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("`block_out_channels` is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "{} down and {} up block types for {n} block_out_channels (must be equal)",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        // diffusers' get_down_block/get_up_block strip a legacy `UNetRes` prefix.
        let plain = |t: &str| t.strip_prefix("UNetRes").unwrap_or(t).to_string();
        for t in &self.down_block_types {
            if plain(t) != "DownEncoderBlock2D" {
                return Err(format!(
                    "unsupported down block type `{t}` (only DownEncoderBlock2D)"
                ));
            }
        }
        for t in &self.up_block_types {
            if plain(t) != "UpDecoderBlock2D" {
                return Err(format!(
                    "unsupported up block type `{t}` (only UpDecoderBlock2D)"
                ));
            }
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!("unsupported act_fn `{}` (only silu)", self.act_fn));
        }
        if self.norm_num_groups == 0 {
            return Err("`norm_num_groups` is 0".into());
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "block_out_channels entry {c} does not split into {} groups (norm_num_groups)",
                self.norm_num_groups
            ));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return Err("`layers_per_block` and `latent_channels` must be positive".into());
        }
        Ok(())
    }

    /// How many times the encoder halves the resolution (3 for Stable Diffusion: ÷8).
    pub fn downsample_steps(&self) -> usize {
        self.block_out_channels.len() - 1
    }
}
