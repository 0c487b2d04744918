//! Where a diffusion node's model comes from: a `[models]` entry named by the node's `model`
//! parameter (a local diffusers folder), or a `model` input fed by a node such as `tiny_sd`.
//! Exactly one of the two; checked when the pipeline is validated.

use std::path::PathBuf;

use candle_core::DType;
use nsync_cache::Store;
use nsync_engine::node::{BuildCx, InputSpec, Inputs, NodeError};
use nsync_engine::params::BuildError;

use super::model_artifact::{unpack, SD_MODEL};
use super::pipeline::StableDiffusion;
use super::sd_sample::device;

#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A local folder (resolved `[models]` path).
    Folder(PathBuf),
    /// The blob on the node's `model` input.
    Input,
}

impl ModelSource {
    /// The optional `model` input port every diffusion node declares.
    pub fn input_spec() -> InputSpec {
        InputSpec {
            name: "model".into(),
            ty: SD_MODEL,
            required: false,
            doc: "A model made in the pipeline (else `model`).".into(),
        }
    }

    /// From the node's `model` parameter and whether its `model` input is connected.
    pub fn resolve(
        param: &Option<String>,
        cx: &BuildCx,
        kind: &str,
    ) -> Result<ModelSource, BuildError> {
        let input = cx.connected_inputs.iter().any(|i| i == "model");
        match (param, input) {
            (Some(_), true) => Err(BuildError::at(&["model"], "give `model` or connect a `model` input, not both")),
            (None, false) => Err(BuildError::at(&[], format!("{kind} needs a model")).help(
                "set `model = \"<name>\"` naming a [models] entry, or connect `inputs.model` to a node such as `tiny_sd`",
            )),
            (Some(name), false) => Ok(ModelSource::Folder(cx.models.get(name).cloned().unwrap_or_default())),
            (None, true) => Ok(ModelSource::Input),
        }
    }

    /// Load the model (f32, on the default device). A model from an input is unpacked into
    /// a temporary folder, returned so that it lives as long as the model is used.
    pub fn load(
        &self,
        store: &Store,
        inputs: &Inputs,
    ) -> Result<(StableDiffusion, Option<tempfile::TempDir>), NodeError> {
        self.load_as(store, inputs, DType::F32)
    }

    /// [`Self::load`] with the text encoder and the UNet in `dtype` (the VAE stays f32).
    pub fn load_as(
        &self,
        store: &Store,
        inputs: &Inputs,
        dtype: DType,
    ) -> Result<(StableDiffusion, Option<tempfile::TempDir>), NodeError> {
        let device = device();
        let err = |e: super::SdError| NodeError::msg(e.to_string());
        match self {
            ModelSource::Folder(path) => Ok((
                StableDiffusion::from_dir(path, dtype, &device).map_err(err)?,
                None,
            )),
            ModelSource::Input => {
                let art = inputs
                    .get("model")
                    .ok_or_else(|| NodeError::msg("input `model` is missing"))?;
                let tmp = unpack(&store.get_blob(&art.digest())?)
                    .map_err(|e| NodeError::msg(e.to_string()))?;
                let sd = StableDiffusion::from_dir(tmp.path(), dtype, &device).map_err(err)?;
                Ok((sd, Some(tmp)))
            }
        }
    }
}

/// A node's parameters as key JSON, without the fields that never change its result.
pub fn key_params_without(params: &impl serde::Serialize, drop: &[&str]) -> serde_json::Value {
    let mut v = serde_json::to_value(params).expect("parameters serialise");
    if let Some(o) = v.as_object_mut() {
        for k in drop {
            o.remove(*k);
        }
    }
    v
}
