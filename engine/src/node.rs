//! The contract between the engine and a node implementation.
//!
//! A [`NodeKind`] (registered once) validates a node's parameters and builds a [`Node`].
//! A node is either *per-item* ([`PerItem`]: one output per item, computed only for the
//! items whose keys are missing, in batches, each committed as soon as it is done) or
//! *whole* ([`Whole`]: one result from all inputs, e.g. training or a metric). Nodes never
//! print: warnings go through the context, progress is reported by the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nsync_cache::{CacheError, Digest, FileDigester, Store};

use crate::artifact::{Artifact, ArtifactType};
use crate::params::BuildError;

/// A declared input port.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub ty: ArtifactType,
    pub required: bool,
    pub doc: String,
}

/// A declared output port. The first one is the node's default output.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    pub name: &'static str,
    pub ty: ArtifactType,
}

/// What `build` may look at besides the parameters.
pub struct BuildCx<'a> {
    /// Relative paths in parameters resolve against this folder (the pipeline file's).
    pub pipeline_dir: &'a Path,
    /// The input ports the pipeline connects, by name.
    pub connected_inputs: &'a [String],
    /// The pipeline's `[models]`: name → local path (resolved against the pipeline folder).
    pub models: &'a indexmap::IndexMap<String, PathBuf>,
}

/// A kind of node, registered once in the [`crate::Registry`].
pub trait NodeKind: Send + Sync {
    /// The `kind = "..."` string.
    fn kind(&self) -> &'static str;
    /// One paragraph for `nsync schema` and error hints.
    fn doc(&self) -> &'static str;
    /// JSON Schema of the parameters (every field documented with an example).
    fn params_schema(&self) -> schemars::Schema;
    /// Input ports known before building (empty for nodes whose inputs are free-form).
    fn declared_inputs(&self) -> Vec<InputSpec>;
    /// True when any input name is accepted (e.g. template variables).
    fn free_inputs(&self) -> bool {
        false
    }
    /// Validate `params` (the node's table without `kind`, `inputs`, `salt`) and build.
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError>;
}

/// A built node: everything the engine needs to key, schedule and run it.
pub trait Node: Send + Sync {
    /// Implementation version: bump when the same inputs would give different outputs.
    fn version(&self) -> u32;
    fn inputs(&self) -> Vec<InputSpec>;
    fn outputs(&self) -> Vec<OutputSpec>;
    /// The parameters that change results, as JSON (typed, so `1` and `1.0` agree).
    /// Paths, batch sizes and error policies stay out.
    fn key_params(&self) -> serde_json::Value;
    /// Whether the pipeline seed (and per-item seeds) affect the result.
    fn uses_seed(&self) -> bool {
        false
    }
    /// Names of the pipeline's `[models]` this node loads. Their weights' digests enter its
    /// keys, so replacing a weight file reruns exactly the nodes that use it.
    fn models(&self) -> Vec<String> {
        Vec::new()
    }
    /// Holds a large model: the scheduler never runs two such nodes at once.
    fn heavy(&self) -> bool {
        false
    }
    fn exec(&self) -> Exec<'_>;
}

pub enum Exec<'a> {
    PerItem(&'a dyn PerItem),
    Whole(&'a dyn Whole),
}

/// The resolved inputs of a node, by port name.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub ports: BTreeMap<String, Artifact>,
}

impl Inputs {
    pub fn get(&self, port: &str) -> Option<&Artifact> {
        self.ports.get(port)
    }
}

/// One unit of per-item work.
#[derive(Clone, Debug)]
pub struct WorkItem {
    /// Item identity (e.g. the image's file stem). Stable across runs.
    pub id: String,
    /// Named digests of everything item-specific that determines the result (the content of
    /// its inputs). Together with the node's fingerprint they make the item's key.
    pub fields: BTreeMap<String, Digest>,
    /// For source nodes: the file the item comes from (never part of the key).
    pub source: Option<PathBuf>,
    /// Content already read while enumerating (e.g. a caption from a JSONL file), handed
    /// to the worker so it need not read it again. Its digest must be among `fields`.
    pub inline: Option<Vec<u8>>,
}

/// What an item produced.
#[derive(Debug)]
pub enum ItemOutcome {
    /// Output bytes per output port.
    Done(BTreeMap<String, Vec<u8>>),
    /// The input itself is unusable (an undecodable image). Cached like a result: the same
    /// content is never retried; the node's [`RejectPolicy`] decides skip or fail.
    Rejected(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectPolicy {
    /// Leave the item out with a warning.
    Skip,
    /// Fail the node (after committing the good items).
    Fail,
}

/// Context for enumerating items.
pub struct ItemsCx<'a> {
    pub inputs: &'a Inputs,
    pub files: &'a FileDigester,
    pub warn: &'a (dyn Fn(String) + Sync),
}

/// Context while processing items.
pub struct ItemCx<'a> {
    pub store: &'a Store,
    pub inputs: &'a Inputs,
    pub seed: u64,
    /// Report what the worker is doing inside a batch (`"step 12/50"`), shown beside the
    /// node's progress bar.
    pub status: &'a (dyn Fn(String) + Sync),
}

impl ItemCx<'_> {
    /// Read (and verify) the content of item `id` on input `port`.
    pub fn read(&self, port: &str, id: &str) -> Result<Vec<u8>, NodeError> {
        let art = self
            .inputs
            .get(port)
            .ok_or_else(|| NodeError::msg(format!("no input `{port}`")))?;
        let blob = art
            .items()
            .and_then(|m| m.get(id))
            .ok_or_else(|| NodeError::msg(format!("input `{port}` has no item `{id}`")))?;
        Ok(self.store.get_blob(&blob.digest)?)
    }

    /// The seed for one item: from the pipeline seed and the item's id only, so adding or
    /// removing other items never changes it.
    pub fn item_seed(&self, id: &str) -> u64 {
        item_seed(self.seed, id)
    }
}

pub fn item_seed(seed: u64, id: &str) -> u64 {
    nsync_cache::FramedHasher::new("nsync.item-seed.v1")
        .u64(1, seed)
        .str(2, id)
        .finish()
        .to_u64()
}

/// A per-item node.
pub trait PerItem: Send + Sync {
    /// The items to produce, with their key fields. Default: the items common to all
    /// per-item inputs, keyed by their input digests.
    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        join_items(cx.inputs)
    }
    fn reject_policy(&self) -> RejectPolicy {
        RejectPolicy::Fail
    }
    /// How many missing items are handed to the worker at once.
    fn batch_size(&self) -> usize {
        64
    }
    /// Prepare to compute (load models). Called once per run, only if an item is missing.
    fn open<'a>(&'a self, cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError>;
}

/// Computes items; created by [`PerItem::open`].
pub trait ItemWorker: Send {
    /// One result per item of the batch, in order.
    fn process(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Vec<Result<ItemOutcome, NodeError>>;
}

/// Context for a whole node.
pub struct WholeCx<'a> {
    pub store: &'a Store,
    pub inputs: &'a Inputs,
    pub seed: u64,
    pub warn: &'a (dyn Fn(String) + Sync),
    /// Report what the node is doing (`"step 120/3000, loss 0.12"`).
    pub status: &'a (dyn Fn(String) + Sync),
    /// Resumable partial work of this exact computation (same key), e.g. training
    /// checkpoints. Never served as a result: only the node itself reads it back.
    pub checkpoint: &'a Checkpoints<'a>,
    /// Content-keyed sub-results that outlive this computation (see [`crate::memo`]).
    pub memo: &'a crate::memo::Memo<'a>,
}

/// Checkpoints of one whole node's computation, stored under a key derived from the
/// node's key, so a changed parameter never resumes from a stale checkpoint.
pub struct Checkpoints<'a> {
    pub store: &'a Store,
    pub key: Digest,
}

impl Checkpoints<'_> {
    fn entry_key(&self) -> Digest {
        nsync_cache::FramedHasher::new("nsync.checkpoint.v1")
            .digest(1, &self.key)
            .finish()
    }

    /// The latest checkpoint, if one was saved and is intact.
    pub fn load(&self) -> Option<Vec<u8>> {
        let entry = self.store.get_entry(&self.entry_key())?;
        let digest: Digest = entry.get("blob")?.as_str()?.parse().ok()?;
        self.store.get_blob(&digest).ok()
    }

    /// Save `bytes` as the latest checkpoint (durably: blob first, then the entry).
    pub fn save(&self, bytes: &[u8]) -> Result<(), CacheError> {
        let digest = self
            .store
            .put_blob(bytes, nsync_cache::atomic::Durability::Fsync)?;
        let entry = serde_json::json!({ "blob": digest, "size": bytes.len() });
        self.store.put_entry(
            &self.entry_key(),
            &entry,
            nsync_cache::atomic::Durability::Fsync,
        )
    }

    /// Forget the checkpoint (once the result is committed).
    pub fn clear(&self) -> Result<(), CacheError> {
        self.store.remove_entry(&self.entry_key())
    }
}

/// A node computed from all of its inputs at once.
pub trait Whole: Send + Sync {
    /// Output bytes per output port.
    fn run(&self, cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError>;
}

/// The items common to every per-item input, each keyed by its input digests.
/// Items missing from some inputs are left out; use [`join_items_strict`] to refuse them.
pub fn join_items(inputs: &Inputs) -> Result<Vec<WorkItem>, NodeError> {
    let per_item: Vec<(&String, &BTreeMap<String, crate::artifact::BlobRef>)> = inputs
        .ports
        .iter()
        .filter_map(|(p, a)| a.items().map(|m| (p, m)))
        .collect();
    let Some((_, first)) = per_item.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(first.len());
    'items: for id in first.keys() {
        let mut fields = BTreeMap::new();
        for (port, m) in &per_item {
            match m.get(id) {
                Some(b) => {
                    fields.insert((*port).clone(), b.digest);
                }
                None => continue 'items,
            }
        }
        for (port, a) in &inputs.ports {
            if a.items().is_none() {
                fields.insert(port.clone(), a.digest());
            }
        }
        out.push(WorkItem {
            id: id.clone(),
            fields,
            source: None,
            inline: None,
        });
    }
    Ok(out)
}

/// Like [`join_items`], but an item present in one input and missing in another is an error
/// naming the items.
pub fn join_items_strict(inputs: &Inputs) -> Result<Vec<WorkItem>, NodeError> {
    let items = join_items(inputs)?;
    for (port, a) in &inputs.ports {
        if let Some(m) = a.items() {
            if m.len() != items.len() {
                let have: std::collections::BTreeSet<&str> =
                    items.iter().map(|w| w.id.as_str()).collect();
                let missing: Vec<&str> = m
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !have.contains(k))
                    .take(5)
                    .collect();
                return Err(NodeError::msg(format!(
                    "input `{port}` has items that other inputs lack (e.g. {}); inputs must describe the same items",
                    missing.join(", ")
                )));
            }
        }
    }
    Ok(items)
}

/// An error from a node, shown to the user as is.
#[derive(Debug)]
pub struct NodeError {
    pub message: String,
    /// A cached input was missing or corrupt (and has been quarantined): rerunning the
    /// pipeline recomputes it, so the executor retries once by itself.
    pub cache_damage: bool,
}

impl NodeError {
    pub fn msg(m: impl Into<String>) -> Self {
        NodeError {
            message: m.into(),
            cache_damage: false,
        }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<CacheError> for NodeError {
    fn from(e: CacheError) -> Self {
        let cache_damage = matches!(
            e,
            CacheError::CorruptBlob { .. } | CacheError::MissingBlob { .. }
        );
        NodeError {
            message: e.to_string(),
            cache_damage,
        }
    }
}
