//! `contrastive_train`: NSYNC (and its ablations and plain Textual Inversion) as a whole
//! node: positives with captions, their synthetic negatives and a model in; the learned
//! token embedding (diffusers' `learned_embeds.safetensors`) and training curves out.
//!
//! Defaults follow the paper (`ctoa`, Adam, lr 0.0008, batch 8, 512 px); `compat =
//! "reference_code"` reproduces the authors' released script instead (see
//! `shared/docs/method.md`). Training resumes from its last checkpoint after an
//! interruption and continues bit for bit; a checkpoint is partial work, never a result.
//!
//! Two extensions of the paper's main setting ([`super::train_params`]):
//!
//! - **several styles** (`styles = [{ token = "<monet>" }, { token = "<vangogh>" }]`), each
//!   with its own inputs `images_<name>`, `captions_<name>`, `negatives_<name>`; one
//!   embedding file holds every token (see [`super::trainer`] for how a step trains them);
//! - **LoRA** (`adapter = "lora"`): LoRA adapters on the UNet's attention projections are
//!   learned instead of a token; the output is a `lora` file in diffusers' layout
//!   ([`crate::diffusion::lora`]) and the token is plain text in the captions.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};

use super::artifacts::{CURVES, EMBEDDING, LORA};
use super::dataset;
use super::optimizer::Adam;
use super::trainable::{Adapter, LoraLayout};
use super::trainer::{StyleConfig, TrainConfig, TrainState, Trainer};
use super::update_rule::Compat;
use crate::diffusion::lora::select_sites;
use crate::diffusion::model_source::{key_params_without, ModelSource};
use crate::diffusion::noise;
use crate::diffusion::pipeline::StableDiffusion;

pub use super::train_params::{
    AdapterKind, LoraParams, OptimizerKind, Style, StyleParams, TrainParams,
};

pub struct ContrastiveTrainKind;

impl NodeKind for ContrastiveTrainKind {
    fn kind(&self) -> &'static str {
        "contrastive_train"
    }
    fn doc(&self) -> &'static str {
        "Learns a style token with NSYNC's contrastive Textual Inversion (or plain TI / the ablations) from positives, their synthetic negatives and a model; or several tokens at once (`styles`, inputs `images_<name>`, `captions_<name>`, `negatives_<name>`), or LoRA adapters on the UNet (`adapter = \"lora\"`)."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TrainParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        super::train_params::declared_inputs()
    }
    fn free_inputs(&self) -> bool {
        // `images_<name>`, `captions_<name>`, `negatives_<name>` per style; the built node
        // lists exactly the ports its parameters allow.
        true
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let mut p: TrainParams = typed_params(params)?;
        let styles = p.validate()?;
        let connected = |n: &str| cx.connected_inputs.iter().any(|i| i == n);
        if p.variant.needs_negative() {
            for s in &styles {
                let port = &s.ports(p.multi())[2];
                if !connected(port) {
                    return Err(BuildError::at(
                        &["variant"],
                        format!(
                            "variant `{}` needs `inputs.{port}`",
                            serde_json::to_value(p.variant)
                                .expect("serialises")
                                .as_str()
                                .unwrap_or("?")
                        ),
                    )
                    .help(
                        "connect the negative images (an sd_sample node), or use variant = \"ti\"",
                    ));
                }
            }
        }
        let source = ModelSource::resolve(&p.model, cx, "contrastive_train")?;
        for (k, v) in [("steps", p.steps), ("batch_size", p.batch_size)] {
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
        Ok(Box::new(ContrastiveTrain { p, styles, source }))
    }
}

pub struct ContrastiveTrain {
    p: TrainParams,
    styles: Vec<Style>,
    source: ModelSource,
}

impl Node for ContrastiveTrain {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.p.inputs(&self.styles)
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        let learned = match self.p.adapter {
            AdapterKind::Embedding => OutputSpec {
                name: "embedding",
                ty: EMBEDDING,
            },
            AdapterKind::Lora => OutputSpec {
                name: "lora",
                ty: LORA,
            },
        };
        vec![
            learned,
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
        let mut sets = Vec::with_capacity(self.styles.len());
        for s in &self.styles {
            let ports = s.ports(p.multi());
            sets.push(dataset::load_ports(
                cx.store,
                cx.inputs,
                [&ports[0], &ports[1], &ports[2]],
                p.variant.needs_negative(),
                p.resolution as u32,
            )?);
        }
        let (cfg, fresh) = prepare(p, &mut sd, cx.seed)?;
        let state = match cx
            .checkpoint
            .load()
            .and_then(|b| serde_json::from_slice::<TrainState>(&b).ok())
            .filter(|s| s.params.len() == fresh.params.len())
        {
            Some(s) => {
                (cx.warn)(format!("resuming from the checkpoint at step {}", s.step));
                s
            }
            None => fresh,
        };
        let adapter = cfg.adapter.clone();
        let style_rows: Vec<(String, usize)> = self
            .styles
            .iter()
            .map(|s| (s.token.clone(), s.num_vectors))
            .collect();
        let mut trainer =
            Trainer::with_styles(&mut sd, sets.iter().map(Vec::as_slice).collect(), cfg)
                .map_err(err)?;
        let mut save = |s: &TrainState| {
            cx.checkpoint
                .save(&serde_json::to_vec(s).expect("state serialises"))
                .map_err(|e| crate::diffusion::SdError::Input(e.to_string()))
        };
        let status = |m: String| (cx.status)(m);
        let done = trainer
            .run(state, p.checkpoint_every, &mut save, &status)
            .map_err(err)?;
        let hidden = sd.text_encoder.config.hidden_size;
        let tmp = tempfile::NamedTempFile::new().map_err(err)?;
        let (port, bytes) = match &adapter {
            Adapter::Embedding => {
                // diffusers' learned_embeds.safetensors: {"<tok>": [n, hidden]} per token.
                let mut tensors = std::collections::HashMap::new();
                let mut at = 0;
                for (token, n) in style_rows {
                    let rows = Tensor::from_vec(
                        done.params[at..at + n * hidden].to_vec(),
                        (n, hidden),
                        &candle_core::Device::Cpu,
                    )
                    .map_err(err)?;
                    at += n * hidden;
                    tensors.insert(token, rows);
                }
                candle_core::safetensors::save(&tensors, tmp.path()).map_err(err)?;
                ("embedding", std::fs::read(tmp.path()).map_err(err)?)
            }
            Adapter::Lora(layout) => {
                let (lora, _) = layout
                    .build(&done.params, &candle_core::Device::Cpu, false)
                    .map_err(err)?;
                lora.save(tmp.path()).map_err(err)?;
                ("lora", std::fs::read(tmp.path()).map_err(err)?)
            }
        };
        let curves = done.curves.join("\n") + "\n";
        Ok(BTreeMap::from([
            (port.to_string(), bytes),
            ("curves".to_string(), curves.into_bytes()),
        ]))
    }
}

/// The first token of `word` in `sd`'s vocabulary, and its embedding row.
fn initial_row(sd: &StableDiffusion, word: &str) -> Result<Vec<f32>, NodeError> {
    let ids = sd.tokenizer.encode(word).map_err(NodeError::msg)?;
    let id = *ids
        .get(1)
        .filter(|&&i| i != sd.tokenizer.eos)
        .ok_or_else(|| NodeError::msg(format!("initializer {word:?} has no token")))?;
    sd.text_encoder
        .token_embedding
        .get(id as usize)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1())
        .map_err(err)
}

/// The trainer's configuration and fresh state for `p` on `sd`, as the node trains.
///
/// Token embeddings: each style's vectors (`<tok>`, `<tok>_1`, …) are added to `sd`'s
/// tokenizer and initialised from the first token of its `initializer`. One style draws with
/// the pipeline `seed` itself; with `styles`, style `name` draws with a seed derived from
/// `seed` and its name (so reordering the list changes no style's draws).
///
/// LoRA: the adapters of `p.lora` on the targeted UNet layers, `A` seeded from `seed`, `B`
/// zero ([`LoraLayout::init`]); the token stays plain text.
///
/// The captions' templates, the optimizer (and its default weight decay), `scale_lr` and the
/// reference-code table decay follow `p`. Public so that tests train exactly as the node
/// does. `p` must be validated ([`TrainParams::validate`]).
pub fn prepare(
    p: &TrainParams,
    sd: &mut StableDiffusion,
    seed: u64,
) -> Result<(TrainConfig, TrainState), NodeError> {
    let styles = p.resolved_styles().map_err(|e| NodeError::msg(e.message))?;
    let hidden = sd.text_encoder.config.hidden_size;
    let mut configs = Vec::with_capacity(styles.len());
    let mut params = Vec::new();
    for s in &styles {
        let style_seed = if p.multi() {
            noise::derive(seed, &format!("style {}", s.name), 0)
        } else {
            seed
        };
        let (token_ids, spelled) = match p.adapter {
            AdapterKind::Embedding => {
                let init_row = initial_row(sd, &s.initializer)?;
                let names = s.vector_names();
                let mut ids = Vec::new();
                for name in &names {
                    if sd.tokenizer.token_to_id(name).is_some() {
                        return Err(NodeError::msg(format!(
                            "token `{name}` is already in the model's vocabulary; choose another `token`"
                        )));
                    }
                    ids.push(sd.tokenizer.add_token(name).map_err(NodeError::msg)?);
                }
                params.extend(init_row.iter().cycle().take(hidden * s.num_vectors));
                (ids, names.join(" "))
            }
            AdapterKind::Lora => (Vec::new(), s.token.clone()),
        };
        let negative = p
            .variant
            .negative_caption_suffix()
            .replace("{token}", &spelled);
        configs.push(StyleConfig {
            name: s.name.clone(),
            token_ids,
            positive_template: format!("{{caption}} in the style of {spelled}"),
            negative_template: format!("{{caption}} {negative}"),
            seed: style_seed,
        });
    }
    let adapter = match p.adapter {
        AdapterKind::Embedding => Adapter::Embedding,
        AdapterKind::Lora => {
            let l = p.lora.clone().unwrap_or_default();
            let sites = select_sites(&sd.unet.lora_sites(), &l.targets).map_err(NodeError::msg)?;
            let layout = LoraLayout {
                sites,
                rank: l.rank,
                scale: l.alpha.unwrap_or(l.rank as f64) / l.rank as f64,
                projection: l.projection,
            };
            params = layout.init(seed).map_err(err)?;
            Adapter::Lora(layout)
        }
    };
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
        params,
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
    let table_decay = p.compat == Compat::ReferenceCode
        && p.optimizer == OptimizerKind::Adamw
        && p.adapter == AdapterKind::Embedding;
    let cfg = TrainConfig {
        variant: p.variant,
        compat: p.compat,
        steps: p.steps,
        batch: p.batch_size,
        lr,
        schedule: p.schedule,
        flip: p.flip,
        table_decay: if table_decay { decay } else { 0.0 },
        styles: configs,
        adapter,
    };
    Ok((cfg, fresh))
}
