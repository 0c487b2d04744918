//! `evaluate`: the paper's metrics of any number of generated image sets against one real
//! test set (whole node), as a JSON table and a Markdown table with the settings of every
//! number.
//!
//! Inputs: `real` (the test images), one input per generated set under any name (the name
//! is the row's label: `inputs = { real = "test_images", sd = "baseline", nsync =
//! "generated" }`), and optionally `models` (feature-extractor weights made in the pipeline
//! by `tiny_evaluators`). Otherwise the `inception`, `clip` and `csd` parameters name
//! `[models]` entries with the published weights. Per-image features are cached through
//! the engine's memo, so adding images extracts only their features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nsync_cache::{Digest, FramedHasher};
use nsync_engine::artifact::IMAGES;
use nsync_engine::node::{
    BuildCx, Exec, InputSpec, Node, NodeError, NodeKind, OutputSpec, Whole, WholeCx,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::artifacts::{EVAL_MODELS, METRICS, METRICS_REPORT};
use super::evaluator::{EvalSettings, EvalWeights, Evaluator, ImageRef, ImageSet, WeightsRef};
use super::extractor::{FidBackbone, FidResize};
use super::report::Metric;
use crate::diffusion::model_artifact::unpack;
use crate::diffusion::model_source::key_params_without;
use crate::sources::decode::{decode_rgb8, AlphaMode};

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// Which metrics to compute, in the table's column order.
    #[serde(default = "all_metrics")]
    #[schemars(example = serde_json::json!(["csd", "cmmd", "kid", "fid"]))]
    pub metrics: Vec<Metric>,
    /// A `[models]` entry with the Inception weights for FID/KID: pytorch-fid's
    /// `pt_inception-2015-12-05-6726825d.pth` (or torchvision's `inception_v3_google-0cc3c7bd.pth`
    /// with `fid_backbone = "torchvision"`), or a safetensors file with the same names.
    #[serde(default)]
    #[schemars(example = &"inception")]
    pub inception: Option<String>,
    /// A `[models]` entry with CLIP ViT-L/14-336 for CMMD: a Hugging Face folder of
    /// `openai/clip-vit-large-patch14-336` (`config.json`, `model.safetensors`).
    #[serde(default)]
    #[schemars(example = &"clip336")]
    pub clip: Option<String>,
    /// A `[models]` entry with the CSD checkpoint (the authors' `checkpoint.pth`, or a
    /// safetensors file with the same keys).
    #[serde(default)]
    #[schemars(example = &"csd")]
    pub csd: Option<String>,
    /// `tf2015` (standard FID, pytorch-fid's network) or `torchvision` (the backbone of the
    /// paper's own FID/KID numbers).
    #[serde(default)]
    #[schemars(example = &"tf2015")]
    pub fid_backbone: FidBackbone,
    /// `pytorch_fid` (bilinear without antialias) or `clean` (clean-fid's PIL bicubic).
    #[serde(default)]
    #[schemars(example = &"pytorch_fid")]
    pub fid_resize: FidResize,
    /// KID: number of random subsets.
    #[serde(default = "default_subsets")]
    #[schemars(example = 100)]
    pub kid_subsets: usize,
    /// KID: images per subset; default `min(n_real, n_fake, 1000)` (a note says when the
    /// default 1000 is reduced).
    #[serde(default)]
    #[schemars(example = 1000)]
    pub kid_subset_size: Option<usize>,
    /// Bootstrap replicates for confidence intervals of every metric (0: none).
    #[serde(default)]
    #[schemars(example = 200)]
    pub bootstrap: usize,
    /// Confidence level of the bootstrap intervals.
    #[serde(default = "default_confidence")]
    #[schemars(example = 0.95)]
    pub confidence: f64,
    /// Images per forward pass (never changes a number).
    #[serde(default = "default_batch")]
    #[schemars(example = 16)]
    pub batch_size: usize,
}

fn all_metrics() -> Vec<Metric> {
    Metric::ALL.to_vec()
}
fn default_subsets() -> usize {
    100
}
fn default_confidence() -> f64 {
    0.95
}
fn default_batch() -> usize {
    16
}

pub struct EvaluateKind;

impl NodeKind for EvaluateKind {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn doc(&self) -> &'static str {
        "CSD, CMMD, KID and FID of generated image sets (one input each, named as you like) against the `real` test images; a JSON and a Markdown table."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(EvaluateParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec {
                name: "real".into(),
                ty: IMAGES,
                required: true,
                doc: "The real test images.".into(),
            },
            InputSpec {
                name: "models".into(),
                ty: EVAL_MODELS,
                required: false,
                doc: "Feature-extractor weights made in the pipeline (`tiny_evaluators`), used for every network not named by a parameter.".into(),
            },
        ]
    }
    fn free_inputs(&self) -> bool {
        true
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: EvaluateParams = typed_params(params)?;
        if p.metrics.is_empty() {
            return Err(BuildError::at(&["metrics"], "`metrics` is empty")
                .help("list some of \"csd\", \"cmmd\", \"kid\", \"fid\""));
        }
        if p.kid_subsets == 0 {
            return Err(BuildError::at(
                &["kid_subsets"],
                "`kid_subsets` must be at least 1",
            ));
        }
        if p.kid_subset_size.is_some_and(|s| s < 2) {
            return Err(BuildError::at(
                &["kid_subset_size"],
                "`kid_subset_size` must be at least 2",
            ));
        }
        if !(p.confidence > 0.0 && p.confidence < 1.0) {
            return Err(BuildError::at(
                &["confidence"],
                "`confidence` must be between 0 and 1 (e.g. 0.95)",
            ));
        }
        let sets: Vec<String> = cx
            .connected_inputs
            .iter()
            .filter(|i| *i != "real" && *i != "models")
            .cloned()
            .collect();
        if sets.is_empty() {
            return Err(BuildError::at(&[], "evaluate has no generated sets to evaluate").help(
                "connect one input per generated set, e.g. `inputs = { real = \"test_images\", nsync = \"generated\" }`",
            ));
        }
        let has_models_input = cx.connected_inputs.iter().any(|i| i == "models");
        let mut paths = BTreeMap::new();
        for (what, param) in [
            ("inception", &p.inception),
            ("clip", &p.clip),
            ("csd", &p.csd),
        ] {
            if let Some(name) = param {
                paths.insert(what, cx.models.get(name).cloned().unwrap_or_default());
            }
        }
        let needs = |what: &str| match what {
            "inception" => p
                .metrics
                .iter()
                .any(|m| matches!(m, Metric::Fid | Metric::Kid)),
            "clip" => p.metrics.contains(&Metric::Cmmd),
            _ => p.metrics.contains(&Metric::Csd),
        };
        if !has_models_input {
            for what in ["inception", "clip", "csd"] {
                if needs(what) && !paths.contains_key(what) {
                    return Err(BuildError::at(&[], format!("evaluate needs `{what}` weights for the chosen metrics"))
                        .help(format!("set `{what} = \"<name>\"` naming a [models] entry (see README: where to get the weights), connect `inputs.models` to a `tiny_evaluators` node, or drop the metric from `metrics`")));
                }
            }
        }
        Ok(Box::new(Evaluate { p, sets, paths }))
    }
}

pub struct Evaluate {
    p: EvaluateParams,
    /// Generated sets, in the pipeline's order (the table's rows).
    sets: Vec<String>,
    /// Weights named by parameters, resolved.
    paths: BTreeMap<&'static str, PathBuf>,
}

impl Node for Evaluate {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        let mut v = EvaluateKind.declared_inputs();
        v.extend(self.sets.iter().map(|s| InputSpec {
            name: s.clone(),
            ty: IMAGES,
            required: false,
            doc: format!("Generated set `{s}`."),
        }));
        v
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec {
                name: "metrics",
                ty: METRICS,
            },
            OutputSpec {
                name: "report",
                ty: METRICS_REPORT,
            },
        ]
    }
    fn key_params(&self) -> serde_json::Value {
        // Weights enter the key by digest; the row order is part of the result.
        let mut v = key_params_without(&self.p, &["batch_size", "inception", "clip", "csd"]);
        v["sets"] = serde_json::json!(self.sets);
        v
    }
    fn models(&self) -> Vec<String> {
        [&self.p.inception, &self.p.clip, &self.p.csd]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
    fn uses_seed(&self) -> bool {
        self.p.metrics.contains(&Metric::Kid) || self.p.bootstrap > 0
    }
    fn heavy(&self) -> bool {
        true
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Whole(self)
    }
}

/// The file (or folder) of each network inside a `tiny_evaluators` folder.
pub fn bundled_path(dir: &Path, what: &str) -> PathBuf {
    match what {
        "clip" => dir.join("clip"),
        other => dir.join(format!("{other}.safetensors")),
    }
}

impl Whole for Evaluate {
    fn run(&self, cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let err = |e: &dyn std::fmt::Display| NodeError::msg(e.to_string());
        // Weights: named by parameters, else from the `models` input.
        let bundle = match cx.inputs.get("models") {
            Some(a) => Some((
                unpack(&cx.store.get_blob(&a.digest())?).map_err(|e| err(&e))?,
                a.digest(),
            )),
            None => None,
        };
        let mut weights = EvalWeights::default();
        for what in ["inception", "clip", "csd"] {
            let w = match (self.paths.get(what), &bundle) {
                (Some(path), _) => Some(WeightsRef {
                    path: path.clone(),
                    digest: nsync_engine::model_digest::model_digest(cx.store.files(), path)
                        .map_err(|e| err(&e))?,
                }),
                (None, Some((dir, digest))) => Some(WeightsRef {
                    path: bundled_path(dir.path(), what),
                    digest: FramedHasher::new("nsync.eval-models.v1")
                        .digest(1, digest)
                        .str(2, what)
                        .finish(),
                }),
                (None, None) => None,
            };
            match what {
                "inception" => weights.inception = w,
                "clip" => weights.clip = w,
                _ => weights.csd = w,
            }
        }
        let set = |port: &str| -> Result<ImageSet<'_>, NodeError> {
            let items = cx
                .inputs
                .get(port)
                .and_then(|a| a.items())
                .ok_or_else(|| NodeError::msg(format!("input `{port}` is missing")))?;
            Ok(ImageSet {
                name: port.to_string(),
                images: items
                    .iter()
                    .map(|(id, b)| {
                        let digest: Digest = b.digest;
                        ImageRef {
                            id: id.clone(),
                            digest,
                            load: Box::new(move || {
                                let bytes =
                                    cx.store.get_blob(&digest).map_err(|e| e.to_string())?;
                                decode_rgb8(&bytes, AlphaMode::Drop)
                            }),
                        }
                    })
                    .collect(),
            })
        };
        let real = set("real")?;
        let fakes = self
            .sets
            .iter()
            .map(|s| set(s))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = EvalSettings {
            metrics: self.p.metrics.clone(),
            fid_backbone: self.p.fid_backbone,
            fid_resize: self.p.fid_resize,
            kid_subsets: self.p.kid_subsets,
            kid_subset_size: self.p.kid_subset_size,
            bootstrap: self.p.bootstrap,
            confidence: self.p.confidence,
            seed: cx.seed,
            batch_size: self.p.batch_size,
        };
        let hint = |what: &'static str| {
            format!(
                "set the node's `{what}` parameter to a [models] entry, or connect `inputs.models`"
            )
        };
        let ev = Evaluator {
            settings: &settings,
            weights: &weights,
            device: crate::diffusion::sd_sample::device(),
            cache: cx.memo,
            status: cx.status,
            weight_hint: &hint,
        };
        let table = ev.run(&real, &fakes).map_err(|e| err(&e))?;
        for n in &table.notes {
            (cx.warn)(n.clone());
        }
        Ok(BTreeMap::from([
            ("metrics".to_string(), table.to_json()),
            ("report".to_string(), table.to_markdown().into_bytes()),
        ]))
    }
}
