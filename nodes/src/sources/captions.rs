//! `captions`: one caption per image, read from files written by people (or by another tool).
//!
//! Sources: `<item>.txt` files in a folder (usually beside the images), or one JSONL file
//! (`{"item": "0001", "caption": "..."}`, `image`/`file` accepted for `item`) or CSV file
//! (columns `item` or `image` or `file`, and `caption`). Captions are normalised to one line
//! (whitespace runs become one space, ends trimmed). The captioner node of a later stage
//! produces the same output type, so everything downstream works with either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nsync_cache::{CacheError, Digest};
use nsync_engine::artifact::{IMAGES, TEXTS};
use nsync_engine::node::{
    BuildCx, Exec, InputSpec, ItemCx, ItemOutcome, ItemWorker, ItemsCx, Node, NodeError, NodeKind,
    OutputSpec, PerItem, WorkItem,
};
use nsync_engine::params::{typed_params, BuildError};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::resolve;

/// What to do for an image without a caption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingCaption {
    /// Stop with an error listing the images that have none (default).
    #[default]
    Fail,
    /// Leave those images out, with a warning.
    Skip,
    /// Use an empty caption.
    Empty,
}

/// Parameters of the `captions` node. Give exactly one of `dir` and `file`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionsParams {
    /// Folder with one `<item>.txt` per image (relative to the pipeline file); usually the
    /// images' own folder.
    #[serde(default)]
    #[schemars(example = &"data/monet/train")]
    pub dir: Option<String>,
    /// A JSONL or CSV file of captions (relative to the pipeline file).
    #[serde(default)]
    #[schemars(example = &"captions.jsonl")]
    pub file: Option<String>,
    /// Images without a caption: `fail` (default), `skip` or `empty`.
    #[serde(default)]
    #[schemars(example = &"skip")]
    pub missing: MissingCaption,
}

pub struct CaptionsKind;

impl NodeKind for CaptionsKind {
    fn kind(&self) -> &'static str {
        "captions"
    }
    fn doc(&self) -> &'static str {
        "Captions for images from `<item>.txt` files or a JSONL/CSV file; one text per image item."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CaptionsParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec {
            name: "images".into(),
            ty: IMAGES,
            required: true,
            doc: "The images to caption; their item ids select the captions.".into(),
        }]
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: CaptionsParams = typed_params(params)?;
        let source = match (&p.dir, &p.file) {
            (Some(d), None) => Source::Dir(resolve(cx.pipeline_dir, d)),
            (None, Some(f)) => {
                let path = resolve(cx.pipeline_dir, f);
                match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                    Some("jsonl") | Some("ndjson") => Source::Jsonl(path),
                    Some("csv") => Source::Csv(path),
                    _ => {
                        return Err(BuildError::at(&["file"], "caption files must end in .jsonl or .csv")
                            .help("for one .txt file per image, use `dir` instead"))
                    }
                }
            }
            (Some(_), Some(_)) => return Err(BuildError::at(&["file"], "give either `dir` or `file`, not both")),
            (None, None) => {
                return Err(BuildError::at(&[], "the captions node needs `dir` (a folder of <item>.txt files) or `file` (JSONL/CSV)")
                    .help("e.g. dir = \"data/monet/train\""))
            }
        };
        Ok(Box::new(CaptionsNode { p, source }))
    }
}

enum Source {
    Dir(PathBuf),
    Jsonl(PathBuf),
    Csv(PathBuf),
}

pub struct CaptionsNode {
    p: CaptionsParams,
    source: Source,
}

/// One line, single spaces.
pub fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn read_table(path: &Path, csv: bool) -> Result<BTreeMap<String, String>, NodeError> {
    let err = |m: String| NodeError::msg(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut out = BTreeMap::new();
    let id_of = |s: &str| {
        Path::new(s)
            .with_extension("")
            .to_string_lossy()
            .replace('\\', "/")
    };
    if csv {
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let headers = r.headers().map_err(|e| err(e.to_string()))?.clone();
        let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
        let (Some(ic), Some(cc)) = (col(&["item", "image", "file"]), col(&["caption", "text"]))
        else {
            return Err(err(
                "the CSV needs an `item` (or `image`/`file`) column and a `caption` column".into(),
            ));
        };
        for (n, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| err(format!("row {}: {e}", n + 2)))?;
            out.insert(
                id_of(rec.get(ic).unwrap_or_default()),
                rec.get(cc).unwrap_or_default().to_string(),
            );
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| err(format!("line {}: not JSON: {e}", n + 1)))?;
            let id = ["item", "image", "file"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()));
            let cap = ["caption", "text"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()));
            match (id, cap) {
                (Some(i), Some(c)) => {
                    out.insert(id_of(i), c.to_string());
                }
                _ => {
                    return Err(err(format!(
                        "line {}: needs \"item\" and \"caption\" strings",
                        n + 1
                    )))
                }
            }
        }
    }
    Ok(out)
}

impl Node for CaptionsNode {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        CaptionsKind.declared_inputs()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "texts",
            ty: TEXTS,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        // The caption text itself is in each item's key; where it was read from is not.
        serde_json::json!({ "normalise": "whitespace-v1" })
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

impl PerItem for CaptionsNode {
    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        let images = cx
            .inputs
            .get("images")
            .and_then(|a| a.items())
            .ok_or_else(|| NodeError::msg("input `images` is missing"))?;
        let table = match &self.source {
            Source::Dir(d) => {
                if !d.is_dir() {
                    return Err(NodeError::msg(format!(
                        "caption folder {} does not exist; `dir` is relative to the pipeline file",
                        d.display()
                    )));
                }
                None
            }
            Source::Jsonl(f) => Some(read_table(f, false)?),
            Source::Csv(f) => Some(read_table(f, true)?),
        };
        // Caption files are identified by content through the memoised file digester, so a
        // no-op rerun only stats them; the worker reads and normalises the text.
        let ids: Vec<&String> = images.keys().collect();
        let found: Vec<Result<Option<WorkItem>, NodeError>> = ids
            .par_iter()
            .map(|id| match (&self.source, &table) {
                (Source::Dir(d), _) => {
                    let f = d.join(format!("{id}.txt"));
                    match cx.files.digest(&f) {
                        Ok((digest, _)) => Ok(Some(WorkItem {
                            id: (*id).clone(),
                            fields: BTreeMap::from([("file".to_string(), digest)]),
                            source: Some(f),
                            inline: None,
                        })),
                        Err(CacheError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(NodeError::msg(e.to_string())),
                    }
                }
                (_, Some(t)) => Ok(t.get(*id).map(|text| inline_item(id, normalise(text)))),
                _ => Ok(None),
            })
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for (id, r) in ids.into_iter().zip(found) {
            match r? {
                Some(w) => out.push(w),
                None if self.p.missing == MissingCaption::Empty => {
                    out.push(inline_item(id, String::new()))
                }
                None => missing.push(id.clone()),
            }
        }
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
            let more = if missing.len() > 8 {
                format!(" and {} more", missing.len() - 8)
            } else {
                String::new()
            };
            let where_ = match &self.source {
                Source::Dir(d) => format!("in {}", d.display()),
                Source::Jsonl(f) | Source::Csv(f) => format!("in {}", f.display()),
            };
            let msg = format!(
                "{} image(s) have no caption {where_}: {}{more}",
                missing.len(),
                shown.join(", ")
            );
            match self.p.missing {
                MissingCaption::Skip => (cx.warn)(msg),
                _ => {
                    return Err(NodeError::msg(format!(
                        "{msg}\n  (write the captions, or set `missing = \"skip\"` or `\"empty\"` on the node)"
                    )))
                }
            }
        }
        Ok(out)
    }

    fn batch_size(&self) -> usize {
        1024
    }

    fn open<'a>(&'a self, _cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        Ok(Box::new(Normalise))
    }
}

/// An item whose (normalised) text is already known.
fn inline_item(id: &str, text: String) -> WorkItem {
    let bytes = text.into_bytes();
    WorkItem {
        id: id.to_string(),
        fields: BTreeMap::from([("text".to_string(), Digest::of(&bytes))]),
        source: None,
        inline: Some(bytes),
    }
}

/// Reads (if needed) and normalises each caption.
struct Normalise;

impl ItemWorker for Normalise {
    fn process(
        &mut self,
        batch: &[&WorkItem],
        _cx: &ItemCx,
    ) -> Vec<Result<ItemOutcome, NodeError>> {
        batch
            .par_iter()
            .map(|w| {
                caption_of(w).map(|t| ItemOutcome::Done(BTreeMap::from([("texts".to_string(), t)])))
            })
            .collect()
    }
}

fn caption_of(w: &WorkItem) -> Result<Vec<u8>, NodeError> {
    if let Some(text) = &w.inline {
        return Ok(text.clone());
    }
    let path = w
        .source
        .as_ref()
        .expect("caption items have a file or inline text");
    let bytes = super::read_unchanged(w, path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        NodeError::msg(format!(
            "{} is not UTF-8 text; save it as UTF-8",
            path.display()
        ))
    })?;
    Ok(normalise(&text).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_whitespace() {
        assert_eq!(normalise("  a\n b\t\tc \n"), "a b c");
    }

    #[test]
    fn reads_jsonl_and_csv() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("c.jsonl");
        std::fs::write(&j, "{\"image\": \"x.jpg\", \"caption\": \"a cat\"}\n\n{\"item\": \"y\", \"text\": \"a dog\"}\n").unwrap();
        let t = read_table(&j, false).unwrap();
        assert_eq!(t["x"], "a cat");
        assert_eq!(t["y"], "a dog");
        let c = d.path().join("c.csv");
        std::fs::write(&c, "file,caption\nx.png,\"a, b\"\n").unwrap();
        assert_eq!(read_table(&c, true).unwrap()["x"], "a, b");
    }
}
