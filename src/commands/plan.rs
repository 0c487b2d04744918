//! `nsync plan`: what `run` would do.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::progress::NodeStatus;
use nsync_engine::Registry;

use super::{engine_error, load, open_store};
use crate::render::table::table;

pub fn plan(
    registry: &Registry,
    cache_dir: &Path,
    pipeline: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let p = match load(registry, pipeline, json) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = open_store(cache_dir)?;
    let outcome = match nsync_engine::plan(&p, &store) {
        Ok(o) => o,
        Err(e) => return Ok(engine_error(e)),
    };
    let describe = |n: &nsync_engine::run_record::NodeRecord| -> (String, Option<usize>) {
        match n.status {
            NodeStatus::Cached => ("cached".into(), Some(0)),
            NodeStatus::WillRun if n.fingerprint.is_none() => ("run (after upstream)".into(), None),
            NodeStatus::WillRun => ("run".into(), Some(n.items_total - n.items_cached)),
            NodeStatus::Failed => (
                format!("error: {}", n.error.as_deref().unwrap_or_default()),
                None,
            ),
            s => (s.as_str().into(), None),
        }
    };
    if json {
        let nodes: serde_json::Map<String, serde_json::Value> = outcome
            .record
            .nodes
            .iter()
            .map(|(name, n)| {
                let (action, to_compute) = describe(n);
                (
                    name.clone(),
                    serde_json::json!({
                        "kind": n.kind,
                        "action": if n.status == NodeStatus::Cached { "cached" } else if n.status == NodeStatus::Failed { "error" } else { "run" },
                        "detail": action,
                        "items_total": n.fingerprint.as_ref().map(|_| n.items_total),
                        "items_cached": n.fingerprint.as_ref().map(|_| n.items_cached),
                        "items_to_compute": to_compute,
                        "error": n.error,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"pipeline": p.name, "nodes": nodes})
        );
    } else {
        let rows: Vec<Vec<String>> = outcome
            .record
            .nodes
            .iter()
            .map(|(name, n)| {
                let (action, to_compute) = describe(n);
                let known = n.fingerprint.is_some();
                vec![
                    name.clone(),
                    n.kind.clone(),
                    action,
                    if known {
                        n.items_total.to_string()
                    } else {
                        "?".into()
                    },
                    if known {
                        n.items_cached.to_string()
                    } else {
                        "?".into()
                    },
                    to_compute.map_or("?".into(), |c| c.to_string()),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["node", "kind", "action", "items", "cached", "to compute"],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
