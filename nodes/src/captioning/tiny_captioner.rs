//! `tiny_captioner`: a tiny random BLIP captioner, made inside the pipeline (whole node).
//!
//! The demo pipeline captions its images with it, so the README's one command needs no
//! download. Its captions are random words; like any output the model is cached, and its
//! digest keys every caption made with it.

use std::collections::BTreeMap;

use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::caption_model::CAPTION_MODEL;
use super::tiny_blip::write_tiny_blip;
use crate::diffusion::model_artifact::pack;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinyCaptionerParams {
    /// Seed of the random weights.
    #[serde(default)]
    #[schemars(example = 0)]
    pub seed: u64,
}

pub struct TinyCaptionerKind;

impl NodeKind for TinyCaptionerKind {
    fn kind(&self) -> &'static str {
        "tiny_captioner"
    }
    fn doc(&self) -> &'static str {
        "A tiny random BLIP captioner (Hugging Face layout), for demos and tests; feeds the `model` input of `caption`."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TinyCaptionerParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn build(&self, params: serde_json::Value, _: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        Ok(Box::new(TinyCaptioner(typed_params(params)?)))
    }
}

pub struct TinyCaptioner(TinyCaptionerParams);

impl Node for TinyCaptioner {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "model",
            ty: CAPTION_MODEL,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("serialises")
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Whole(self)
    }
}

impl Whole for TinyCaptioner {
    fn run(&self, _cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let tmp = tempfile::tempdir()
            .map_err(|e| NodeError::msg(format!("cannot create a temporary folder: {e}")))?;
        let dir = tmp.path().join("model");
        write_tiny_blip(&dir, self.0.seed).map_err(|e| NodeError::msg(e.to_string()))?;
        let bytes = pack(&dir).map_err(|e| NodeError::msg(e.to_string()))?;
        Ok(BTreeMap::from([("model".to_string(), bytes)]))
    }
}
