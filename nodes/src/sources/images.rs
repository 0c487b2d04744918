//! `images`: a folder or glob of image files → one RGB8 PNG per item.
//!
//! Item ids are file paths relative to the folder (or to the glob's fixed prefix), without
//! extension: `train/0001.jpg` → `train/0001`. Keys come from file contents only, so
//! renaming the folder or moving the project reuses everything. An undecodable file is
//! *rejected*, naming the file; `on_error` chooses whether that fails the node or skips it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nsync_cache::Digest;
use nsync_engine::artifact::IMAGES;
use nsync_engine::node::{
    BuildCx, Exec, InputSpec, ItemCx, ItemOutcome, ItemWorker, ItemsCx, Node, NodeError, NodeKind,
    OutputSpec, PerItem, RejectPolicy, WorkItem,
};
use nsync_engine::params::{typed_params, BuildError};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::decode::{decode_rgb8, encode_png, AlphaMode};
use crate::policy::{resolve, OnError};

pub const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

/// Parameters of the `images` node.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesParams {
    /// A folder of images, a single image, or a glob pattern (`data/*/train/*.jpg`),
    /// relative to the pipeline file.
    #[schemars(example = &"data/monet/train")]
    pub path: String,
    /// Also take images from subfolders (ids then include the subfolder: `sub/0001`).
    #[serde(default)]
    #[schemars(example = false)]
    pub recursive: bool,
    /// What to do with a file that cannot be decoded: `fail` (default) or `skip` with a warning.
    #[serde(default)]
    #[schemars(example = &"skip")]
    pub on_error: OnError,
    /// How to turn transparent images into RGB: `drop` the alpha channel (default, like
    /// Pillow's `convert("RGB")`), or composite over `white` or `black`.
    #[serde(default)]
    #[schemars(example = &"white")]
    pub alpha: AlphaMode,
}

pub struct ImagesKind;

impl NodeKind for ImagesKind {
    fn kind(&self) -> &'static str {
        "images"
    }
    fn doc(&self) -> &'static str {
        "Reads a folder or glob of images (JPEG, PNG, WebP, TIFF, BMP, GIF) and converts each to RGB8; one item per file."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ImagesParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: ImagesParams = typed_params(params)?;
        if p.path.trim().is_empty() {
            return Err(BuildError::at(&["path"], "`path` is empty")
                .help("give a folder, file or glob, e.g. \"data/monet/train\""));
        }
        Ok(Box::new(ImagesNode {
            root: resolve(cx.pipeline_dir, &p.path),
            p,
        }))
    }
}

pub struct ImagesNode {
    p: ImagesParams,
    root: PathBuf,
}

#[derive(Serialize)]
struct KeyParams {
    alpha: AlphaMode,
}

impl Node for ImagesNode {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "images",
            ty: IMAGES,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        // Where the files are and the error policy do not change any image's pixels.
        serde_json::to_value(KeyParams {
            alpha: self.p.alpha,
        })
        .expect("serialises")
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), NodeError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| NodeError::msg(format!("cannot list {}: {e}", dir.display())))?;
    for e in rd {
        let e = e.map_err(|e| NodeError::msg(format!("cannot list {}: {e}", dir.display())))?;
        let p = e.path();
        if hidden(&p) {
            continue;
        }
        // `file_type` comes with the directory entry: no extra stat per file.
        let is_dir = match e.file_type() {
            Ok(t) if t.is_symlink() => p.is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => p.is_dir(),
        };
        if is_dir {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Files and the folder their ids are relative to.
fn enumerate(
    root: &Path,
    pattern: &str,
    recursive: bool,
) -> Result<(PathBuf, Vec<PathBuf>), NodeError> {
    if pattern.contains(['*', '?', '[']) {
        let full = root.to_string_lossy().to_string();
        let base: PathBuf = root
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        let files: Vec<PathBuf> = glob::glob(&full)
            .map_err(|e| NodeError::msg(format!("invalid glob pattern `{pattern}`: {e}")))?
            .filter_map(|r| r.ok())
            .filter(|p| p.is_file() && is_image(p) && !hidden(p))
            .collect();
        return Ok((base, files));
    }
    if root.is_file() {
        let base = root.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((base, vec![root.to_path_buf()]));
    }
    if !root.is_dir() {
        return Err(NodeError::msg(format!(
            "image folder {} does not exist; `path` is relative to the pipeline file",
            root.display()
        )));
    }
    let mut files = Vec::new();
    walk(root, recursive, &mut files)?;
    Ok((root.to_path_buf(), files))
}

/// The image files under `path` (a folder, a file or a glob) with their item ids (relative
/// paths without extension), sorted by id — as the `images` node lists them.
pub fn list_images(path: &Path, recursive: bool) -> Result<Vec<(String, PathBuf)>, NodeError> {
    let (base, files) = enumerate(path, &path.to_string_lossy(), recursive)?;
    let mut v: Vec<(String, PathBuf)> =
        files.into_iter().map(|f| (item_id(&base, &f), f)).collect();
    v.sort();
    Ok(v)
}

fn item_id(base: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(base).unwrap_or(file);
    let rel = rel.with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

impl PerItem for ImagesNode {
    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        let (base, mut files) = enumerate(&self.root, &self.p.path, self.p.recursive)?;
        files.sort();
        if files.is_empty() {
            return Err(NodeError::msg(format!(
                "no image files ({}) found at {}",
                EXTENSIONS.join(", "),
                self.root.display()
            )));
        }
        let mut by_id: BTreeMap<String, PathBuf> = BTreeMap::new();
        for f in files {
            let id = item_id(&base, &f);
            if let Some(prev) = by_id.insert(id.clone(), f.clone()) {
                return Err(NodeError::msg(format!(
                    "{} and {} would both be item `{id}`; rename one (item ids are file names without extension)",
                    prev.display(),
                    f.display()
                )));
            }
        }
        let digests: Vec<Result<(String, PathBuf, Digest), NodeError>> = by_id
            .into_par_iter()
            .map(|(id, path)| {
                let (d, _) = cx
                    .files
                    .digest(&path)
                    .map_err(|e| NodeError::msg(e.to_string()))?;
                Ok((id, path, d))
            })
            .collect();
        digests
            .into_iter()
            .map(|r| {
                r.map(|(id, path, d)| WorkItem {
                    id,
                    fields: BTreeMap::from([("file".to_string(), d)]),
                    source: Some(path),
                    inline: None,
                })
            })
            .collect()
    }

    fn reject_policy(&self) -> RejectPolicy {
        match self.p.on_error {
            OnError::Fail => RejectPolicy::Fail,
            OnError::Skip => RejectPolicy::Skip,
        }
    }

    fn open<'a>(&'a self, _cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        Ok(Box::new(Decoder {
            alpha: self.p.alpha,
        }))
    }
}

struct Decoder {
    alpha: AlphaMode,
}

impl ItemWorker for Decoder {
    fn process(
        &mut self,
        batch: &[&WorkItem],
        _cx: &ItemCx,
    ) -> Vec<Result<ItemOutcome, NodeError>> {
        batch
            .par_iter()
            .map(|w| {
                let path = w.source.as_ref().expect("images items have a source file");
                let bytes = super::read_unchanged(w, path)?;
                Ok(match decode_rgb8(&bytes, self.alpha) {
                    Ok(img) => ItemOutcome::Done(BTreeMap::from([(
                        "images".to_string(),
                        encode_png(&img),
                    )])),
                    Err(why) => ItemOutcome::Rejected(format!("{}: {why}", path.display())),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_relative_without_extension() {
        assert_eq!(
            item_id(Path::new("/d"), Path::new("/d/sub/x.y.jpg")),
            "sub/x.y"
        );
        assert_eq!(item_id(Path::new("/d"), Path::new("/d/a.png")), "a");
    }
}
