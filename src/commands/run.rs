//! `nsync run`.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::progress::NodeStatus;
use nsync_engine::{execute, Mode, Registry, RunOptions};

use super::{engine_error, load, open_store, EXIT_FAILED};
use crate::cli::RunArgs;
use crate::render::table::table;

pub fn run(registry: &Registry, cache_dir: &Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let p = match load(registry, &a.pipeline, a.json) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = open_store(cache_dir)?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let opts = RunOptions {
        jobs,
        only: a.only,
        until: a.until,
        verify: a.verify,
    };
    let progress = crate::render::progress::for_output(a.json);
    let outcome = match execute(&p, &store, &opts, progress.as_ref(), Mode::Run) {
        Ok(o) => o,
        Err(e) => return Ok(engine_error(e)),
    };
    let r = &outcome.record;
    if a.json {
        let nodes: serde_json::Map<String, serde_json::Value> = r
            .nodes
            .iter()
            .map(|(name, n)| {
                let mut v = serde_json::json!({
                    "status": n.status.as_str(),
                    "items_total": n.items_total,
                    "items_computed": n.items_computed,
                    "items_cached": n.items_cached,
                    "items_rejected": n.items_rejected,
                    "seconds": n.seconds,
                });
                if let Some(e) = &n.error {
                    v["error"] = e.clone().into();
                }
                (name.clone(), v)
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "event": "summary",
                "status": if outcome.ok { "ok" } else { "failed" },
                "run_id": r.run_id,
                "pipeline": r.pipeline,
                "nodes": nodes,
            })
        );
    } else {
        let rows: Vec<Vec<String>> = r
            .nodes
            .iter()
            .map(|(name, n)| {
                vec![
                    name.clone(),
                    n.kind.clone(),
                    n.status.as_str().to_string(),
                    n.items_total.to_string(),
                    n.items_computed.to_string(),
                    n.items_cached.to_string(),
                    format!("{:.2}s", n.seconds),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["node", "kind", "status", "items", "computed", "cached", "time"],
                &rows
            )
        );
        let failed: Vec<&String> = r
            .nodes
            .iter()
            .filter(|(_, n)| n.status == NodeStatus::Failed)
            .map(|(k, _)| k)
            .collect();
        if failed.is_empty() {
            println!(
                "run {} ok; results: nsync export {} <node> --to <dir>",
                r.run_id,
                a.pipeline.display()
            );
        } else {
            for (name, n) in r.nodes.iter().filter(|(_, n)| n.error.is_some()) {
                eprintln!(
                    "error: node `{name}`: {}",
                    n.error.as_deref().unwrap_or_default()
                );
            }
            println!("run {} failed ({} node(s)); everything that finished is cached, so a rerun resumes", r.run_id, failed.len());
        }
    }
    Ok(if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}
