//! `nsync explain`: why a node would rerun.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::Registry;

use super::{engine_error, load, open_store};

pub fn explain(
    registry: &Registry,
    cache_dir: &Path,
    pipeline: &Path,
    node: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let p = match load(registry, pipeline, json) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = open_store(cache_dir)?;
    let x = match nsync_engine::explain::explain(&p, &store, node) {
        Ok(x) => x,
        Err(e) => return Ok(engine_error(e)),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "node": x.node,
                "status": x.status.as_str(),
                "compared_with_run": x.previous_run,
                "reasons": x.reasons,
            })
        );
    } else {
        let verdict = match x.status {
            nsync_engine::progress::NodeStatus::Cached => "is up to date",
            _ => "would run",
        };
        match &x.previous_run {
            Some(r) => println!("node `{}` {verdict} (compared with run {r}):", x.node),
            None => println!("node `{}` {verdict}:", x.node),
        }
        for r in &x.reasons {
            println!("  {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
