//! The artifact types of the evaluation nodes.

use nsync_engine::artifact::ArtifactType;

/// The metrics table of an `evaluate` node, as JSON (see [`super::report`]).
pub const METRICS: ArtifactType = ArtifactType {
    name: "metrics",
    per_item: false,
    ext: "json",
    doc: "a metrics table (CSD, CMMD, KID, FID per generated set) with the settings of each number, as JSON",
};

/// The same table as Markdown, in the layout of the paper's tables.
pub const METRICS_REPORT: ArtifactType = ArtifactType {
    name: "metrics_report",
    per_item: false,
    ext: "md",
    doc: "a metrics table as Markdown, with the settings of each number",
};

/// A folder of feature-extractor weights (`inception.safetensors`, `clip/`, `csd.safetensors`)
/// as a deterministic tar, made inside a pipeline by `tiny_evaluators`.
pub const EVAL_MODELS: ArtifactType = ArtifactType {
    name: "eval_models",
    per_item: false,
    ext: "tar",
    doc:
        "feature-extractor weights for `evaluate` (inception, clip, csd), as a tar of their folder",
};
