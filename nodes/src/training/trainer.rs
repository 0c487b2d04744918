//! The NSYNC training loop: per step, the positive, negative and anchor passes each give
//! their own gradient w.r.t. the learned token rows; [`super::update_rule::combine`] forms
//! the update; the optimizer applies it to those rows only (frozen rows stay exactly
//! unchanged unless the reference-code compatibility mode asks for its weight decay over
//! the whole table).
//!
//! Every random draw derives from the style's seed and the step ([`Trainer::style_draws`],
//! public so that a reference implementation can replay them), and the state saved in a
//! checkpoint (step, learned parameters, optimizer moments, curves) is all the loop carries,
//! so a run resumed from a checkpoint continues bit for bit like an uninterrupted one.
//!
//! **Several styles** ([`TrainConfig::styles`], the paper's Monet + Van Gogh experiment):
//! every step trains every style once — `batch` triples drawn from that style's own
//! examples with that style's own seed, its own three passes, and the update rule applied
//! to the gradient of that style's own token rows (a style's prompts contain only its own
//! token, so its passes give the other tokens no gradient; projecting over all tokens at once
//! would mix unrelated styles' directions). One optimizer steps over all rows; Adam works
//! element by element, so this is exactly one optimizer per token. A style's rows hence
//! evolve exactly as in a run of that style alone with the same seed.
//!
//! **LoRA** ([`Adapter::Lora`]): the learned parameters are LoRA adapters on the UNet's
//! linear layers instead of token rows; the prompts name the style with its token as plain
//! text, and the update rule projects over all LoRA parameters flattened, or per tensor
//! ([`super::trainable`]).

use std::ops::Range;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::dataset::{pick, to_tensor, Draws, Example};
use super::lr_schedule::LrSchedule;
use super::optimizer::Adam;
use super::trainable::Adapter;
use super::update_rule::{combine_segments, Compat, Variant};
use crate::diffusion::noise;
use crate::diffusion::pipeline::StableDiffusion;
use crate::diffusion::schedulers::NoiseSchedule;
use crate::diffusion::ti_loss::{encode_latents, ti_loss};
use crate::diffusion::SdError;

/// Everything that changes from step to step (what a checkpoint holds).
#[derive(Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps done.
    pub step: usize,
    /// The learned parameters, flattened: each style's rows `[n_vectors × hidden]`, style
    /// after style, or the LoRA tensors ([`super::trainable`]).
    pub params: Vec<f32>,
    pub optimizer: Adam,
    /// Compatibility mode: the factor the frozen table has shrunk by (weight decay).
    pub frozen_scale: f64,
    /// One JSON line per step so far.
    pub curves: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub variant: Variant,
    pub compat: Compat,
    pub steps: usize,
    /// Triples per step (per style).
    pub batch: usize,
    pub lr: f64,
    pub schedule: LrSchedule,
    pub flip: bool,
    /// Weight decay of the whole table in reference-code mode (AdamW's).
    pub table_decay: f64,
    /// The styles, each with its own examples (one or more; LoRA: one).
    pub styles: Vec<StyleConfig>,
    /// What is learned: the styles' token rows, or LoRA adapters.
    pub adapter: Adapter,
}

/// One style of a run.
#[derive(Clone, Debug)]
pub struct StyleConfig {
    /// Its name: the `style` field of its curve lines when a run has several styles.
    pub name: String,
    /// Its token's ids, one per vector (embeddings; empty for LoRA, whose prompts spell the
    /// token as plain text).
    pub token_ids: Vec<u32>,
    /// `"{caption} in the style of <tok>"`-like templates for positive/anchor and negative.
    pub positive_template: String,
    pub negative_template: String,
    /// The seed of its draws.
    pub seed: u64,
}

impl TrainConfig {
    /// Where style `style`'s rows lie in the flat parameter vector (embeddings); the whole
    /// vector for LoRA. `len` is the vector's length.
    pub fn rows(&self, style: usize, hidden: usize, len: usize) -> Range<usize> {
        match self.adapter {
            Adapter::Embedding => {
                let start: usize = self.styles[..style]
                    .iter()
                    .map(|s| s.token_ids.len() * hidden)
                    .sum();
                start..start + self.styles[style].token_ids.len() * hidden
            }
            Adapter::Lora(_) => 0..len,
        }
    }

    /// The length of the flat parameter vector.
    pub fn param_len(&self, hidden: usize) -> usize {
        match &self.adapter {
            Adapter::Embedding => self.styles.iter().map(|s| s.token_ids.len() * hidden).sum(),
            Adapter::Lora(l) => l.len(),
        }
    }
}

/// The tensors one step differentiates: per style its rows, or the LoRA tensors.
enum Live {
    Embedding(Vec<Var>),
    Lora(Vec<Var>),
}

pub struct Trainer<'a> {
    pub sd: &'a mut StableDiffusion,
    /// Per style, its examples.
    examples: Vec<&'a [Example]>,
    pub cfg: TrainConfig,
    original_table: Tensor,
    /// The training noise schedule (DDPM `add_noise`), built once from the model's config.
    schedule: NoiseSchedule,
}

/// What one pass draws for one triple.
#[derive(Clone, Debug)]
pub struct PassDraw {
    /// The example trained on: its image, or its synthetic negative when `negative`.
    pub example: usize,
    pub negative: bool,
    /// Whether the image is mirrored left-right.
    pub flip: bool,
    /// The diffusion timestep, in `0..num_train_timesteps`.
    pub timestep: usize,
    /// The standard normal noise of the VAE posterior sample, `[1, latent_channels, h/f, w/f]`
    /// (`f`: the VAE's downsampling factor).
    pub vae_noise: Tensor,
    /// The diffusion noise, shaped like `vae_noise`.
    pub noise: Tensor,
}

/// Everything one step draws: per pass, one [`PassDraw`] per triple (`batch` of them). The
/// negative and anchor passes are drawn only for the variants that run them.
#[derive(Clone, Debug)]
pub struct StepDraws {
    pub positive: Vec<PassDraw>,
    pub negative: Option<Vec<PassDraw>>,
    pub anchor: Option<Vec<PassDraw>>,
}

#[derive(Serialize)]
struct CurvePoint<'s> {
    step: usize,
    /// Only when a run has several styles.
    #[serde(skip_serializing_if = "Option::is_none")]
    style: Option<&'s str>,
    lr: f32,
    loss_pos: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_neg: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_anc: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cos_pos_neg: Option<f32>,
    g_pos_norm: f32,
    removed_norm: f32,
    added_norm: f32,
    update_norm: f32,
}

fn render(template: &str, caption: &str) -> String {
    template.replace("{caption}", caption)
}

impl<'a> Trainer<'a> {
    /// A trainer of one style (`cfg.styles` has one entry) on `examples`.
    pub fn new(
        sd: &'a mut StableDiffusion,
        examples: &'a [Example],
        cfg: TrainConfig,
    ) -> Result<Trainer<'a>, SdError> {
        Self::with_styles(sd, vec![examples], cfg)
    }

    /// A trainer of `cfg.styles`, style `i` on `examples[i]`.
    pub fn with_styles(
        sd: &'a mut StableDiffusion,
        examples: Vec<&'a [Example]>,
        cfg: TrainConfig,
    ) -> Result<Trainer<'a>, SdError> {
        if examples.len() != cfg.styles.len() || cfg.styles.is_empty() {
            return Err(SdError::Input(format!(
                "{} example sets for {} styles",
                examples.len(),
                cfg.styles.len()
            )));
        }
        if let Some((s, _)) = cfg.styles.iter().zip(&examples).find(|(_, e)| e.is_empty()) {
            return Err(SdError::Input(format!(
                "style `{}` has no training images",
                s.name
            )));
        }
        if let Adapter::Lora(l) = &cfg.adapter {
            if cfg.styles.len() != 1 {
                return Err(SdError::Input("LoRA trains one style per run".into()));
            }
            let sites = sd.unet.lora_sites();
            if let Some(s) = l.sites.iter().find(|s| !sites.contains(s)) {
                return Err(SdError::Input(format!(
                    "LoRA layer `{}` ({} → {}) is not a linear layer of this UNet",
                    s.name, s.in_dim, s.out_dim
                )));
            }
        }
        let original_table = sd.text_encoder.token_embedding.clone();
        let schedule = NoiseSchedule::from_config(&sd.scheduler_config)?;
        Ok(Trainer {
            sd,
            examples,
            cfg,
            original_table,
            schedule,
        })
    }

    /// The first style's draws at `step` ([`Trainer::style_draws`]).
    pub fn step_draws(&self, step: usize) -> Result<StepDraws, SdError> {
        self.style_draws(0, step)
    }

    /// Everything style `style` draws at step `step` (which of its examples, flips,
    /// timesteps, VAE sample noise and diffusion noise), for the passes the variant runs.
    /// A pure function of the style's seed, the step and the examples' sizes:
    /// [`Trainer::run`] trains on exactly these draws, and a reference implementation can
    /// replay them (`nodes/tests/train_parity.rs`).
    pub fn style_draws(&self, style: usize, step: usize) -> Result<StepDraws, SdError> {
        let examples = self.examples[style];
        let n = examples.len();
        let rng = Draws {
            seed: self.cfg.styles[style].seed,
        };
        let picks: Vec<(usize, usize)> = (0..self.cfg.batch)
            .map(|k| {
                let pos = rng.positive(step, k, n);
                (pos, rng.anchor(step, k, n, pos))
            })
            .collect();
        let train_steps = self.schedule.alphas_cumprod().len();
        let (latent_channels, f) = (self.sd.vae.config.latent_channels, self.sd.vae_scale());
        let device = &self.sd.device;
        let pass = |kind: usize| -> Result<Vec<PassDraw>, SdError> {
            picks
                .iter()
                .enumerate()
                .map(|(k, &(pos, anc))| {
                    let (example, negative) = match kind {
                        0 => (pos, false),
                        1 => (pos, true),
                        _ => (anc, false),
                    };
                    let seed = rng.pass_seed(step, k, kind);
                    let flip = self.cfg.flip && rng.flip(step, k * 3 + kind);
                    let (w, h) = pick(examples, example, negative).0.dimensions();
                    let shape = [1, latent_channels, h as usize / f, w as usize / f];
                    Ok(PassDraw {
                        example,
                        negative,
                        flip,
                        timestep: (noise::derive(seed, "timestep", 0) % train_steps as u64)
                            as usize,
                        vae_noise: noise::gaussian(noise::derive(seed, "vae", 0), &shape, device)?,
                        noise: noise::gaussian(noise::derive(seed, "noise", 0), &shape, device)?,
                    })
                })
                .collect()
        };
        Ok(StepDraws {
            positive: pass(0)?,
            negative: self
                .cfg
                .variant
                .needs_negative()
                .then(|| pass(1))
                .transpose()?,
            anchor: self
                .cfg
                .variant
                .needs_anchor()
                .then(|| pass(2))
                .transpose()?,
        })
    }

    /// One pass (positive, negative or anchor) of style `style` over the step's triples,
    /// with its draws: the mean loss and its gradient w.r.t. the style's learned rows (or all
    /// LoRA parameters), flattened.
    fn pass(
        &self,
        style: usize,
        live: &Live,
        draws: &[PassDraw],
    ) -> Result<(f32, Vec<f32>), SdError> {
        let sd = &*self.sd;
        let st = &self.cfg.styles[style];
        let examples = self.examples[style];
        let device = sd.device.clone();
        let mut latents = Vec::new();
        let mut noises = Vec::new();
        let mut timesteps = Vec::new();
        let mut ids = Vec::new();
        let vae_cfg = &sd.vae.config;
        for d in draws {
            let (img, caption) = pick(examples, d.example, d.negative);
            let template = if d.negative {
                &st.negative_template
            } else {
                &st.positive_template
            };
            let text = render(template, caption);
            let row = sd.token_ids(&text)?;
            let cut = match st.token_ids.first() {
                Some(id) => !row.contains(id),
                None => sd.tokenizer.overflow(&text).map_err(SdError::Input)? > 0,
            };
            if cut {
                return Err(SdError::Input(format!(
                    "the caption of `{}` fills all {} token positions, so the learned token is cut off; shorten the caption",
                    examples[d.example].id, sd.tokenizer.max_len
                )));
            }
            ids.extend(row);
            let x = to_tensor(img, d.flip, &device)?;
            latents.push(encode_latents(
                &sd.vae,
                &x,
                &d.vae_noise,
                vae_cfg.scaling_factor,
            )?);
            noises.push(d.noise.clone());
            timesteps.push(d.timestep);
        }
        let b = draws.len();
        let latents = Tensor::cat(&latents, 0)?;
        let noises = Tensor::cat(&noises, 0)?;
        let ids = Tensor::from_vec(ids, (b, sd.tokenizer.max_len), &device)?;
        // Every style's rows are injected (another style's detached: its token gets no
        // gradient from this style's passes); LoRA trains no rows.
        let mut learned: Vec<(u32, Tensor)> = Vec::new();
        if let Live::Embedding(vars) = live {
            for (t, (other, var)) in self.cfg.styles.iter().zip(vars).enumerate() {
                let rows = if t == style {
                    var.as_tensor().clone()
                } else {
                    var.as_tensor().detach()
                };
                for (i, &id) in other.token_ids.iter().enumerate() {
                    learned.push((id, rows.get(i)?));
                }
            }
        }
        let prediction = sd.scheduler_config.prediction_type;
        let step_out = ti_loss(
            &sd.text_encoder,
            &sd.unet,
            &self.schedule,
            prediction,
            &latents,
            &noises,
            &timesteps,
            &ids,
            &learned,
        )?;
        let loss = step_out.loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let grads = step_out.loss.backward()?;
        let flat = |v: &Var| -> Result<Vec<f32>, SdError> {
            Ok(match grads.get(v.as_tensor()) {
                Some(g) => g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; v.as_tensor().elem_count()],
            })
        };
        let g = match live {
            Live::Embedding(vars) => flat(&vars[style])?,
            Live::Lora(vars) => {
                let mut g = Vec::new();
                for v in vars {
                    g.extend(flat(v)?);
                }
                g
            }
        };
        Ok((loss, g))
    }

    /// The step's trainable tensors for `params` (a LoRA is attached to the UNet).
    fn live(&mut self, params: &[f32]) -> Result<Live, SdError> {
        let hidden = self.sd.text_encoder.config.hidden_size;
        let device = self.sd.device.clone();
        match &self.cfg.adapter {
            Adapter::Embedding => {
                let mut vars = Vec::with_capacity(self.cfg.styles.len());
                for (s, st) in self.cfg.styles.iter().enumerate() {
                    let rows = self.cfg.rows(s, hidden, params.len());
                    vars.push(Var::from_tensor(&Tensor::from_vec(
                        params[rows].to_vec(),
                        (st.token_ids.len(), hidden),
                        &device,
                    )?)?);
                }
                Ok(Live::Embedding(vars))
            }
            Adapter::Lora(layout) => {
                let (lora, vars) = layout.build(params, &device, true)?;
                self.sd.unet.set_lora(Some(lora)).map_err(SdError::Input)?;
                Ok(Live::Lora(vars))
            }
        }
    }

    /// Run from `state` to the end, calling `checkpoint` every `every` steps and `status`
    /// every step. Stops with an error naming the step if a loss is not finite. A LoRA
    /// attached for training is detached again.
    pub fn run(
        &mut self,
        state: TrainState,
        every: usize,
        checkpoint: &mut dyn FnMut(&TrainState) -> Result<(), SdError>,
        status: &dyn Fn(String),
    ) -> Result<TrainState, SdError> {
        let hidden = self.sd.text_encoder.config.hidden_size;
        let want = self.cfg.param_len(hidden);
        if state.params.len() != want {
            return Err(SdError::Input(format!(
                "the training state holds {} parameters; this configuration trains {want}",
                state.params.len()
            )));
        }
        let out = self.run_steps(state, every, checkpoint, status);
        if matches!(self.cfg.adapter, Adapter::Lora(_)) {
            self.sd.unet.set_lora(None).map_err(SdError::Input)?;
        }
        out
    }

    fn run_steps(
        &mut self,
        mut state: TrainState,
        every: usize,
        checkpoint: &mut dyn FnMut(&TrainState) -> Result<(), SdError>,
        status: &dyn Fn(String),
    ) -> Result<TrainState, SdError> {
        let hidden = self.sd.text_encoder.config.hidden_size;
        let several = self.cfg.styles.len() > 1;
        while state.step < self.cfg.steps {
            let step = state.step;
            if self.cfg.compat == Compat::ReferenceCode && state.frozen_scale != 1.0 {
                self.sd.text_encoder.token_embedding = (&self.original_table * state.frozen_scale)?;
            }
            let live = self.live(&state.params)?;
            let lr =
                self.cfg
                    .schedule
                    .lr_at(self.cfg.lr as f32, step as u64, self.cfg.steps as u64);
            let mut update = vec![0f32; state.params.len()];
            let mut points = Vec::with_capacity(self.cfg.styles.len());
            let mut losses = Vec::with_capacity(self.cfg.styles.len());
            for s in 0..self.cfg.styles.len() {
                let draws = self.style_draws(s, step)?;
                let (loss_pos, g_pos) = self.pass(s, &live, &draws.positive)?;
                let negative = draws
                    .negative
                    .as_deref()
                    .map(|d| self.pass(s, &live, d))
                    .transpose()?;
                let anchor = draws
                    .anchor
                    .as_deref()
                    .map(|d| self.pass(s, &live, d))
                    .transpose()?;
                let which = if several {
                    format!(" (style `{}`)", self.cfg.styles[s].name)
                } else {
                    String::new()
                };
                for (what, l) in [
                    ("positive", Some(loss_pos)),
                    ("negative", negative.as_ref().map(|x| x.0)),
                    ("anchor", anchor.as_ref().map(|x| x.0)),
                ] {
                    if let Some(l) = l.filter(|l| !l.is_finite()) {
                        return Err(SdError::Input(format!(
                            "training diverged at step {}{which}: the {what} loss is {l}; the last good checkpoint (step {}) is kept — lower `lr` (a changed parameter starts a new training)",
                            step + 1,
                            (step / every.max(1)) * every.max(1)
                        )));
                    }
                }
                let rows = self.cfg.rows(s, hidden, state.params.len());
                let c = combine_segments(
                    self.cfg.variant,
                    self.cfg.compat,
                    &self.cfg.adapter.segments(rows.clone()),
                    &g_pos,
                    negative.as_ref().map(|x| x.1.as_slice()),
                    anchor.as_ref().map(|x| x.1.as_slice()),
                )
                .map_err(SdError::Input)?;
                update[rows].copy_from_slice(&c.update);
                losses.push(loss_pos);
                points.push(CurvePoint {
                    step: step + 1,
                    style: several.then_some(self.cfg.styles[s].name.as_str()),
                    lr,
                    loss_pos,
                    loss_neg: negative.as_ref().map(|x| x.0),
                    loss_anc: anchor.as_ref().map(|x| x.0),
                    cos_pos_neg: c.cos_pos_neg,
                    g_pos_norm: c.g_pos_norm,
                    removed_norm: c.removed_norm,
                    added_norm: c.added_norm,
                    update_norm: c
                        .update
                        .iter()
                        .map(|v| (*v as f64).powi(2))
                        .sum::<f64>()
                        .sqrt() as f32,
                });
            }
            state.optimizer.step(&mut state.params, &update, lr);
            if self.cfg.compat == Compat::ReferenceCode {
                state.frozen_scale *= 1.0 - lr as f64 * self.cfg.table_decay;
            }
            state.step += 1;
            for point in &points {
                state
                    .curves
                    .push(serde_json::to_string(point).expect("serialises"));
            }
            let loss = if several {
                self.cfg
                    .styles
                    .iter()
                    .zip(&losses)
                    .map(|(st, l)| format!("{} {l:.4}", st.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                format!("{:.4}", losses[0])
            };
            status(format!(
                "step {}/{}, loss {loss}",
                state.step, self.cfg.steps
            ));
            if every > 0 && state.step.is_multiple_of(every) && state.step < self.cfg.steps {
                checkpoint(&state)?;
            }
        }
        Ok(state)
    }
}
