//! `UNet2DConditionModel`'s `config.json`: the fields that shape SD 1.x / 2.x UNets.
//! Anything this implementation does not support is rejected by name, never ignored.

use serde::Deserialize;

/// An int or a per-block list (diffusers accepts both for several fields).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i.min(v.len() - 1)],
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    /// Latent side the model was trained at (64 for SD 1.5 at 512 px).
    #[serde(default)]
    pub sample_size: Option<usize>,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub cross_attention_dim: usize,
    /// In diffusers this field holds the number of heads (a historical misnomer), unless
    /// `num_attention_heads` is set.
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default = "one")]
    pub transformer_layers_per_block: usize,
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub only_cross_attention: serde_json::Value,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default = "default_scale_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub dual_cross_attention: bool,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn groups() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn positional() -> String {
    "positional".into()
}
fn default_scale_shift() -> String {
    "default".into()
}
fn mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}

impl UNetConfig {
    /// Heads of the attention in down block `i` (up blocks use the reversed list).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .unwrap_or(&self.attention_head_dim)
            .get(i)
    }

    /// Reject what this implementation does not compute (instead of computing it wrong).
    pub fn check(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(
                "down_block_types, up_block_types and block_out_channels must have the same length"
                    .into(),
            );
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(format!(
                    "down block type `{t}` is not supported (CrossAttnDownBlock2D, DownBlock2D)"
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(format!(
                    "up block type `{t}` is not supported (CrossAttnUpBlock2D, UpBlock2D)"
                ));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => {
                return Err(format!(
                    "mid_block_type {other:?} is not supported (UNetMidBlock2DCrossAttn)"
                ))
            }
        }
        let unsupported = [
            (self.act_fn != "silu", "act_fn other than silu"),
            (self.upcast_attention, "upcast_attention"),
            (
                self.only_cross_attention.as_bool() == Some(true)
                    || self.only_cross_attention.is_array(),
                "only_cross_attention",
            ),
            (self.class_embed_type.is_some(), "class_embed_type"),
            (
                self.addition_embed_type.is_some(),
                "addition_embed_type (SDXL)",
            ),
            (
                self.resnet_time_scale_shift != "default",
                "resnet_time_scale_shift other than default",
            ),
            (
                self.time_embedding_type != "positional",
                "time_embedding_type other than positional",
            ),
            (
                self.conv_in_kernel != 3 || self.conv_out_kernel != 3,
                "conv kernels other than 3",
            ),
            (self.center_input_sample, "center_input_sample"),
            (self.dual_cross_attention, "dual_cross_attention"),
        ];
        for (bad, what) in unsupported {
            if bad {
                return Err(format!(
                    "{what} is not supported (Stable Diffusion 1.x/2.x UNets only)"
                ));
            }
        }
        Ok(())
    }
}
