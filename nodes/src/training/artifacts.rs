//! The artifact types the trainer produces.

use nsync_engine::artifact::ArtifactType;

/// Learned token embeddings in diffusers' `learned_embeds.safetensors` layout
/// (`{"<token>": F32[n_vectors, dim]}`), loadable by `load_textual_inversion`.
pub const EMBEDDING: ArtifactType = ArtifactType {
    name: "embedding",
    per_item: false,
    ext: "safetensors",
    doc: "learned token embeddings, diffusers' learned_embeds.safetensors layout",
};

/// LoRA weights for the UNet in the diffusers/PEFT layout (`pytorch_lora_weights.safetensors`:
/// `unet.<module>.lora_A.weight` / `.lora_B.weight`), loadable by diffusers'
/// `load_lora_weights` (see [`crate::diffusion::lora`]).
pub const LORA: ArtifactType = ArtifactType {
    name: "lora",
    per_item: false,
    ext: "safetensors",
    doc: "LoRA weights for the UNet, diffusers/PEFT layout (pytorch_lora_weights.safetensors)",
};

/// Training curves, one JSON object per step.
pub const CURVES: ArtifactType = ArtifactType {
    name: "curves",
    per_item: false,
    ext: "jsonl",
    doc: "training curves, one JSON line per step",
};
