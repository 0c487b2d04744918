//! A Stable Diffusion model loaded from a diffusers-layout folder: tokenizer, text encoder,
//! UNet, VAE and the scheduler configuration, plus learned token embeddings
//! (`learned_embeds.safetensors`, diffusers' Textual Inversion format).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::clip_text::ClipTextModel;
use super::schedulers::SchedulerConfig;
use super::unet::UNet;
use super::vae::AutoencoderKl;
use super::{ClipTokenizer, ModelError, SdError};

pub struct StableDiffusion {
    pub dir: PathBuf,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet,
    pub vae: AutoencoderKl,
    pub scheduler_config: SchedulerConfig,
    pub device: Device,
    /// Learned tokens: (token id, `[hidden]` row).
    pub learned: Vec<(u32, Tensor)>,
    /// Multi-vector tokens expand in prompts: `<tok>` → `<tok> <tok>_1 …`.
    expansions: Vec<(String, String)>,
}

impl StableDiffusion {
    /// Load a diffusers pipeline folder (`model_index.json`, `tokenizer/`, `text_encoder/`,
    /// `unet/`, `vae/`, `scheduler/`).
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<StableDiffusion, SdError> {
        if !dir.join("model_index.json").is_file() {
            return Err(ModelError::MissingFile {
                path: dir.join("model_index.json"),
                hint: "not a diffusers pipeline folder; download one (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5) or run `nsync model init-tiny DIR`".into(),
            }
            .into());
        }
        let scheduler_config =
            SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json"))?;
        Ok(StableDiffusion {
            dir: dir.to_path_buf(),
            tokenizer: ClipTokenizer::from_dir(&dir.join("tokenizer"))?,
            text_encoder: ClipTextModel::from_dir(&dir.join("text_encoder"), dtype, device)?,
            unet: UNet::from_dir(&dir.join("unet"), dtype, device)?,
            // The VAE runs in f32 (diffusers' `force_upcast`): its norms overflow in half.
            vae: AutoencoderKl::from_dir(&dir.join("vae"), DType::F32, device)?,
            scheduler_config,
            device: device.clone(),
            learned: Vec::new(),
            expansions: Vec::new(),
        })
    }

    /// Pixels per latent cell (8 for Stable Diffusion).
    pub fn vae_scale(&self) -> usize {
        1 << self.vae.config.downsample_steps()
    }

    /// Add learned tokens from a `learned_embeds.safetensors` file: each tensor is a token
    /// (`{"<monet>": [n, hidden]}` or `[hidden]`); `n > 1` vectors become `<tok>`, `<tok>_1`,
    /// … as diffusers' `load_textual_inversion` does.
    pub fn load_embeddings(&mut self, path: &Path) -> Result<Vec<String>, SdError> {
        let tensors = candle_core::safetensors::load(path, &self.device)
            .map_err(|e| ModelError::bad(path, format!("cannot read: {e}")))?;
        let hidden = self.text_encoder.config.hidden_size;
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        if names.is_empty() {
            return Err(ModelError::bad(path, "holds no tensors").into());
        }
        let mut added = Vec::new();
        for name in names {
            let t = tensors[name].to_dtype(self.text_encoder.token_embedding.dtype())?;
            let rows = match t.dims() {
                [h] if *h == hidden => t.reshape((1, hidden))?,
                [_, h] if *h == hidden => t,
                d => {
                    return Err(ModelError::bad(
                        path,
                        format!("tensor `{name}` has shape {d:?}; a token embedding for this text encoder is [n, {hidden}]"),
                    )
                    .into())
                }
            };
            let n = rows.dim(0)?;
            let mut tokens = vec![name.clone()];
            tokens.extend((1..n).map(|i| format!("{name}_{i}")));
            for (i, tok) in tokens.iter().enumerate() {
                if self.tokenizer.token_to_id(tok).is_some() {
                    return Err(ModelError::bad(
                        path,
                        format!("token `{tok}` is already in the vocabulary; pick another name"),
                    )
                    .into());
                }
                let id = self.tokenizer.add_token(tok).map_err(SdError::Input)?;
                self.learned.push((id, rows.get(i)?));
            }
            if n > 1 {
                self.expansions.push((name.clone(), tokens.join(" ")));
            }
            added.push(name.clone());
        }
        Ok(added)
    }

    /// Token ids of `text`, padded to 77, multi-vector tokens expanded.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, SdError> {
        let mut text = text.to_string();
        for (tok, expanded) in &self.expansions {
            text = text.replace(tok.as_str(), expanded);
        }
        self.tokenizer.encode_padded(&text).map_err(SdError::Input)
    }

    /// Text embeddings `[n, 77, hidden]` for `texts`, with the learned tokens injected.
    pub fn encode_prompts(&self, texts: &[&str]) -> Result<Tensor, SdError> {
        let mut ids = Vec::with_capacity(texts.len() * self.tokenizer.max_len);
        for t in texts {
            ids.extend(self.token_ids(t)?);
        }
        let ids = Tensor::from_vec(ids, (texts.len(), self.tokenizer.max_len), &self.device)?;
        let embeds = self.text_encoder.embed(&ids, &self.learned)?;
        Ok(self.text_encoder.forward_embeds(&embeds)?)
    }
}
