//! One file per subcommand. Each returns the process exit code.

pub mod bench;
pub mod cache;
pub mod caption;
pub mod dag;
pub mod eval;
pub mod explain;
pub mod export;
pub mod model;
pub mod plan;
pub mod run;
pub mod runs;
pub mod sample;
pub mod schema;

use std::path::Path;
use std::process::ExitCode;

use nsync_cache::Store;
use nsync_engine::{Pipeline, Registry};

use crate::cli::{Cli, Command};

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let cache_dir = crate::cache_dir::resolve(cli.global.cache_dir.clone());
    let registry = nsync_nodes::registry();
    match cli.command {
        Command::Run(a) => run::run(&registry, &cache_dir, a),
        Command::Plan { pipeline, json } => plan::plan(&registry, &cache_dir, &pipeline, json),
        Command::Explain {
            pipeline,
            node,
            json,
        } => explain::explain(&registry, &cache_dir, &pipeline, &node, json),
        Command::Export {
            pipeline,
            node,
            to,
            port,
        } => export::export(
            &registry,
            &cache_dir,
            &pipeline,
            &node,
            &to,
            port.as_deref(),
        ),
        Command::Eval(a) => eval::eval(a),
        Command::Dag { pipeline, format } => dag::dag(&registry, &pipeline, format),
        Command::Runs { command } => runs::runs(&cache_dir, command),
        Command::Cache { command } => cache::cache(&cache_dir, command),
        Command::Schema => schema::schema(&registry),
        Command::Check { pipeline } => Ok(match load(&registry, &pipeline, false) {
            Ok(p) => {
                println!(
                    "{}: valid pipeline `{}` with {} nodes",
                    pipeline.display(),
                    p.name,
                    p.nodes.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Command::Sample(a) => sample::sample(a),
        Command::Caption(a) => caption::caption(a),
        Command::Model { command } => model::model(command),
        Command::Bench { command } => bench::bench(command),
    }
}

/// Load and validate a pipeline; on failure print the diagnostics and give exit code 2.
pub fn load(registry: &Registry, path: &Path, json: bool) -> Result<Pipeline, ExitCode> {
    match nsync_engine::load_pipeline(path, registry) {
        Ok(p) => Ok(p),
        Err(e) => {
            crate::render::diagnostics::print(&e);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "summary", "status": "invalid", "errors": e.plain_lines()})
                );
            }
            Err(ExitCode::from(EXIT_INVALID))
        }
    }
}

pub fn open_store(cache_dir: &Path) -> anyhow::Result<Store> {
    Store::open(cache_dir)
        .map_err(|e| anyhow::anyhow!("cannot open the cache at {}: {e}", cache_dir.display()))
}

/// Exit code for an engine error: unknown node names are usage errors.
pub fn engine_error(e: nsync_engine::EngineError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        nsync_engine::EngineError::UnknownNode { .. } => ExitCode::from(EXIT_INVALID),
        nsync_engine::EngineError::Cache(_) => ExitCode::from(EXIT_FAILED),
    }
}
