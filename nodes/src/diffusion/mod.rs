//! Stable Diffusion: loading diffusers-layout models and the pieces built on them.
//!
//! So far: the CLIP tokenizer ([`clip_tokenizer`]), strict weight loading ([`weights`]) and
//! the CLIP text encoder with injectable token embeddings ([`clip_text`]). The text encoder, UNet, VAE, schedulers
//! and the `sd_sample` node follow (issue 3).

pub mod chunked_attention;
pub mod clip_text;
pub mod clip_tokenizer;
pub mod frozen_grad;
pub mod init_latents;
pub mod lora;
pub mod model_artifact;
pub mod model_error;
pub mod model_source;
pub mod nn;
pub mod noise;
pub mod pipeline;
pub mod precision;
pub mod resnet;
pub mod sampler;
pub mod schedulers;
pub mod sd_sample;
pub mod ti_loss;
pub mod tiny;
pub mod tiny_sd;
pub mod unet;
pub mod vae;
pub mod weights;

pub use clip_tokenizer::ClipTokenizer;
pub use model_error::{ModelError, SdError};
