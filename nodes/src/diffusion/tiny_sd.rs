//! `tiny_sd`: a tiny random Stable Diffusion model, made inside the pipeline (whole node).
//!
//! The demo pipeline runs every stage on it, so the README's one command needs no download;
//! like any output it is cached, and its digest keys everything downstream.

use std::collections::BTreeMap;

use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model_artifact::{pack, SD_MODEL};
use super::tiny::{write_tiny, TinyVariant};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinySdParams {
    /// Seed of the random weights.
    #[serde(default)]
    #[schemars(example = 0)]
    pub seed: u64,
    /// `sd15` (PNDM, epsilon, convolution projections) or `sd2` (DDIM, v-prediction,
    /// linear projections).
    #[serde(default = "default_variant")]
    #[schemars(example = &"sd15")]
    pub variant: TinyVariant,
}

fn default_variant() -> TinyVariant {
    TinyVariant::Sd15
}

pub struct TinySdKind;

impl NodeKind for TinySdKind {
    fn kind(&self) -> &'static str {
        "tiny_sd"
    }
    fn doc(&self) -> &'static str {
        "A tiny random Stable Diffusion model in diffusers layout (64×64 images), for demos and tests."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TinySdParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn build(&self, params: serde_json::Value, _: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        Ok(Box::new(TinySd(typed_params(params)?)))
    }
}

pub struct TinySd(TinySdParams);

impl Node for TinySd {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "model",
            ty: SD_MODEL,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("serialises")
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Whole(self)
    }
}

impl Whole for TinySd {
    fn run(&self, _cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let tmp = tempfile::tempdir()
            .map_err(|e| NodeError::msg(format!("cannot create a temporary folder: {e}")))?;
        let dir = tmp.path().join("model");
        write_tiny(&dir, self.0.seed, self.0.variant).map_err(|e| NodeError::msg(e.to_string()))?;
        let bytes = pack(&dir).map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(BTreeMap::from([("model".to_string(), bytes)]))
    }
}
