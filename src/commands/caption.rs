//! `nsync caption`: one caption per image, outside any pipeline (the same captioner as the
//! `caption` node, without its post-processing).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nsync_nodes::captioning::BlipCaptioner;
use nsync_nodes::diffusion::sd_sample::device;
use nsync_nodes::sources::decode::{decode_rgb8, AlphaMode};

use super::EXIT_FAILED;

#[derive(Args)]
pub struct CaptionArgs {
    /// A captioning model folder (BLIP in Hugging Face layout: `config.json`,
    /// `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
    /// `preprocessor_config.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// The model family (moondream is not implemented yet).
    #[arg(long, value_enum, default_value_t = BackendArg::Blip)]
    pub backend: BackendArg,
    /// Text every caption starts with (not printed), e.g. "a painting of".
    #[arg(long)]
    pub prompt: Option<String>,
    /// At most this many generated tokens per caption.
    #[arg(long, default_value_t = 30)]
    pub max_new_tokens: usize,
    /// JSON Lines: `{"image": PATH, "caption": TEXT, "token_ids": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// The images to caption.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    /// BLIP captioning checkpoints (`Salesforce/blip-image-captioning-base`/`-large`).
    Blip,
}

pub fn caption(a: CaptionArgs) -> anyhow::Result<ExitCode> {
    let BackendArg::Blip = a.backend;
    if a.max_new_tokens == 0 {
        anyhow::bail!("--max-new-tokens must be at least 1");
    }
    // Decode every image first, so a bad file is reported before the model loads.
    let mut images = Vec::with_capacity(a.images.len());
    for path in &a.images {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
        let img = bytes.and_then(|b| {
            decode_rgb8(&b, AlphaMode::Drop).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        });
        match img {
            Ok(i) => images.push(i),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(ExitCode::from(EXIT_FAILED));
            }
        }
    }
    let model = match BlipCaptioner::from_dir(&a.model, &device()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    for (path, img) in a.images.iter().zip(images) {
        let c = model
            .caption(&[img], a.prompt.as_deref(), a.max_new_tokens)
            .with_context(|| format!("captioning {}", path.display()))?
            .remove(0);
        if a.json {
            let line = serde_json::json!({
                "image": path.display().to_string(),
                "caption": c.text,
                "token_ids": c.token_ids,
            });
            println!("{line}");
        } else {
            println!("{}", c.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
