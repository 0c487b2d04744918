//! `caption`: one caption per image, written by a captioning model (per-item node).
//!
//! The first stage of the method. Backends: `blip` ([`BlipCaptioner`], greedy decoding as
//! transformers). The moondream backend the issue asks for is not implemented yet.
//!
//! The model comes from a `[models]` entry (`model = "blip"`, a BLIP folder in Hugging Face
//! layout) or from the `model` input (a [`CAPTION_MODEL`] made in the pipeline, e.g. by
//! `tiny_captioner`). It is loaded once per run, and only when an item that is not
//! overridden is missing from the cache.
//!
//! Overrides: a file written by people (`<item>.txt` files in a folder, or a JSONL/CSV
//! file, read like the `captions` node's) whose entry for an item replaces the model's
//! caption. The override's text is a field of *that item's* key only (and replaces the
//! image and model fields there), so fixing one caption recomputes exactly that item here
//! and downstream; the file's path never enters a key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use nsync_cache::Digest;
use nsync_engine::artifact::{IMAGES, TEXTS};
use nsync_engine::node::{
    join_items, BuildCx, Exec, InputSpec, ItemCx, ItemOutcome, ItemWorker, ItemsCx, Node,
    NodeError, NodeKind, OutputSpec, PerItem, WorkItem,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::blip_captioner::BlipCaptioner;
use super::caption_model::CAPTION_MODEL;
use crate::diffusion::model_artifact::unpack;
use crate::diffusion::model_source::key_params_without;
use crate::diffusion::sd_sample::device;
use crate::policy::resolve;
use crate::sources::captions::{normalise, read_table};
use crate::sources::decode::{decode_rgb8, AlphaMode};

/// Which captioning model family the `model` is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptionBackend {
    /// BLIP captioning checkpoints (`Salesforce/blip-image-captioning-base`/`-large`).
    #[default]
    Blip,
}

/// Parameters of the `caption` node. Give `model` or connect a `model` input, not both.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionParams {
    /// A `[models]` entry: a BLIP captioning folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, `tokenizer_config.json`, `preprocessor_config.json`). Or connect a
    /// `model` input (e.g. from `tiny_captioner`) instead.
    #[serde(default)]
    #[schemars(example = &"blip")]
    pub model: Option<String>,
    /// The model family: `blip` (the only one implemented; moondream is not yet).
    #[serde(default)]
    #[schemars(example = &"blip")]
    pub backend: CaptionBackend,
    /// Text every caption starts with (BLIP's conditional captioning); it is not part of
    /// the caption written.
    #[serde(default)]
    #[schemars(example = &"a painting of")]
    pub prompt: Option<String>,
    /// At most this many generated tokens per caption (greedy decoding).
    #[serde(default = "default_max_new_tokens")]
    #[schemars(example = 30)]
    pub max_new_tokens: usize,
    /// Join the caption's lines and whitespace runs into single spaces.
    #[serde(default = "default_true")]
    #[schemars(example = true)]
    pub one_line: bool,
    /// Keep at most this many words of each model caption.
    #[serde(default)]
    #[schemars(example = 20)]
    pub max_words: Option<usize>,
    /// Captions written by people that replace the model's, relative to the pipeline file:
    /// a folder of `<item>.txt` files, or a `.jsonl` (`{"item": ..., "caption": ...}`) or
    /// `.csv` file. Normalised to one line; taken as they are otherwise.
    #[serde(default)]
    #[schemars(example = &"captions/fixes.jsonl")]
    pub overrides: Option<String>,
    /// Images captioned together (never changes a caption).
    #[serde(default = "default_batch_size")]
    #[schemars(example = 8)]
    pub batch_size: usize,
}

fn default_max_new_tokens() -> usize {
    30
}
fn default_true() -> bool {
    true
}
fn default_batch_size() -> usize {
    8
}

pub struct CaptionKind;

fn model_input_spec() -> InputSpec {
    InputSpec {
        name: "model".into(),
        ty: CAPTION_MODEL,
        required: false,
        doc: "A captioning model made in the pipeline, e.g. by `tiny_captioner` (else `model`)."
            .into(),
    }
}

impl NodeKind for CaptionKind {
    fn kind(&self) -> &'static str {
        "caption"
    }
    fn doc(&self) -> &'static str {
        "Captions each image with a captioning model (BLIP; greedy, deterministic); captions from an `overrides` file replace the model's for their items."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(CaptionParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec {
                name: "images".into(),
                ty: IMAGES,
                required: true,
                doc: "The images to caption.".into(),
            },
            model_input_spec(),
        ]
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: CaptionParams = typed_params(params)?;
        let input = cx.connected_inputs.iter().any(|i| i == "model");
        let source = match (&p.model, input) {
            (Some(_), true) => {
                return Err(BuildError::at(
                    &["model"],
                    "give `model` or connect a `model` input, not both",
                ))
            }
            (None, false) => {
                return Err(BuildError::at(&[], "caption needs a model").help(
                    "set `model = \"<name>\"` naming a [models] entry (a BLIP folder), or connect `inputs.model` to a node such as `tiny_captioner`",
                ))
            }
            (Some(name), false) => Source::Folder(cx.models.get(name).cloned().unwrap_or_default()),
            (None, true) => Source::Input,
        };
        if p.max_new_tokens == 0 {
            return Err(BuildError::at(&["max_new_tokens"], "must be at least 1"));
        }
        if p.max_words == Some(0) {
            return Err(BuildError::at(&["max_words"], "must be at least 1")
                .help("leave it out for no limit"));
        }
        let overrides = match &p.overrides {
            None => None,
            Some(o) => {
                let path = resolve(cx.pipeline_dir, o);
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                Some(match ext.as_deref() {
                    Some("jsonl") | Some("ndjson") => Overrides::Jsonl(path),
                    Some("csv") => Overrides::Csv(path),
                    _ => Overrides::Dir(path),
                })
            }
        };
        Ok(Box::new(CaptionNode {
            p,
            source,
            overrides,
        }))
    }
}

enum Source {
    /// A local folder (resolved `[models]` path).
    Folder(PathBuf),
    /// The blob on the `model` input.
    Input,
}

enum Overrides {
    Dir(PathBuf),
    Jsonl(PathBuf),
    Csv(PathBuf),
}

impl Overrides {
    /// Override texts (normalised to one line) of the items `ids` that have one.
    fn read<'a>(
        &self,
        ids: impl Iterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, String>, NodeError> {
        let mut out = BTreeMap::new();
        match self {
            Overrides::Dir(d) => {
                if !d.is_dir() {
                    return Err(NodeError::msg(format!(
                        "overrides folder {} does not exist; `overrides` is relative to the pipeline file (a folder of <item>.txt, or a .jsonl/.csv file)",
                        d.display()
                    )));
                }
                for id in ids {
                    let f = d.join(format!("{id}.txt"));
                    match std::fs::read(&f) {
                        Ok(bytes) => {
                            let text = String::from_utf8(bytes).map_err(|_| {
                                NodeError::msg(format!(
                                    "{} is not UTF-8 text; save it as UTF-8",
                                    f.display()
                                ))
                            })?;
                            out.insert(id.clone(), normalise(&text));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(NodeError::msg(format!("cannot read {}: {e}", f.display())))
                        }
                    }
                }
            }
            Overrides::Jsonl(f) | Overrides::Csv(f) => {
                let table = read_table(f, matches!(self, Overrides::Csv(_)))?;
                for id in ids {
                    if let Some(t) = table.get(id) {
                        out.insert(id.clone(), normalise(t));
                    }
                }
            }
        }
        Ok(out)
    }
}

pub struct CaptionNode {
    p: CaptionParams,
    source: Source,
    overrides: Option<Overrides>,
}

impl Node for CaptionNode {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        CaptionKind.declared_inputs()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "texts",
            ty: TEXTS,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        // The model enters by its digest, overrides by each item's text; paths and batching
        // never change a caption.
        key_params_without(&self.p, &["model", "overrides", "batch_size"])
    }
    fn models(&self) -> Vec<String> {
        self.p.model.iter().cloned().collect()
    }
    fn heavy(&self) -> bool {
        true
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

impl PerItem for CaptionNode {
    fn batch_size(&self) -> usize {
        self.p.batch_size.max(1)
    }

    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        let mut items = join_items(cx.inputs)?;
        let Some(o) = &self.overrides else {
            return Ok(items);
        };
        let texts = o.read(items.iter().map(|w| &w.id))?;
        for w in &mut items {
            if let Some(text) = texts.get(&w.id) {
                // The caption is the override: neither the image nor the model changes it.
                let bytes = text.clone().into_bytes();
                w.fields = BTreeMap::from([("override".to_string(), Digest::of(&bytes))]);
                w.inline = Some(bytes);
            }
        }
        Ok(items)
    }

    fn open<'a>(&'a self, _cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        Ok(Box::new(Captioner {
            node: self,
            model: None,
            done: 0,
            tokens: 0,
            seconds: 0.0,
        }))
    }
}

/// Captions batches; loads the model at the first item that needs it (not at all when every
/// missing item is overridden).
struct Captioner<'a> {
    node: &'a CaptionNode,
    model: Option<(BlipCaptioner, Option<tempfile::TempDir>)>,
    done: usize,
    tokens: usize,
    seconds: f64,
}

impl Captioner<'_> {
    fn load(&mut self, cx: &ItemCx) -> Result<&BlipCaptioner, NodeError> {
        if self.model.is_none() {
            (cx.status)("loading the captioning model".into());
            let device = device();
            let err = |e: crate::diffusion::ModelError| NodeError::msg(e.to_string());
            let loaded = match &self.node.source {
                Source::Folder(path) => {
                    (BlipCaptioner::from_dir(path, &device).map_err(err)?, None)
                }
                Source::Input => {
                    let art = cx
                        .inputs
                        .get("model")
                        .ok_or_else(|| NodeError::msg("input `model` is missing"))?;
                    let tmp = unpack(&cx.store.get_blob(&art.digest())?).map_err(err)?;
                    let m = BlipCaptioner::from_dir(tmp.path(), &device).map_err(err)?;
                    (m, Some(tmp))
                }
            };
            self.model = Some(loaded);
        }
        Ok(&self.model.as_ref().expect("loaded").0)
    }

    fn caption(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Result<Vec<String>, NodeError> {
        let images = batch
            .iter()
            .map(|w| {
                let bytes = cx.read("images", &w.id)?;
                decode_rgb8(&bytes, AlphaMode::Drop)
                    .map_err(|e| NodeError::msg(format!("image `{}`: {e}", w.id)))
            })
            .collect::<Result<Vec<RgbImage>, NodeError>>()?;
        let p = &self.node.p;
        let start = Instant::now();
        let captions = self
            .load(cx)?
            .caption(&images, p.prompt.as_deref(), p.max_new_tokens)
            .map_err(|e| NodeError::msg(format!("captioning: {e}")))?;
        self.seconds += start.elapsed().as_secs_f64();
        self.done += captions.len();
        self.tokens += captions.iter().map(|c| c.token_ids.len()).sum::<usize>();
        (cx.status)(format!(
            "{} images captioned, {:.1} tokens/s",
            self.done,
            self.tokens as f64 / self.seconds.max(1e-9)
        ));
        Ok(captions
            .into_iter()
            .map(|c| post_process(&c.text, p.one_line, p.max_words))
            .collect())
    }
}

impl ItemWorker for Captioner<'_> {
    fn process(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Vec<Result<ItemOutcome, NodeError>> {
        let done = |t: Vec<u8>| ItemOutcome::Done(BTreeMap::from([("texts".to_string(), t)]));
        let to_model: Vec<&WorkItem> = batch
            .iter()
            .copied()
            .filter(|w| w.inline.is_none())
            .collect();
        let mut made = match to_model.is_empty() {
            true => Ok(Vec::new().into_iter()),
            false => self.caption(&to_model, cx).map(Vec::into_iter),
        };
        batch
            .iter()
            .map(|w| match (&w.inline, &mut made) {
                (Some(text), _) => Ok(done(text.clone())),
                (None, Ok(it)) => Ok(done(it.next().expect("one caption per image").into_bytes())),
                (None, Err(e)) => Err(NodeError {
                    message: e.message.clone(),
                    cache_damage: e.cache_damage,
                }),
            })
            .collect()
    }
}

/// Trim; with `one_line`, single spaces only; with `max_words`, the first words only.
pub fn post_process(text: &str, one_line: bool, max_words: Option<usize>) -> String {
    let text = text.trim();
    let mut out = if one_line {
        normalise(text)
    } else {
        text.to_string()
    };
    if let Some(n) = max_words {
        if let Some(last) = out.split_whitespace().nth(n.saturating_sub(1)) {
            let end = last.as_ptr() as usize - out.as_ptr() as usize + last.len();
            out.truncate(end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_processing() {
        assert_eq!(post_process("  a  b\nc ", true, None), "a b c");
        assert_eq!(post_process("a  b\nc d", false, Some(3)), "a  b\nc");
        assert_eq!(post_process("a b c d", true, Some(2)), "a b");
        assert_eq!(post_process("a b", true, Some(5)), "a b");
    }
}
