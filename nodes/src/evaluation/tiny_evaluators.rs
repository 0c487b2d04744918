//! `tiny_evaluators`: random-weight feature extractors made inside the pipeline (whole
//! node), so the demo evaluates its generations with no download.
//!
//! The Inception network has fixed widths, so it is full size (random, ~24 M parameters, f32);
//! CLIP and CSD are narrow (64 wide, 2 layers) but take the real input sizes (336 and 224
//! px), so every preprocessing step runs exactly as with the published weights. The numbers
//! they give are only as meaningful as random features are: the demo shows the machinery,
//! not a style score. Real pipelines name the published weights in `[models]` instead.

use std::collections::BTreeMap;
use std::path::Path;

use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::EVAL_MODELS;
use super::clip_vision::{ClipVision, ClipVisionConfig};
use super::csd::{Csd, CsdConfig};
use super::evaluate::bundled_path;
use super::inception::{random_weights, InceptionVariant};
use crate::diffusion::model_artifact::pack;
use crate::diffusion::ModelError;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinyEvaluatorsParams {
    /// Seed of the random weights.
    #[serde(default)]
    #[schemars(example = 0)]
    pub seed: u64,
}

/// A narrow CLIP vision tower at CMMD's input size.
pub fn tiny_clip_config() -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: 64,
        intermediate_size: 128,
        projection_dim: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_channels: 3,
        image_size: 336,
        patch_size: 14,
        hidden_act: "quick_gelu".into(),
        layer_norm_eps: 1e-5,
    }
}

/// A narrow CSD at its input size.
pub fn tiny_csd_config() -> CsdConfig {
    CsdConfig {
        image_size: 224,
        patch_size: 14,
        width: 64,
        layers: 2,
        mlp_width: 128,
        style_dim: 32,
    }
}

/// Write the three extractors into `dir` in the layout `evaluate` reads from its `models`
/// input.
pub fn write_tiny_evaluators(dir: &Path, seed: u64) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::bad(dir, e))?;
    let inception = bundled_path(dir, "inception");
    let w = random_weights(InceptionVariant::FidTf2015, seed)?;
    candle_core::safetensors::save(&w, &inception).map_err(|e| ModelError::bad(&inception, e))?;
    ClipVision::write_random(
        &bundled_path(dir, "clip"),
        &tiny_clip_config(),
        seed ^ 0xc11f,
    )?;
    Csd::write_random(&bundled_path(dir, "csd"), &tiny_csd_config(), seed ^ 0xc5d)?;
    Ok(())
}

pub struct TinyEvaluatorsKind;

impl NodeKind for TinyEvaluatorsKind {
    fn kind(&self) -> &'static str {
        "tiny_evaluators"
    }
    fn doc(&self) -> &'static str {
        "Random-weight feature extractors (Inception, a narrow CLIP, a narrow CSD) for `evaluate`'s `models` input, for demos and tests."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TinyEvaluatorsParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn build(&self, params: serde_json::Value, _: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        Ok(Box::new(TinyEvaluators(typed_params(params)?)))
    }
}

pub struct TinyEvaluators(TinyEvaluatorsParams);

impl Node for TinyEvaluators {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "models",
            ty: EVAL_MODELS,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("serialises")
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Whole(self)
    }
}

impl Whole for TinyEvaluators {
    fn run(&self, cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let tmp = tempfile::tempdir()
            .map_err(|e| NodeError::msg(format!("cannot create a temporary folder: {e}")))?;
        let dir = tmp.path().join("evaluators");
        (cx.status)("drawing random Inception, CLIP and CSD weights".into());
        write_tiny_evaluators(&dir, self.0.seed).map_err(|e| NodeError::msg(e.to_string()))?;
        let bytes = pack(&dir).map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(BTreeMap::from([("models".to_string(), bytes)]))
    }
}
