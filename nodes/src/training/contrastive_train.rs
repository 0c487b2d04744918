//! `contrastive_train`: NSYNC (and its ablations and plain Textual Inversion) as a whole
//! node: positives with captions, their synthetic negatives and a model in; the learned
//! token embedding (diffusers' `learned_embeds.safetensors`) and training curves out.
//!
//! Defaults follow the paper (`ctoa`, Adam, lr 0.0008, batch 8, 512 px); `compat =
//! "reference_code"` reproduces the authors' released script instead (see
//! `shared/docs/method.md`). Training resumes from its last checkpoint after an
//! interruption and continues bit for bit; a checkpoint is partial work, never a result.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use nsync_engine::artifact::IMAGES;
use nsync_engine::artifact::TEXTS;
use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::{CURVES, EMBEDDING};
use super::dataset;
use super::lr_schedule::LrSchedule;
use super::optimizer::Adam;
use super::trainer::{TrainConfig, TrainState, Trainer};
use super::update_rule::{Compat, Variant};
use crate::diffusion::model_source::{key_params_without, ModelSource};
use crate::diffusion::pipeline::StableDiffusion;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay (the paper's).
    #[default]
    Adam,
    /// AdamW, decoupled weight decay (the reference code's).
    Adamw,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The new token (`S*`) used in prompts.
    #[schemars(example = &"<monet>")]
    pub token: String,
    /// A word whose (first) embedding initialises the token.
    #[serde(default = "default_init")]
    #[schemars(example = &"painting")]
    pub initializer: String,
    /// Vectors per token (`<tok>`, `<tok>_1`, … in the embedding file).
    #[serde(default = "one")]
    #[schemars(example = 1)]
    pub num_vectors: usize,
    /// `ti`, `cto`, `ctoa` (NSYNC), `ctm` or `ctma`.
    #[serde(default = "default_variant")]
    #[schemars(example = &"ctoa")]
    pub variant: Variant,
    /// `paper` (default) or `reference_code` (the authors' script: accumulated gradients,
    /// anchor typo, AdamW decay over the whole embedding table).
    #[serde(default = "default_compat")]
    #[schemars(example = &"paper")]
    pub compat: Compat,
    /// Optimizer steps.
    #[serde(default = "default_steps")]
    #[schemars(example = 3000)]
    pub steps: usize,
    /// Triples (positive, negative, anchor) per step.
    #[serde(default = "default_batch")]
    #[schemars(example = 8)]
    pub batch_size: usize,
    /// Learning rate.
    #[serde(default = "default_lr")]
    #[schemars(example = 0.0008)]
    pub lr: f64,
    /// Multiply `lr` by `batch_size` (diffusers' `--scale_lr`).
    #[serde(default)]
    #[schemars(example = false)]
    pub scale_lr: bool,
    /// `adam` or `adamw`.
    #[serde(default)]
    #[schemars(example = &"adam")]
    pub optimizer: OptimizerKind,
    /// Adam's first-moment decay.
    #[serde(default = "beta1")]
    #[schemars(example = 0.9)]
    pub beta1: f64,
    /// Adam's second-moment decay.
    #[serde(default = "beta2")]
    #[schemars(example = 0.999)]
    pub beta2: f64,
    /// Adam's epsilon.
    #[serde(default = "eps")]
    #[schemars(example = 1e-8)]
    pub eps: f64,
    /// Weight decay (default: 0 for Adam, 0.01 for AdamW).
    #[serde(default)]
    #[schemars(example = 0.01)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: `{ kind = "constant" }`, `{ kind = "constant_with_warmup",
    /// warmup_steps = N }` or `{ kind = "cosine", warmup_steps = N }`.
    #[serde(default)]
    #[schemars(example = serde_json::json!({"kind": "cosine", "warmup_steps": 100}))]
    pub schedule: LrSchedule,
    /// Training resolution in pixels (images are resized, bicubic).
    #[serde(default = "default_resolution")]
    #[schemars(example = 512)]
    pub resolution: usize,
    /// Random horizontal flips.
    #[serde(default = "yes")]
    #[schemars(example = true)]
    pub flip: bool,
    /// Save resumable state every this many steps (0: never).
    #[serde(default = "default_every")]
    #[schemars(example = 500)]
    pub checkpoint_every: usize,
    /// A `[models]` entry, or connect a `model` input.
    #[serde(default)]
    #[schemars(example = &"sd15")]
    pub model: Option<String>,
}

fn default_init() -> String {
    "painting".into()
}
fn one() -> usize {
    1
}
fn default_variant() -> Variant {
    Variant::Ctoa
}
fn default_compat() -> Compat {
    Compat::Paper
}
fn default_steps() -> usize {
    3000
}
fn default_batch() -> usize {
    8
}
fn default_lr() -> f64 {
    8e-4
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn default_resolution() -> usize {
    512
}
fn yes() -> bool {
    true
}
fn default_every() -> usize {
    500
}

pub struct ContrastiveTrainKind;

impl NodeKind for ContrastiveTrainKind {
    fn kind(&self) -> &'static str {
        "contrastive_train"
    }
    fn doc(&self) -> &'static str {
        "Learns a style token with NSYNC's contrastive Textual Inversion (or plain TI / the ablations) from positives, their synthetic negatives and a model."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TrainParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec {
                name: "images".into(),
                ty: IMAGES,
                required: true,
                doc: "The real training images (positives).".into(),
            },
            InputSpec {
                name: "captions".into(),
                ty: TEXTS,
                required: true,
                doc: "One caption per training image.".into(),
            },
            InputSpec {
                name: "negatives".into(),
                ty: IMAGES,
                required: false,
                doc: "The synthetic negative of each positive, same item id (all variants but ti)."
                    .into(),
            },
            ModelSource::input_spec(),
        ]
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: TrainParams = typed_params(params)?;
        let connected = |n: &str| cx.connected_inputs.iter().any(|i| i == n);
        if p.variant.needs_negative() && !connected("negatives") {
            return Err(BuildError::at(
                &["variant"],
                format!(
                    "variant `{}` needs `inputs.negatives`",
                    serde_json::to_value(p.variant)
                        .expect("serialises")
                        .as_str()
                        .unwrap_or("?")
                ),
            )
            .help("connect the negative images (an sd_sample node), or use variant = \"ti\""));
        }
        let source = ModelSource::resolve(&p.model, cx, "contrastive_train")?;
        if !(p.token.starts_with('<') && p.token.ends_with('>') && p.token.len() > 2) {
            return Err(BuildError::at(
                &["token"],
                "the token should look like `<name>` so it never collides with a word",
            ));
        }
        for (k, v) in [
            ("steps", p.steps),
            ("batch_size", p.batch_size),
            ("num_vectors", p.num_vectors),
        ] {
            if v == 0 {
                return Err(BuildError::at(&[k], format!("`{k}` must be at least 1")));
            }
        }
        if p.resolution == 0 || !p.resolution.is_multiple_of(8) {
            return Err(BuildError::at(
                &["resolution"],
                "`resolution` must be a positive multiple of 8",
            ));
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(BuildError::at(&["lr"], "`lr` must be positive"));
        }
        Ok(Box::new(ContrastiveTrain { p, source }))
    }
}

pub struct ContrastiveTrain {
    p: TrainParams,
    source: ModelSource,
}

impl Node for ContrastiveTrain {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        ContrastiveTrainKind.declared_inputs()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec {
                name: "embedding",
                ty: EMBEDDING,
            },
            OutputSpec {
                name: "curves",
                ty: CURVES,
            },
        ]
    }
    fn key_params(&self) -> serde_json::Value {
        // How often state is saved never changes the result; the model is keyed by digest.
        key_params_without(&self.p, &["checkpoint_every", "model"])
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
        Exec::Whole(self)
    }
}

fn err(e: impl std::fmt::Display) -> NodeError {
    NodeError::msg(e.to_string())
}

impl Whole for ContrastiveTrain {
    fn run(&self, cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let p = &self.p;
        let (mut sd, _tmp) = self.source.load(cx.store, cx.inputs)?;
        let examples = dataset::load(
            cx.store,
            cx.inputs,
            p.variant.needs_negative(),
            p.resolution as u32,
        )?;
        let (cfg, fresh) = prepare(p, &mut sd, cx.seed)?;
        let state = match cx
            .checkpoint
            .load()
            .and_then(|b| serde_json::from_slice::<TrainState>(&b).ok())
        {
            Some(s) => {
                (cx.warn)(format!("resuming from the checkpoint at step {}", s.step));
                s
            }
            None => fresh,
        };
        let mut trainer = Trainer::new(&mut sd, &examples, cfg).map_err(err)?;
        let mut save = |s: &TrainState| {
            cx.checkpoint
                .save(&serde_json::to_vec(s).expect("state serialises"))
                .map_err(|e| crate::diffusion::SdError::Input(e.to_string()))
        };
        let status = |m: String| (cx.status)(m);
        let done = trainer
            .run(state, p.checkpoint_every, &mut save, &status)
            .map_err(err)?;
        // diffusers' learned_embeds.safetensors: {"<tok>": [n, hidden]}.
        let hidden = sd.text_encoder.config.hidden_size;
        let rows = Tensor::from_vec(
            done.params.clone(),
            (p.num_vectors, hidden),
            &candle_core::Device::Cpu,
        )
        .map_err(err)?;
        let tmp = tempfile::NamedTempFile::new().map_err(err)?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([(p.token.clone(), rows)]),
            tmp.path(),
        )
        .map_err(err)?;
        let embedding = std::fs::read(tmp.path()).map_err(err)?;
        let curves = done.curves.join("\n") + "\n";
        Ok(BTreeMap::from([
            ("embedding".to_string(), embedding),
            ("curves".to_string(), curves.into_bytes()),
        ]))
    }
}

/// The trainer's configuration and fresh state for `p` on `sd`, as the node trains: the
/// token's vectors (`<tok>`, `<tok>_1`, …) are added to `sd`'s tokenizer and initialised from
/// the first token of `initializer`; the captions' templates, the optimizer (and its default
/// weight decay), `scale_lr` and the reference-code table decay follow `p`. Public so that
/// tests train exactly as the node does.
pub fn prepare(
    p: &TrainParams,
    sd: &mut StableDiffusion,
    seed: u64,
) -> Result<(TrainConfig, TrainState), NodeError> {
    let init_ids = sd
        .tokenizer
        .encode(&p.initializer)
        .map_err(NodeError::msg)?;
    let init_id = *init_ids
        .get(1)
        .filter(|&&i| i != sd.tokenizer.eos)
        .ok_or_else(|| NodeError::msg(format!("initializer {:?} has no token", p.initializer)))?;
    let hidden = sd.text_encoder.config.hidden_size;
    let init_row: Vec<f32> = sd
        .text_encoder
        .token_embedding
        .get(init_id as usize)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1())
        .map_err(err)?;
    let names: Vec<String> = std::iter::once(p.token.clone())
        .chain((1..p.num_vectors).map(|i| format!("{}_{i}", p.token)))
        .collect();
    let mut token_ids = Vec::new();
    for name in &names {
        if sd.tokenizer.token_to_id(name).is_some() {
            return Err(NodeError::msg(format!(
                "token `{name}` is already in the model's vocabulary; choose another `token`"
            )));
        }
        token_ids.push(sd.tokenizer.add_token(name).map_err(NodeError::msg)?);
    }
    let spelled = names.join(" ");
    let positive_template = format!("{{caption}} in the style of {spelled}");
    let negative_template = p
        .variant
        .negative_caption_suffix()
        .replace("{token}", &spelled);
    let negative_template = format!("{{caption}} {negative_template}");
    let decay = p.weight_decay.unwrap_or(match p.optimizer {
        OptimizerKind::Adam => 0.0,
        OptimizerKind::Adamw => 1e-2,
    });
    let lr = if p.scale_lr {
        p.lr * p.batch_size as f64
    } else {
        p.lr
    };
    let fresh = TrainState {
        step: 0,
        params: init_row
            .iter()
            .cycle()
            .take(hidden * p.num_vectors)
            .copied()
            .collect(),
        optimizer: match p.optimizer {
            OptimizerKind::Adam => Adam::adam(),
            OptimizerKind::Adamw => Adam::adamw(),
        }
        .with_betas(p.beta1, p.beta2)
        .with_eps(p.eps)
        .with_weight_decay(decay),
        frozen_scale: 1.0,
        curves: Vec::new(),
    };
    let cfg = TrainConfig {
        variant: p.variant,
        compat: p.compat,
        steps: p.steps,
        batch: p.batch_size,
        lr,
        schedule: p.schedule,
        flip: p.flip,
        table_decay: if p.compat == Compat::ReferenceCode && p.optimizer == OptimizerKind::Adamw {
            decay
        } else {
            0.0
        },
        token_ids,
        positive_template,
        negative_template,
        seed,
    };
    Ok((cfg, fresh))
}
