//! The NSYNC training loop: per step, the positive, negative and anchor passes each give
//! their own gradient w.r.t. the learned token rows; [`super::update_rule::combine`] forms
//! the update; the optimizer applies it to those rows only (frozen rows stay exactly
//! unchanged unless the reference-code compatibility mode asks for its weight decay over
//! the whole table).
//!
//! Every random draw derives from the pipeline seed and the step ([`Trainer::step_draws`],
//! public so that a reference implementation can replay them), and the state saved in a
//! checkpoint (step, learned rows, optimizer moments, curves) is all the loop carries, so a
//! run resumed from a checkpoint continues bit for bit like an uninterrupted one.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::dataset::{pick, to_tensor, Draws, Example};
use super::lr_schedule::LrSchedule;
use super::optimizer::Adam;
use super::update_rule::{combine, Compat, Variant};
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
    /// The learned rows, flattened `[n_vectors × hidden]`.
    pub params: Vec<f32>,
    pub optimizer: Adam,
    /// Compatibility mode: the factor the frozen table has shrunk by (weight decay).
    pub frozen_scale: f64,
    /// One JSON line per step so far.
    pub curves: Vec<String>,
}

pub struct TrainConfig {
    pub variant: Variant,
    pub compat: Compat,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub schedule: LrSchedule,
    pub flip: bool,
    /// Weight decay of the whole table in reference-code mode (AdamW's).
    pub table_decay: f64,
    /// The token's ids, one per vector.
    pub token_ids: Vec<u32>,
    /// `"{caption} in the style of <tok>"`-like templates for positive/anchor and negative.
    pub positive_template: String,
    pub negative_template: String,
    pub seed: u64,
}

pub struct Trainer<'a> {
    pub sd: &'a mut StableDiffusion,
    pub examples: &'a [Example],
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
struct CurvePoint {
    step: usize,
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
    pub fn new(
        sd: &'a mut StableDiffusion,
        examples: &'a [Example],
        cfg: TrainConfig,
    ) -> Result<Trainer<'a>, SdError> {
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

    /// Everything step `step` draws (which examples, flips, timesteps, VAE sample noise and
    /// diffusion noise), for the passes the variant runs. A pure function of the seed, the
    /// step and the examples' sizes: [`Trainer::run`] trains on exactly these draws, and a
    /// reference implementation can replay them (`nodes/tests/train_parity.rs`).
    pub fn step_draws(&self, step: usize) -> Result<StepDraws, SdError> {
        let n = self.examples.len();
        let rng = Draws {
            seed: self.cfg.seed,
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
                    let (w, h) = pick(self.examples, example, negative).0.dimensions();
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

    /// One pass (positive, negative or anchor) over the step's triples, with its draws: the
    /// mean loss and its gradient w.r.t. the learned rows, flattened.
    fn pass(&self, rows: &Var, draws: &[PassDraw]) -> Result<(f32, Vec<f32>), SdError> {
        let sd = &*self.sd;
        let hidden = sd.text_encoder.config.hidden_size;
        let n_vec = self.cfg.token_ids.len();
        let device = sd.device.clone();
        let mut latents = Vec::new();
        let mut noises = Vec::new();
        let mut timesteps = Vec::new();
        let mut ids = Vec::new();
        let vae_cfg = &sd.vae.config;
        for d in draws {
            let (img, caption) = pick(self.examples, d.example, d.negative);
            let template = if d.negative {
                &self.cfg.negative_template
            } else {
                &self.cfg.positive_template
            };
            let row = sd.token_ids(&render(template, caption))?;
            if !row.contains(&self.cfg.token_ids[0]) {
                return Err(SdError::Input(format!(
                    "the caption of `{}` fills all {} token positions, so the learned token is cut off; shorten the caption",
                    self.examples[d.example].id, sd.tokenizer.max_len
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
        let learned: Vec<(u32, Tensor)> = self
            .cfg
            .token_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| Ok((id, rows.as_tensor().get(i)?)))
            .collect::<candle_core::Result<_>>()?;
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
        let g = match grads.get(rows.as_tensor()) {
            Some(g) => g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; n_vec * hidden],
        };
        Ok((loss, g))
    }

    /// Run from `state` to the end, calling `checkpoint` every `every` steps and `status`
    /// every step. Stops with an error naming the step if a loss is not finite.
    pub fn run(
        &mut self,
        mut state: TrainState,
        every: usize,
        checkpoint: &mut dyn FnMut(&TrainState) -> Result<(), SdError>,
        status: &dyn Fn(String),
    ) -> Result<TrainState, SdError> {
        let hidden = self.sd.text_encoder.config.hidden_size;
        let n_vec = self.cfg.token_ids.len();
        while state.step < self.cfg.steps {
            let step = state.step;
            if self.cfg.compat == Compat::ReferenceCode && state.frozen_scale != 1.0 {
                self.sd.text_encoder.token_embedding = (&self.original_table * state.frozen_scale)?;
            }
            let rows = Var::from_tensor(&Tensor::from_vec(
                state.params.clone(),
                (n_vec, hidden),
                &self.sd.device,
            )?)?;
            let draws = self.step_draws(step)?;
            let (loss_pos, g_pos) = self.pass(&rows, &draws.positive)?;
            let negative = draws
                .negative
                .as_deref()
                .map(|d| self.pass(&rows, d))
                .transpose()?;
            let anchor = draws
                .anchor
                .as_deref()
                .map(|d| self.pass(&rows, d))
                .transpose()?;
            for (what, l) in [
                ("positive", Some(loss_pos)),
                ("negative", negative.as_ref().map(|x| x.0)),
                ("anchor", anchor.as_ref().map(|x| x.0)),
            ] {
                if let Some(l) = l.filter(|l| !l.is_finite()) {
                    return Err(SdError::Input(format!(
                        "training diverged at step {}: the {what} loss is {l}; the last good checkpoint (step {}) is kept — lower `lr` (a changed parameter starts a new training)",
                        step + 1,
                        (step / every.max(1)) * every.max(1)
                    )));
                }
            }
            let c = combine(
                self.cfg.variant,
                self.cfg.compat,
                &g_pos,
                negative.as_ref().map(|x| x.1.as_slice()),
                anchor.as_ref().map(|x| x.1.as_slice()),
            )
            .map_err(SdError::Input)?;
            let lr =
                self.cfg
                    .schedule
                    .lr_at(self.cfg.lr as f32, step as u64, self.cfg.steps as u64);
            state.optimizer.step(&mut state.params, &c.update, lr);
            if self.cfg.compat == Compat::ReferenceCode {
                state.frozen_scale *= 1.0 - lr as f64 * self.cfg.table_decay;
            }
            state.step += 1;
            let point = CurvePoint {
                step: state.step,
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
            };
            state
                .curves
                .push(serde_json::to_string(&point).expect("serialises"));
            status(format!(
                "step {}/{}, loss {loss_pos:.4}",
                state.step, self.cfg.steps
            ));
            if every > 0 && state.step.is_multiple_of(every) && state.step < self.cfg.steps {
                checkpoint(&state)?;
            }
        }
        Ok(state)
    }
}
