//! What flows along the edges: typed artifacts, either one blob per item or one blob.
//!
//! A per-item artifact is a *manifest* (stored as a blob itself) mapping item ids to the
//! digests of their content. Downstream keys use these digests (per item) or the manifest's
//! digest (whole nodes), so a rerun that reproduces the same bytes stops the cascade there
//! (early cutoff).

use std::collections::BTreeMap;
use std::sync::Arc;

use nsync_cache::{atomic::Durability, CacheError, Digest, Store};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The type of a port. Ports connect only when their types are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArtifactType {
    pub name: &'static str,
    /// One blob per item (images, texts) or a single blob (an embedding, a metrics table).
    pub per_item: bool,
    /// File extension used by `nsync export`.
    pub ext: &'static str,
    pub doc: &'static str,
}

/// RGB8 PNG images, one per item.
pub const IMAGES: ArtifactType = ArtifactType {
    name: "images",
    per_item: true,
    ext: "png",
    doc: "one RGB8 PNG image per item",
};

/// UTF-8 text, one per item (captions, prompts).
pub const TEXTS: ArtifactType = ArtifactType {
    name: "texts",
    per_item: true,
    ext: "txt",
    doc: "one UTF-8 text per item",
};

/// Every type the engine itself knows; node crates add their own through the registry.
pub const BUILTIN_TYPES: &[ArtifactType] = &[IMAGES, TEXTS];

/// A reference to stored content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
}

/// A node's output on one port, as recorded in the index and in run records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    #[serde(rename = "type")]
    pub ty: String,
    pub per_item: bool,
    /// The manifest (per-item) or the content (whole).
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
}

/// A loaded artifact, ready for a node to read.
#[derive(Clone, Debug)]
pub enum Artifact {
    Items {
        output: OutputRef,
        items: Arc<BTreeMap<String, BlobRef>>,
    },
    Blob {
        output: OutputRef,
    },
}

impl Artifact {
    pub fn output(&self) -> &OutputRef {
        match self {
            Artifact::Items { output, .. } | Artifact::Blob { output } => output,
        }
    }

    pub fn digest(&self) -> Digest {
        self.output().digest
    }

    pub fn items(&self) -> Option<&BTreeMap<String, BlobRef>> {
        match self {
            Artifact::Items { items, .. } => Some(items),
            Artifact::Blob { .. } => None,
        }
    }

    /// Load an output: for per-item outputs, read and verify the manifest.
    pub fn load(store: &Store, output: &OutputRef) -> Result<Artifact, CacheError> {
        if !output.per_item {
            return Ok(Artifact::Blob {
                output: output.clone(),
            });
        }
        let bytes = store.get_blob(&output.digest)?;
        let items = parse_manifest(&bytes).map_err(|e| CacheError::Json {
            what: format!("manifest {}", output.digest),
            source: e,
        })?;
        Ok(Artifact::Items {
            output: output.clone(),
            items: Arc::new(items),
        })
    }

    /// Store a per-item manifest and return the artifact.
    pub fn store_items(
        store: &Store,
        ty: &str,
        items: BTreeMap<String, BlobRef>,
    ) -> Result<Artifact, CacheError> {
        let bytes = manifest_bytes(ty, &items);
        let digest = store.put_blob(&bytes, Durability::Batched)?;
        Ok(Artifact::Items {
            output: OutputRef {
                ty: ty.to_string(),
                per_item: true,
                digest,
                size: bytes.len() as u64,
                items: Some(items.len()),
            },
            items: Arc::new(items),
        })
    }

    /// True when every blob this artifact refers to is present with the right size.
    pub fn present(&self, store: &Store) -> bool {
        match self {
            Artifact::Items { items, .. } => {
                let blobs: Vec<&BlobRef> = items.values().collect();
                blobs.par_iter().all(|b| store.has_blob(&b.digest, b.size))
            }
            Artifact::Blob { output } => store.has_blob(&output.digest, output.size),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    #[serde(rename = "type")]
    ty: String,
    items: Vec<(String, Digest, u64)>,
}

/// Canonical manifest bytes: items sorted by id (a `BTreeMap` iterates in order).
pub fn manifest_bytes(ty: &str, items: &BTreeMap<String, BlobRef>) -> Vec<u8> {
    let m = Manifest {
        ty: ty.to_string(),
        items: items
            .iter()
            .map(|(k, b)| (k.clone(), b.digest, b.size))
            .collect(),
    };
    serde_json::to_vec(&m).expect("manifest serialises")
}

pub fn parse_manifest(bytes: &[u8]) -> Result<BTreeMap<String, BlobRef>, serde_json::Error> {
    let m: Manifest = serde_json::from_slice(bytes)?;
    Ok(m.items
        .into_iter()
        .map(|(k, digest, size)| (k, BlobRef { digest, size }))
        .collect())
}
