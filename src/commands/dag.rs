//! `nsync dag`: the pipeline graph as DOT, Mermaid or JSON.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::{dag, Registry};

use super::load;
use crate::cli::DagFormat;

pub fn dag(registry: &Registry, pipeline: &Path, format: DagFormat) -> anyhow::Result<ExitCode> {
    let p = match load(registry, pipeline, false) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    match format {
        DagFormat::Dot => print!("{}", dag::to_dot(&p)),
        DagFormat::Mermaid => print!("{}", dag::to_mermaid(&p)),
        DagFormat::Json => println!("{}", serde_json::to_string_pretty(&dag::to_json(&p))?),
    }
    Ok(ExitCode::SUCCESS)
}
