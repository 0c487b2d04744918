//! `nsync model init-tiny`.

use std::process::ExitCode;

use nsync_nodes::diffusion::tiny::{write_tiny, TinyVariant};

use super::EXIT_FAILED;
use crate::cli::{ModelCommand, TinyVariantArg};

pub fn model(cmd: ModelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::InitTiny { dir, seed, variant } => {
            let v = match variant {
                TinyVariantArg::Sd15 => TinyVariant::Sd15,
                TinyVariantArg::Sd2 => TinyVariant::Sd2,
            };
            match write_tiny(&dir, seed, v) {
                Ok(()) => {
                    println!(
                        "wrote a tiny random {v:?} model (seed {seed}) to {}",
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
