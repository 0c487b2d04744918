//! `nsync model init-tiny`: tiny random models for tests and demos.

use std::process::ExitCode;

use nsync_nodes::captioning::write_tiny_blip;
use nsync_nodes::diffusion::tiny::{write_tiny, TinyVariant};
use nsync_nodes::evaluation::tiny_evaluators::write_tiny_evaluators;

use super::EXIT_FAILED;
use crate::cli::{ModelCommand, TinyKindArg, TinyVariantArg};

pub fn model(cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::InitTiny {
            dir,
            seed,
            variant,
            kind,
        } => {
            let v = match variant {
                TinyVariantArg::Sd15 => TinyVariant::Sd15,
                TinyVariantArg::Sd2 => TinyVariant::Sd2,
            };
            let (what, result) = match kind {
                TinyKindArg::Sd => (format!("{v:?} model"), write_tiny(&dir, seed, v)),
                TinyKindArg::Evaluators => (
                    "set of feature extractors (inception.safetensors, clip/, csd.safetensors)"
                        .to_string(),
                    write_tiny_evaluators(&dir, seed),
                ),
                TinyKindArg::Captioner => {
                    ("BLIP captioner".to_string(), write_tiny_blip(&dir, seed))
                }
            };
            match result {
                Ok(()) => {
                    println!(
                        "wrote a tiny random {what} (seed {seed}) to {}",
                        dir.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_FAILED))
                }
            }
        }
    }
}
