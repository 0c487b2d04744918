//! `caption_model`: a captioning model folder (BLIP, Hugging Face layout) as a pipeline
//! artifact — a deterministic tar of the folder ([`crate::diffusion::model_artifact::pack`]),
//! so the same model always has the same digest and keys downstream stay stable.

use nsync_engine::artifact::ArtifactType;

pub const CAPTION_MODEL: ArtifactType = ArtifactType {
    name: "caption_model",
    per_item: false,
    ext: "tar",
    doc: "a captioning model (BLIP, Hugging Face layout), as a tar of its folder",
};
