//! `sd_sample`: one image per prompt with Stable Diffusion (per-item node) — the negative
//! images of NSYNC ("<caption> in the style of painting") and the evaluation images.
//!
//! Each item's initial noise and every stochastic step derive from the pipeline seed and
//! the item's id, so an item gives the same bytes whatever batch it is computed in, and
//! adding prompts never changes the others. The model is loaded once per run, only when
//! an image is missing; each image is denoised on its own, so `batch_size` (how many images
//! are committed together) never changes a byte.
//!
//! Optional inputs add what training learned: `embedding` (learned tokens) and `lora` (LoRA
//! weights for the UNet, [`super::lora`]). `init_latents` replaces the seeded initial noise by
//! given latents per item ([`super::init_latents`]), to reproduce another implementation's
//! images; `dtype` runs the text encoder and UNet in half precision ([`super::precision`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::Device;
use nsync_engine::artifact::TEXTS;
use nsync_engine::node::{
    join_items, BuildCx, Exec, InputSpec, ItemCx, ItemOutcome, ItemWorker, ItemsCx, Node,
    NodeError, NodeKind, OutputSpec, PerItem, WorkItem,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::init_latents::InitLatents;
use super::lora::Lora;
use super::model_source::{key_params_without, ModelSource};
use super::pipeline::StableDiffusion;
use super::precision::SampleDtype;
use super::sampler::{decode, denoise, initial_latents, latent_shape, to_rgb8, SampleSettings};
use super::schedulers::SchedulerKind;
use crate::policy::resolve;
use crate::sources::decode::encode_png;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SdSampleParams {
    /// A `[models]` entry: a diffusers-layout folder. Or connect a `model` input instead.
    #[serde(default)]
    #[schemars(example = &"sd15")]
    pub model: Option<String>,
    /// `ddim`, `pndm`, `ddpm` or `euler_a`; default: the model's `scheduler_config.json`.
    #[serde(default)]
    #[schemars(example = &"ddim")]
    pub scheduler: Option<SchedulerKind>,
    /// Denoising steps.
    #[serde(default = "default_steps")]
    #[schemars(example = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 disables guidance).
    #[serde(default = "default_guidance")]
    #[schemars(example = 7.5)]
    pub guidance: f64,
    /// Image width in pixels (a multiple of 8); default: the model's native size.
    #[serde(default)]
    #[schemars(example = 512)]
    pub width: Option<usize>,
    /// Image height in pixels (a multiple of 8); default: the model's native size.
    #[serde(default)]
    #[schemars(example = 512)]
    pub height: Option<usize>,
    /// Negative prompt for every item, when no `negative_prompts` input is connected.
    #[serde(default)]
    #[schemars(example = &"blurry, low quality")]
    pub negative_prompt: String,
    /// DDIM's eta (0: deterministic).
    #[serde(default)]
    #[schemars(example = 0.0)]
    pub eta: f64,
    /// Images committed to the cache together (each image is computed on its own, so
    /// results never depend on it).
    #[serde(default = "default_batch")]
    #[schemars(example = 4)]
    pub batch_size: usize,
    /// Precision of the text encoder and the UNet: `f32` (default), `f16` or `bf16`; the VAE
    /// always decodes in f32. Half precision halves the weights' memory and is meant for GPU
    /// builds: on the CPU candle computes it in f32 internally, so it is no faster than
    /// `f32` there, and less precise (SD 1.5 UNet output off by up to 0.3 % in f16 and 2 %
    /// in bf16). Images then differ from the f32 ones (the key holds the dtype).
    #[serde(default, skip_serializing_if = "SampleDtype::is_f32")]
    #[schemars(example = &"f16")]
    pub dtype: SampleDtype,
    /// A safetensors file (relative to the pipeline file) holding each item's initial
    /// latents: one tensor per item id, shaped `[1, 4, height/8, width/8]`, used in place of
    /// the seeded noise exactly as diffusers' `latents=` (and `nsync sample --init-latents`),
    /// so an image can be reproduced across implementations. Every item needs its tensor (a
    /// missing one is an error); other tensors are ignored. Each item's key holds its own
    /// tensor's digest, not the path. Stochastic schedulers still draw their step noise
    /// from the item's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"reference/latents.safetensors")]
    pub init_latents: Option<String>,
}

fn default_steps() -> usize {
    50
}
fn default_guidance() -> f64 {
    7.5
}
fn default_batch() -> usize {
    1
}

pub struct SdSampleKind;

impl NodeKind for SdSampleKind {
    fn kind(&self) -> &'static str {
        "sd_sample"
    }
    fn doc(&self) -> &'static str {
        "Generates one image per prompt with Stable Diffusion (classifier-free guidance with negative prompts), seeded per item."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(SdSampleParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec {
                name: "prompts".into(),
                ty: TEXTS,
                required: true,
                doc: "One prompt per item.".into(),
            },
            InputSpec {
                name: "negative_prompts".into(),
                ty: TEXTS,
                required: false,
                doc: "One negative prompt per item (else `negative_prompt`).".into(),
            },
            ModelSource::input_spec(),
            InputSpec {
                name: "embedding".into(),
                ty: crate::training::artifacts::EMBEDDING,
                required: false,
                doc: "Learned token embeddings (from `contrastive_train`) to use in the prompts."
                    .into(),
            },
            InputSpec {
                name: "lora".into(),
                ty: crate::training::artifacts::LORA,
                required: false,
                doc: "LoRA weights for the UNet (from `contrastive_train` with `adapter = \"lora\"`, or any diffusers LoRA of the UNet's attention layers).".into(),
            },
        ]
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: SdSampleParams = typed_params(params)?;
        let source = ModelSource::resolve(&p.model, cx, "sd_sample")?;
        if p.steps == 0 {
            return Err(BuildError::at(&["steps"], "`steps` must be at least 1"));
        }
        for (k, v) in [("width", p.width), ("height", p.height)] {
            if v.is_some_and(|v| v == 0 || !v.is_multiple_of(8)) {
                return Err(BuildError::at(
                    &[k],
                    format!("`{k}` must be a positive multiple of 8"),
                ));
            }
        }
        let negatives = cx.connected_inputs.iter().any(|i| i == "negative_prompts");
        let init_latents = match &p.init_latents {
            Some(f) if f.trim().is_empty() => return Err(BuildError::at(
                &["init_latents"],
                "`init_latents` is empty",
            )
            .help(
                "name a safetensors file with one tensor per item id, e.g. \"latents.safetensors\"",
            )),
            Some(f) => Some(resolve(cx.pipeline_dir, f)),
            None => None,
        };
        Ok(Box::new(SdSample {
            p,
            source,
            negatives,
            init_latents,
        }))
    }
}

pub struct SdSample {
    p: SdSampleParams,
    source: ModelSource,
    negatives: bool,
    /// The resolved `init_latents` file.
    init_latents: Option<PathBuf>,
}

impl Node for SdSample {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        SdSampleKind.declared_inputs()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "images",
            ty: nsync_engine::artifact::IMAGES,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        // Batching never changes an image; the model enters the key by its digest, initial
        // latents by each item's tensor digest (`PerItem::items`), never by their paths.
        key_params_without(&self.p, &["batch_size", "model", "init_latents"])
    }
    fn models(&self) -> Vec<String> {
        self.p.model.iter().cloned().collect()
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn heavy(&self) -> bool {
        true
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}

impl PerItem for SdSample {
    fn batch_size(&self) -> usize {
        self.p.batch_size.max(1)
    }

    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        let mut items = join_items(cx.inputs)?;
        if let Some(path) = &self.init_latents {
            InitLatents::read(path)?.add_to_keys(&mut items)?;
        }
        Ok(items)
    }

    fn open<'a>(&'a self, cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        let (mut sd, _tmp) = self
            .source
            .load_as(cx.store, cx.inputs, self.p.dtype.dtype())?;
        if let Some(art) = cx.inputs.get("embedding") {
            let file = tempfile::Builder::new()
                .suffix(".safetensors")
                .tempfile()
                .map_err(|e| NodeError::msg(e.to_string()))?;
            std::fs::write(file.path(), cx.store.get_blob(&art.digest())?)
                .map_err(|e| NodeError::msg(e.to_string()))?;
            sd.load_embeddings(file.path())
                .map_err(|e| NodeError::msg(format!("learned embedding: {e}")))?;
        }
        if let Some(art) = cx.inputs.get("lora") {
            let file = tempfile::Builder::new()
                .suffix(".safetensors")
                .tempfile()
                .map_err(|e| NodeError::msg(e.to_string()))?;
            std::fs::write(file.path(), cx.store.get_blob(&art.digest())?)
                .map_err(|e| NodeError::msg(e.to_string()))?;
            let lora = Lora::load(file.path(), sd.unet.dtype(), &sd.device)
                .map_err(|e| NodeError::msg(format!("LoRA weights: {e}")))?;
            sd.unet
                .set_lora(Some(lora))
                .map_err(|e| NodeError::msg(format!("LoRA weights: {e}")))?;
        }
        let f = sd.vae_scale();
        let native = sd.unet.config.sample_size.map_or(512, |s| s * f);
        let settings = SampleSettings {
            scheduler: self.p.scheduler,
            steps: self.p.steps,
            guidance: self.p.guidance,
            width: self.p.width.unwrap_or(native),
            height: self.p.height.unwrap_or(native),
            eta: self.p.eta,
        };
        let init_latents = match &self.init_latents {
            Some(path) => Some(InitLatents::read(path)?),
            None => None,
        };
        Ok(Box::new(Sampler {
            node: self,
            sd,
            settings,
            init_latents,
            _tmp,
        }))
    }
}

struct Sampler<'a> {
    node: &'a SdSample,
    sd: StableDiffusion,
    settings: SampleSettings,
    init_latents: Option<InitLatents>,
    _tmp: Option<tempfile::TempDir>,
}

impl Sampler<'_> {
    /// One image. Items are denoised one at a time (guidance still batches negative and
    /// positive): batched matrix products can differ in the last bit with the batch's
    /// size, and an item's bytes must not depend on its neighbours.
    fn one(
        &self,
        w: &WorkItem,
        cx: &ItemCx,
        done: usize,
        total: usize,
    ) -> Result<Vec<u8>, NodeError> {
        let text = |port: &str| -> Result<String, NodeError> {
            String::from_utf8(cx.read(port, &w.id)?)
                .map_err(|_| NodeError::msg(format!("input `{port}` of `{}` is not UTF-8", w.id)))
        };
        let prompt = text("prompts")?;
        let negative = if self.node.negatives {
            text("negative_prompts")?
        } else {
            self.node.p.negative_prompt.clone()
        };
        let seed = cx.item_seed(&w.id);
        let latents = match &self.init_latents {
            Some(file) => {
                let shape = latent_shape(&self.sd, &self.settings).map_err(err)?;
                file.get(w, &shape, &self.sd.device)?
            }
            None => initial_latents(&self.sd, &self.settings, seed).map_err(err)?,
        };
        let pe = self.sd.encode_prompts(&[prompt.as_str()]).map_err(err)?;
        let ne = self.sd.encode_prompts(&[negative.as_str()]).map_err(err)?;
        let out = denoise(
            &self.sd,
            &self.settings,
            &pe,
            &ne,
            &latents,
            &[seed],
            &mut |i, steps| (cx.status)(format!("image {}/{total}, step {i}/{steps}", done + 1)),
        )
        .map_err(err)?;
        let images = decode(&self.sd, &out).map_err(err)?;
        let img = images.get(0).map_err(|e| err(e.into()))?;
        Ok(encode_png(&to_rgb8(&img).map_err(err)?))
    }
}

fn err(e: super::SdError) -> NodeError {
    NodeError::msg(e.to_string())
}

impl ItemWorker for Sampler<'_> {
    fn process(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Vec<Result<ItemOutcome, NodeError>> {
        batch
            .iter()
            .enumerate()
            .map(|(k, w)| {
                self.one(w, cx, k, batch.len())
                    .map(|png| ItemOutcome::Done(BTreeMap::from([("images".to_string(), png)])))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn key(params: serde_json::Value) -> serde_json::Value {
        // No [models]: the model comes from an input.
        let models = Default::default();
        let inputs = ["prompts".to_string(), "model".to_string()];
        let cx = BuildCx {
            pipeline_dir: Path::new("/p"),
            connected_inputs: &inputs,
            models: &models,
        };
        SdSampleKind
            .build(params, &cx)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .key_params()
    }

    /// Unset, `dtype` and `init_latents` leave the key exactly as before they existed (the
    /// demo's cached images keep their keys); `dtype = "f32"` is the default; an
    /// `init_latents` path never enters the key (each item's tensor digest does).
    #[test]
    fn new_parameters_stay_out_of_the_key_unless_they_change_images() {
        let before = json!({
            "scheduler": null, "steps": 10, "guidance": 7.5, "width": null, "height": null,
            "negative_prompt": "", "eta": 0.0
        });
        assert_eq!(key(json!({"steps": 10, "batch_size": 4})), before);
        assert_eq!(key(json!({"steps": 10, "dtype": "f32"})), before);
        assert_eq!(
            key(json!({"steps": 10, "init_latents": "a/latents.safetensors"})),
            before
        );
        let mut half = before.clone();
        half["dtype"] = json!("f16");
        assert_eq!(key(json!({"steps": 10, "dtype": "f16"})), half);
    }
}
