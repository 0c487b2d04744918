//! `nsync export`: a node's latest outputs as ordinary files.
//!
//! "Latest" means what the pipeline, as it is now, would hand downstream, if that is fully
//! cached; otherwise the outputs of the node in the last recorded run of this pipeline.
//! Per-item outputs become `<item>.<ext>` files (PNG for images, TXT for texts) plus a
//! `manifest.json`; single outputs become `<port>.<ext>`. Every blob is verified on read.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use nsync_engine::artifact::Artifact;
use nsync_engine::run_record::RunRecord;
use nsync_engine::Registry;

use super::{engine_error, load, open_store, EXIT_FAILED, EXIT_INVALID};

pub fn export(
    registry: &Registry,
    cache_dir: &Path,
    pipeline: &Path,
    node: &str,
    to: &Path,
    port: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let p = match load(registry, pipeline, false) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if p.index_of(node).is_none() {
        let hint =
            nsync_engine::spec::diagnostic::did_you_mean(node, p.node_names()).unwrap_or_default();
        eprintln!("error: pipeline `{}` has no node `{node}` {hint}", p.name);
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let store = open_store(cache_dir)?;
    let plan = match nsync_engine::plan(&p, &store) {
        Ok(o) => o,
        Err(e) => return Ok(engine_error(e)),
    };
    let mut source = "the current pipeline".to_string();
    let artifacts: BTreeMap<String, Artifact> = match plan.artifacts.get(node) {
        Some(a) => a.clone(),
        None => {
            let last = RunRecord::latest_with(&store, &p.name, Some(node))?;
            let loaded = last.as_ref().and_then(|r| {
                let n = r.nodes.get(node)?;
                if n.outputs.is_empty() {
                    return None;
                }
                n.outputs
                    .iter()
                    .map(|(k, o)| {
                        Artifact::load(&store, o)
                            .ok()
                            .filter(|a| a.present(&store))
                            .map(|a| (k.clone(), a))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()
            });
            match (loaded, last) {
                (Some(a), Some(r)) => {
                    eprintln!("note: node `{node}` is not up to date with the pipeline file; exporting its outputs from run {}", r.run_id);
                    source = format!("run {}", r.run_id);
                    a
                }
                _ => {
                    eprintln!(
                        "error: node `{node}` has no results in the cache yet; run `nsync run {}` (or `--until {node}`) first",
                        pipeline.display()
                    );
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
        }
    };
    let chosen: Vec<(&String, &Artifact)> = artifacts
        .iter()
        .filter(|(k, _)| port.is_none_or(|p| p == k.as_str()))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "error: node `{node}` has no output `{}`; its outputs: {}",
            port.unwrap_or_default(),
            artifacts.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let nested = chosen.len() > 1;
    let mut written = 0usize;
    for (port, art) in chosen {
        let out = if nested {
            to.join(port)
        } else {
            to.to_path_buf()
        };
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let ty = registry
            .artifact_type(&art.output().ty)
            .map(|t| t.ext)
            .unwrap_or("bin");
        match art {
            Artifact::Items { items, .. } => {
                let mut manifest = Vec::new();
                for (id, blob) in items.iter() {
                    let bytes = store
                        .get_blob(&blob.digest)
                        .with_context(|| format!("item `{id}` of node `{node}`"))?;
                    let file = out.join(format!("{id}.{ty}"));
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&file, bytes)
                        .with_context(|| format!("cannot write {}", file.display()))?;
                    manifest.push(serde_json::json!({"item": id, "file": format!("{id}.{ty}"), "blake3": blob.digest}));
                    written += 1;
                }
                std::fs::write(
                    out.join("manifest.json"),
                    serde_json::to_string_pretty(&manifest)?,
                )?;
            }
            Artifact::Blob { output } => {
                let bytes = store.get_blob(&output.digest)?;
                let file = out.join(format!("{port}.{ty}"));
                std::fs::write(&file, bytes)
                    .with_context(|| format!("cannot write {}", file.display()))?;
                written += 1;
            }
        }
    }
    println!(
        "exported {written} file(s) of node `{node}` (from {source}) to {}",
        to.display()
    );
    Ok(ExitCode::SUCCESS)
}
