//! `nsync runs`: the run records kept in the cache.

use std::path::Path;
use std::process::ExitCode;

use nsync_engine::progress::NodeStatus;
use nsync_engine::run_record::RunRecord;

use super::{open_store, EXIT_FAILED};
use crate::cli::RunsCommand;
use crate::render::table::table;

pub fn runs(cache_dir: &Path, cmd: Option<RunsCommand>) -> anyhow::Result<ExitCode> {
    let store = open_store(cache_dir)?;
    let cmd = cmd.unwrap_or(RunsCommand::List { json: false });
    let resolve = |id: &str| -> anyhow::Result<Option<RunRecord>> {
        Ok(match RunRecord::resolve_id(&store, id)? {
            Some(full) => RunRecord::load(&store, &full)?,
            None => None,
        })
    };
    match cmd {
        RunsCommand::List { json } => {
            let all = RunRecord::all(&store)?;
            if json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "run_id": r.run_id, "pipeline": r.pipeline, "status": r.status,
                            "started": r.started, "finished": r.finished, "pinned": r.pinned,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                println!("no runs recorded in {}", cache_dir.display());
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|r| {
                        let count = |s: NodeStatus| {
                            r.nodes
                                .values()
                                .filter(|n| n.status == s)
                                .count()
                                .to_string()
                        };
                        vec![
                            r.run_id.clone(),
                            r.pipeline.clone(),
                            r.status.clone(),
                            r.finished.clone(),
                            count(NodeStatus::Executed),
                            count(NodeStatus::Cached),
                            if r.pinned {
                                "pinned".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["run", "pipeline", "status", "finished", "executed", "cached", ""],
                        &rows
                    )
                );
            }
        }
        RunsCommand::Show { id, json } => {
            let Some(r) = resolve(&id)? else {
                eprintln!("error: no run `{id}` (see `nsync runs list`)");
                return Ok(ExitCode::from(EXIT_FAILED));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "run {}  pipeline `{}` ({})  {}",
                    r.run_id, r.pipeline, r.file, r.status
                );
                println!(
                    "started {}  finished {}  nsync {}  {} / {} / {} cpus  jobs {}",
                    r.started,
                    r.finished,
                    r.nsync_version,
                    r.hardware.os,
                    r.hardware.arch,
                    r.hardware.cpus,
                    r.jobs
                );
                let rows: Vec<Vec<String>> = r
                    .nodes
                    .iter()
                    .map(|(name, n)| {
                        vec![
                            name.clone(),
                            n.kind.clone(),
                            n.status.as_str().into(),
                            format!("{}/{}/{}", n.items_computed, n.items_cached, n.items_total),
                            format!("{:.2}s", n.seconds),
                            n.key.map(|k| k.short()).unwrap_or_default(),
                            n.outputs
                                .values()
                                .map(|o| o.digest.short())
                                .collect::<Vec<_>>()
                                .join(","),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "node",
                            "kind",
                            "status",
                            "computed/cached/items",
                            "time",
                            "key",
                            "outputs"
                        ],
                        &rows
                    )
                );
                for (name, n) in &r.nodes {
                    if let Some(e) = &n.error {
                        println!("{name}: {e}");
                    }
                }
            }
        }
        RunsCommand::Pin { id } => return set_pin(&store, &id, true, resolve(&id)?),
        RunsCommand::Unpin { id } => return set_pin(&store, &id, false, resolve(&id)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn set_pin(
    store: &nsync_cache::Store,
    id: &str,
    pinned: bool,
    r: Option<RunRecord>,
) -> anyhow::Result<ExitCode> {
    let Some(mut r) = r else {
        eprintln!("error: no run `{id}` (see `nsync runs list`)");
        return Ok(ExitCode::from(EXIT_FAILED));
    };
    r.pinned = pinned;
    r.save(store)?;
    println!(
        "run {} {}",
        r.run_id,
        if pinned {
            "pinned: `cache gc` keeps it"
        } else {
            "unpinned"
        }
    );
    Ok(ExitCode::SUCCESS)
}
