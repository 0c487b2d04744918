//! The Stable Diffusion VAE (diffusers `AutoencoderKL`), in candle.
//!
//! A local implementation rather than candle-transformers' stock one, for the same reasons
//! as the text encoder: configuration and weight names come straight from a diffusers
//! `vae/` folder, loading is strict ([`super::weights`]: every tensor requested with its
//! shape, nothing left over), and every layer records a backward pass (composite group
//! norm and softmax, broadcast upsampling), so losses on decoded images or on encoded
//! latents can be differentiated.
//!
//! The pieces, one per file: [`config`] (what `config.json` says), [`resnet`] (the
//! residual blocks: the shared [`super::resnet`] block without a time embedding),
//! [`resample`] (stride-2 downsampling with diffusers' asymmetric padding, nearest ×2
//! upsampling), [`attention`] (the mid block's spatial self-attention),
//! [`mid_block`], [`encoder`], [`decoder`] and [`gaussian`] (the encoder's output
//! distribution).
//!
//! Scaling is the caller's: [`AutoencoderKl::encode`] returns unscaled latents and
//! [`AutoencoderKl::decode`] expects unscaled latents, exactly like diffusers' model; the
//! pipeline multiplies by `scaling_factor` (after subtracting `shift_factor`, when set)
//! going into the diffusion model and undoes it coming out. Every sample in a batch is
//! computed independently (group norm and attention never mix samples).

pub mod attention;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod gaussian;
pub mod mid_block;
pub mod resample;
pub mod resnet;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::nn::{Conv2d, Result};
use super::weights::{component_file, Weights};
use super::ModelError;

pub use config::VaeConfig;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use gaussian::DiagonalGaussian;

pub struct AutoencoderKl {
    pub config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKl {
    /// Load a diffusers `vae/` folder (`config.json` + `diffusion_pytorch_model.safetensors`
    /// or its `.fp16` variant), with weights converted to `dtype`.
    pub fn from_dir(
        dir: &Path,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        let config = VaeConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::load(
            &component_file(dir, "diffusion_pytorch_model")?,
            dtype,
            device,
        )?;
        let vae = Self::load(config, &weights)?;
        weights.finish(&[])?;
        Ok(vae)
    }

    /// Build from already-open weights (a file, or [`Weights::random`] for tiny models);
    /// `config` is checked again, so a hand-built one cannot describe an unsupported model.
    /// The caller calls [`Weights::finish`].
    pub fn from_weights(config: VaeConfig, w: &Weights) -> std::result::Result<Self, ModelError> {
        config.check().map_err(|e| ModelError::bad(w.path(), e))?;
        Self::load(config, w)
    }

    fn load(config: VaeConfig, w: &Weights) -> std::result::Result<Self, ModelError> {
        let z2 = 2 * config.latent_channels;
        let z = config.latent_channels;
        Ok(AutoencoderKl {
            encoder: Encoder::load(w, &config)?,
            decoder: Decoder::load(w, &config)?,
            quant_conv: if config.use_quant_conv {
                Some(Conv2d::load(w, "quant_conv", z2, z2, 1, 1, 0)?)
            } else {
                None
            },
            post_quant_conv: if config.use_post_quant_conv {
                Some(Conv2d::load(w, "post_quant_conv", z, z, 1, 1, 0)?)
            } else {
                None
            },
            config,
        })
    }

    /// Images `[b, in_channels, h, w]` with values in `[-1, 1]` (sides multiples of 2ⁿ, 8
    /// for Stable Diffusion) → the distribution of their unscaled latents
    /// `[b, latent_channels, h/2ⁿ, w/2ⁿ]`.
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        let mut moments = self.encoder.forward(x)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        DiagonalGaussian::from_parameters(&moments)
    }

    /// Unscaled latents `[b, latent_channels, h, w]` → images `[b, out_channels, h·2ⁿ,
    /// w·2ⁿ]`, roughly in `[-1, 1]` (not clamped).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match &self.post_quant_conv {
            Some(p) => self.decoder.forward(&p.forward(z)?),
            None => self.decoder.forward(z),
        }
    }
}
