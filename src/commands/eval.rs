//! `nsync eval`: the metrics of generated image folders against a real one, outside any
//! pipeline — the same evaluator as the `evaluate` node, without the cache.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use nsync_cache::Digest;
use nsync_nodes::evaluation::evaluator::{
    EvalSettings, EvalWeights, Evaluator, ImageRef, ImageSet, NoCache, WeightsRef,
};
use nsync_nodes::evaluation::extractor::{FidBackbone, FidResize};
use nsync_nodes::evaluation::report::Metric;
use nsync_nodes::sources::decode::{decode_rgb8, AlphaMode};
use nsync_nodes::sources::images::list_images;

use crate::cli::EvalArgs;

fn image_set(name: &str, dir: &Path) -> anyhow::Result<ImageSet<'static>> {
    let files = list_images(dir, true).map_err(|e| anyhow::anyhow!("{e}"))?;
    if files.is_empty() {
        bail!(
            "{}: no images (JPEG, PNG, WebP, TIFF, BMP, GIF) found",
            dir.display()
        );
    }
    let images = files
        .into_iter()
        .map(|(id, path)| -> anyhow::Result<ImageRef<'static>> {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let digest = Digest::of(&bytes);
            let shown = path.display().to_string();
            Ok(ImageRef {
                id,
                digest,
                load: Box::new(move || {
                    decode_rgb8(&bytes, AlphaMode::Drop).map_err(|e| format!("{shown}: {e}"))
                }),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ImageSet {
        name: name.to_string(),
        images,
    })
}

fn weights(path: &Option<PathBuf>) -> anyhow::Result<Option<WeightsRef>> {
    let Some(p) = path else { return Ok(None) };
    let files = nsync_cache::FileDigester::unmemoised();
    let digest =
        nsync_engine::model_digest::model_digest(&files, p).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(WeightsRef {
        path: p.clone(),
        digest,
    }))
}

pub fn eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let metrics = a
        .metrics
        .iter()
        .map(|m| {
            Metric::parse(m.trim()).with_context(|| {
                format!("--metrics: unknown metric `{m}`; choose from csd, cmmd, kid, fid")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings = EvalSettings {
        metrics,
        fid_backbone: match a.fid_backbone.as_str() {
            "torchvision" => FidBackbone::Torchvision,
            _ => FidBackbone::Tf2015,
        },
        fid_resize: match a.fid_resize.as_str() {
            "clean" => FidResize::Clean,
            _ => FidResize::PytorchFid,
        },
        kid_subsets: a.kid_subsets.max(1),
        kid_subset_size: a.kid_subset_size,
        bootstrap: a.bootstrap,
        confidence: a.confidence,
        seed: a.seed,
        batch_size: a.batch_size.max(1),
    };
    let real = image_set("real", &a.real)?;
    let fakes = a
        .fake
        .iter()
        .map(|f| match f.split_once('=') {
            Some((name, dir)) if !name.is_empty() && !Path::new(f).exists() => {
                image_set(name, Path::new(dir))
            }
            _ => {
                let p = Path::new(f);
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.clone());
                image_set(&name, p)
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let w = EvalWeights {
        inception: weights(&a.inception)?,
        clip: weights(&a.clip)?,
        csd: weights(&a.csd)?,
    };
    let status = |m: String| eprintln!("{m}");
    let hint = |what: &'static str| {
        format!("pass --{what} PATH (see README: where to get the evaluation weights), or leave the metric out of --metrics")
    };
    let ev = Evaluator {
        settings: &settings,
        weights: &w,
        device: nsync_nodes::diffusion::sd_sample::device(),
        cache: &NoCache,
        status: &status,
        weight_hint: &hint,
    };
    let table = ev.run(&real, &fakes)?;
    for n in &table.notes {
        eprintln!("note: {n}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&table)?);
    } else {
        print!("{}", table.to_markdown());
    }
    Ok(ExitCode::SUCCESS)
}
