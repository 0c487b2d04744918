//! The parameters of `contrastive_train` and their validation into the styles it trains and
//! the inputs it takes.
//!
//! Fields added after the first release (`styles`, `adapter`, `lora`) are left out of the
//! serialised parameters when unset, so the cache keys of existing pipelines (which hash the
//! serialised parameters) do not change.

use std::collections::BTreeSet;

use nsync_engine::artifact::{IMAGES, TEXTS};
use nsync_engine::node::InputSpec;
use nsync_engine::params::BuildError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lr_schedule::LrSchedule;
use super::trainable::Projection;
use super::update_rule::{Compat, Variant};
use crate::diffusion::lora::{DEFAULT_TARGETS, KNOWN_TARGETS};
use crate::diffusion::model_source::ModelSource;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with L2 weight decay (the paper's).
    #[default]
    Adam,
    /// AdamW, decoupled weight decay (the reference code's).
    Adamw,
}

/// What a run learns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// The token's embedding vectors (Textual Inversion; the paper's main setting).
    #[default]
    Embedding,
    /// LoRA adapters on the UNet's attention projections (the paper's LoRA experiment); the
    /// token is then plain text in the captions, not a new vocabulary entry.
    Lora,
}

impl AdapterKind {
    fn is_embedding(&self) -> bool {
        *self == AdapterKind::Embedding
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The new token (`S*`) used in prompts. Leave it out when `styles` lists several.
    /// With `adapter = "lora"` it is plain text in the captions (e.g. `sks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"<monet>")]
    pub token: Option<String>,
    /// A word whose (first) embedding initialises the token (and each style's, unless the
    /// style sets its own).
    #[serde(default = "default_init")]
    #[schemars(example = &"painting")]
    pub initializer: String,
    /// Vectors per token (`<tok>`, `<tok>_1`, … in the embedding file); the default of every
    /// style.
    #[serde(default = "one")]
    #[schemars(example = 1)]
    pub num_vectors: usize,
    /// Several styles in one run, each a token learned from its own inputs
    /// `images_<name>`, `captions_<name>` and `negatives_<name>` (the paper's Monet + Van
    /// Gogh experiment): `{ token, name?, initializer?, num_vectors? }`, `name` defaulting to
    /// the token without its angle brackets. Every step trains every style on `batch_size`
    /// triples of its own; the update rule is applied to each token's rows on their own.
    /// Instead of `token` and the `images`/`captions`/`negatives` inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = serde_json::json!([{"token": "<monet>"}, {"token": "<vangogh>", "initializer": "painting"}]))]
    pub styles: Option<Vec<StyleParams>>,
    /// What is learned: `embedding` (Textual Inversion, default) or `lora` (LoRA adapters on
    /// the UNet, see `lora`; one style).
    #[serde(default, skip_serializing_if = "AdapterKind::is_embedding")]
    #[schemars(example = &"embedding")]
    pub adapter: AdapterKind,
    /// LoRA settings, with `adapter = "lora"`: `{ rank = 4, alpha = rank, targets =
    /// ["to_q", "to_k", "to_v", "to_out.0"], projection = "flat" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = serde_json::json!({"rank": 4, "alpha": 4.0, "targets": ["to_q", "to_k", "to_v", "to_out.0"], "projection": "flat"}))]
    pub lora: Option<LoraParams>,
    /// `ti`, `cto`, `ctoa` (NSYNC), `ctm` or `ctma`.
    #[serde(default = "default_variant")]
    #[schemars(example = &"ctoa")]
    pub variant: Variant,
    /// `paper` (default) or `reference_code` (the authors' script: accumulated gradients,
    /// anchor typo, AdamW decay over the whole embedding table; with `adapter = "lora"`, its
    /// update formulas only).
    #[serde(default = "default_compat")]
    #[schemars(example = &"paper")]
    pub compat: Compat,
    /// Optimizer steps.
    #[serde(default = "default_steps")]
    #[schemars(example = 3000)]
    pub steps: usize,
    /// Triples (positive, negative, anchor) per step (per style).
    #[serde(default = "default_batch")]
    #[schemars(example = 8)]
    pub batch_size: usize,
    /// Learning rate.
    #[serde(default = "default_lr")]
    #[schemars(example = 0.0008)]
    pub lr: f64,
    /// Multiply `lr` by `batch_size` (diffusers' `--scale_lr`).
    #[serde(default)]
    #[schemars(example = false)]
    pub scale_lr: bool,
    /// `adam` or `adamw`.
    #[serde(default)]
    #[schemars(example = &"adam")]
    pub optimizer: OptimizerKind,
    /// Adam's first-moment decay.
    #[serde(default = "beta1")]
    #[schemars(example = 0.9)]
    pub beta1: f64,
    /// Adam's second-moment decay.
    #[serde(default = "beta2")]
    #[schemars(example = 0.999)]
    pub beta2: f64,
    /// Adam's epsilon.
    #[serde(default = "eps")]
    #[schemars(example = 1e-8)]
    pub eps: f64,
    /// Weight decay (default: 0 for Adam, 0.01 for AdamW).
    #[serde(default)]
    #[schemars(example = 0.01)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: `{ kind = "constant" }`, `{ kind = "constant_with_warmup",
    /// warmup_steps = N }` or `{ kind = "cosine", warmup_steps = N }`.
    #[serde(default)]
    #[schemars(example = serde_json::json!({"kind": "cosine", "warmup_steps": 100}))]
    pub schedule: LrSchedule,
    /// Training resolution in pixels (images are resized, bicubic).
    #[serde(default = "default_resolution")]
    #[schemars(example = 512)]
    pub resolution: usize,
    /// Random horizontal flips.
    #[serde(default = "yes")]
    #[schemars(example = true)]
    pub flip: bool,
    /// Save resumable state every this many steps (0: never).
    #[serde(default = "default_every")]
    #[schemars(example = 500)]
    pub checkpoint_every: usize,
    /// A `[models]` entry, or connect a `model` input.
    #[serde(default)]
    #[schemars(example = &"sd15")]
    pub model: Option<String>,
}

/// One style of a multi-style run.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StyleParams {
    /// The style's token.
    #[schemars(example = &"<vangogh>")]
    pub token: String,
    /// Names its inputs (`images_<name>`, …) and its curve lines; default: the token without
    /// `<` and `>`. Letters, digits, `_` and `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"vangogh")]
    pub name: Option<String>,
    /// Default: the node's `initializer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"painting")]
    pub initializer: Option<String>,
    /// Default: the node's `num_vectors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = 1)]
    pub num_vectors: Option<usize>,
}

/// LoRA settings.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraParams {
    /// The adapters' rank `r`.
    #[serde(default = "default_rank")]
    #[schemars(example = 4)]
    pub rank: usize,
    /// `alpha`: the adapters' term is scaled by `alpha / rank` (default: `rank`, scale 1, as
    /// diffusers' LoRA scripts).
    #[serde(default)]
    #[schemars(example = 4.0)]
    pub alpha: Option<f64>,
    /// Module-name suffixes of the UNet's linear layers to adapt (PEFT's `target_modules`):
    /// `to_q`, `to_k`, `to_v`, `to_out.0` (default), `ff.net.0.proj`, `ff.net.2`,
    /// `proj_in`/`proj_out` (SD 2.x), or longer suffixes such as `attn2.to_k`.
    #[serde(default = "default_targets")]
    #[schemars(example = serde_json::json!(["to_q", "to_k", "to_v", "to_out.0"]))]
    pub targets: Vec<String>,
    /// Over which parameters the update rule projects: `flat` (all LoRA parameters as one
    /// vector, default) or `per_tensor` (each `lora_A` / `lora_B` on its own).
    #[serde(default)]
    #[schemars(example = &"flat")]
    pub projection: Projection,
}

impl Default for LoraParams {
    fn default() -> Self {
        LoraParams {
            rank: default_rank(),
            alpha: None,
            targets: default_targets(),
            projection: Projection::Flat,
        }
    }
}

fn default_init() -> String {
    "painting".into()
}
fn one() -> usize {
    1
}
fn default_variant() -> Variant {
    Variant::Ctoa
}
fn default_compat() -> Compat {
    Compat::Paper
}
fn default_steps() -> usize {
    3000
}
fn default_batch() -> usize {
    8
}
fn default_lr() -> f64 {
    8e-4
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn default_resolution() -> usize {
    512
}
fn yes() -> bool {
    true
}
fn default_every() -> usize {
    500
}
fn default_rank() -> usize {
    4
}
fn default_targets() -> Vec<String> {
    DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect()
}

/// One style, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Style {
    pub name: String,
    pub token: String,
    pub initializer: String,
    pub num_vectors: usize,
}

impl Style {
    /// Its input ports: images, captions, negatives (`images` … for a single style,
    /// `images_<name>` … with `styles`).
    pub fn ports(&self, several: bool) -> [String; 3] {
        ["images", "captions", "negatives"].map(|p| {
            if several {
                format!("{p}_{}", self.name)
            } else {
                p.to_string()
            }
        })
    }

    /// The token's vector names: `<tok>`, `<tok>_1`, ….
    pub fn vector_names(&self) -> Vec<String> {
        std::iter::once(self.token.clone())
            .chain((1..self.num_vectors).map(|i| format!("{}_{i}", self.token)))
            .collect()
    }
}

fn error_at(path: Vec<String>, message: &str) -> BuildError {
    BuildError {
        path,
        message: message.into(),
        help: None,
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl TrainParams {
    /// Whether the run has a `styles` list (inputs `images_<name>`, …).
    pub fn multi(&self) -> bool {
        self.styles.is_some()
    }

    /// The styles this run trains (one without `styles`). Errors point at the field.
    pub fn resolved_styles(&self) -> Result<Vec<Style>, BuildError> {
        let Some(list) = &self.styles else {
            let Some(token) = &self.token else {
                return Err(BuildError::at(&[], "contrastive_train needs a `token`").help(
                    "e.g. token = \"<monet>\", or several styles with styles = [{ token = \"<monet>\" }, …]",
                ));
            };
            return Ok(vec![Style {
                name: token
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
                token: token.clone(),
                initializer: self.initializer.clone(),
                num_vectors: self.num_vectors,
            }]);
        };
        if self.token.is_some() {
            return Err(BuildError::at(
                &["token"],
                "give `token` or `styles`, not both",
            ));
        }
        if list.is_empty() {
            return Err(BuildError::at(&["styles"], "`styles` is empty"));
        }
        let mut out: Vec<Style> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let idx = i.to_string();
            let name = s.name.clone().unwrap_or_else(|| {
                s.token
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            });
            if !valid_name(&name) {
                let field = if s.name.is_some() { "name" } else { "token" };
                return Err(BuildError::at(
                    &["styles", &idx, field],
                    format!("style name `{name}` must be letters, digits, `_` or `-` (it names the inputs `images_{name}`, …)"),
                )
                .help("set `name` explicitly, e.g. name = \"monet\""));
            }
            let style = Style {
                name,
                token: s.token.clone(),
                initializer: s
                    .initializer
                    .clone()
                    .unwrap_or_else(|| self.initializer.clone()),
                num_vectors: s.num_vectors.unwrap_or(self.num_vectors),
            };
            if let Some(other) = out.iter().find(|o| o.name == style.name) {
                return Err(BuildError::at(
                    &["styles", &idx],
                    format!("two styles are named `{}`", other.name),
                )
                .help("give them distinct `name`s"));
            }
            let mine: BTreeSet<String> = style.vector_names().into_iter().collect();
            if out
                .iter()
                .any(|o| o.vector_names().iter().any(|n| mine.contains(n)))
            {
                return Err(BuildError::at(
                    &["styles", &idx, "token"],
                    format!("token `{}` is used by another style", style.token),
                ));
            }
            out.push(style);
        }
        Ok(out)
    }

    /// Validate, and normalise what has defaults that depend on other fields (so that
    /// equivalent settings share a cache key): the LoRA table is filled in when `adapter =
    /// "lora"`.
    pub fn validate(&mut self) -> Result<Vec<Style>, BuildError> {
        let styles = self.resolved_styles()?;
        let several = self.multi();
        match self.adapter {
            AdapterKind::Embedding => {
                if self.lora.is_some() {
                    return Err(BuildError::at(
                        &["lora"],
                        "`lora` settings need adapter = \"lora\"",
                    ));
                }
                for (i, s) in styles.iter().enumerate() {
                    let at = |field: &str| -> Vec<String> {
                        if several {
                            vec!["styles".into(), i.to_string(), field.into()]
                        } else {
                            vec![field.into()]
                        }
                    };
                    if !(s.token.starts_with('<') && s.token.ends_with('>') && s.token.len() > 2) {
                        return Err(error_at(
                            at("token"),
                            "the token should look like `<name>` so it never collides with a word",
                        ));
                    }
                    if s.num_vectors == 0 {
                        return Err(error_at(
                            at("num_vectors"),
                            "`num_vectors` must be at least 1",
                        ));
                    }
                }
            }
            AdapterKind::Lora => {
                if several {
                    return Err(BuildError::at(
                        &["adapter"],
                        "LoRA trains one style per run (`styles` is for token embeddings)",
                    )
                    .help("use one contrastive_train node per style, or adapter = \"embedding\""));
                }
                if styles[0].token.trim().is_empty() {
                    return Err(BuildError::at(&["token"], "the token is empty"));
                }
                let mut l = self.lora.clone().unwrap_or_default();
                if l.rank == 0 {
                    return Err(BuildError::at(
                        &["lora", "rank"],
                        "`rank` must be at least 1",
                    ));
                }
                let alpha = l.alpha.unwrap_or(l.rank as f64);
                if !(alpha.is_finite() && alpha > 0.0) {
                    return Err(BuildError::at(
                        &["lora", "alpha"],
                        "`alpha` must be positive",
                    ));
                }
                l.alpha = Some(alpha);
                if l.targets.is_empty() {
                    return Err(BuildError::at(&["lora", "targets"], "`targets` is empty")
                        .help(format!("e.g. {:?}", DEFAULT_TARGETS)));
                }
                for (i, t) in l.targets.iter().enumerate() {
                    let known = KNOWN_TARGETS
                        .iter()
                        .any(|k| t == k || t.ends_with(&format!(".{k}")));
                    if !known {
                        return Err(BuildError::at(
                            &["lora", "targets", &i.to_string()],
                            format!("`{t}` is not a linear layer LoRA can adapt"),
                        )
                        .help(format!(
                            "targets name module suffixes: {}",
                            KNOWN_TARGETS.join(", ")
                        )));
                    }
                }
                self.lora = Some(l);
            }
        }
        Ok(styles)
    }

    /// The input ports of a node with these (validated) parameters.
    pub fn inputs(&self, styles: &[Style]) -> Vec<InputSpec> {
        let several = self.multi();
        let mut out = Vec::new();
        for s in styles {
            let [images, captions, negatives] = s.ports(several);
            let whose = if several {
                format!(" of style `{}`", s.name)
            } else {
                String::new()
            };
            out.push(InputSpec {
                name: images,
                ty: IMAGES,
                required: true,
                doc: format!("The real training images (positives){whose}."),
            });
            out.push(InputSpec {
                name: captions,
                ty: TEXTS,
                required: true,
                doc: format!("One caption per training image{whose}."),
            });
            out.push(InputSpec {
                name: negatives,
                ty: IMAGES,
                required: false,
                doc: format!(
                    "The synthetic negative of each positive{whose}, same item id (all variants but ti)."
                ),
            });
        }
        out.push(ModelSource::input_spec());
        out
    }
}

/// The inputs declared for the schema: those of a single style (with `styles`, one set
/// `images_<name>`, `captions_<name>`, `negatives_<name>` per style instead).
pub fn declared_inputs() -> Vec<InputSpec> {
    vec![
        InputSpec {
            name: "images".into(),
            ty: IMAGES,
            required: false,
            doc: "The real training images (positives); required unless `styles` is given (then `images_<name>` per style).".into(),
        },
        InputSpec {
            name: "captions".into(),
            ty: TEXTS,
            required: false,
            doc: "One caption per training image; required unless `styles` is given (then `captions_<name>` per style).".into(),
        },
        InputSpec {
            name: "negatives".into(),
            ty: IMAGES,
            required: false,
            doc: "The synthetic negative of each positive, same item id (all variants but ti); with `styles`, `negatives_<name>` per style.".into(),
        },
        ModelSource::input_spec(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> TrainParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn new_fields_stay_out_of_the_key_of_a_single_style() {
        let p = params(serde_json::json!({"token": "<monet>"}));
        let v = serde_json::to_value(&p).unwrap();
        for absent in ["styles", "adapter", "lora"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        assert_eq!(v["token"], "<monet>");
    }

    #[test]
    fn styles_resolve_with_defaults_and_ports() {
        let mut p = params(serde_json::json!({
            "initializer": "art", "num_vectors": 2,
            "styles": [{"token": "<monet>"}, {"token": "<vg>", "name": "vangogh", "num_vectors": 1}]
        }));
        let s = p.validate().unwrap();
        assert_eq!(s[0].name, "monet");
        assert_eq!((s[0].initializer.as_str(), s[0].num_vectors), ("art", 2));
        assert_eq!(s[1].name, "vangogh");
        assert_eq!(s[1].num_vectors, 1);
        assert_eq!(
            s[1].ports(true),
            ["images_vangogh", "captions_vangogh", "negatives_vangogh"]
        );
        let names: Vec<String> = p.inputs(&s).into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "images_monet",
                "captions_monet",
                "negatives_monet",
                "images_vangogh",
                "captions_vangogh",
                "negatives_vangogh",
                "model"
            ]
        );
    }

    #[test]
    fn invalid_styles_and_lora_settings_are_refused_at_the_field() {
        let err = |v: serde_json::Value| params(v).validate().unwrap_err();
        let e = err(serde_json::json!({"token": "<a>", "styles": [{"token": "<b>"}]}));
        assert_eq!(e.path, ["token"]);
        let e =
            err(serde_json::json!({"styles": [{"token": "<a>"}, {"token": "<a>", "name": "b"}]}));
        assert_eq!(e.path, ["styles", "1", "token"]);
        let e =
            err(serde_json::json!({"styles": [{"token": "<a>"}, {"token": "<b>", "name": "a"}]}));
        assert_eq!(e.path, ["styles", "1"]);
        let e = err(serde_json::json!({"styles": [{"token": "<a b>"}]}));
        assert_eq!(e.path, ["styles", "0", "token"]);
        let e = err(serde_json::json!({"styles": [{"token": "monet", "name": "m"}]}));
        assert!(e.message.contains("<name>"), "{}", e.message);
        let e = err(serde_json::json!({}));
        assert!(e.message.contains("needs a `token`"));
        let e = err(serde_json::json!({"token": "<a>", "lora": {"rank": 2}}));
        assert_eq!(e.path, ["lora"]);
        let e = err(
            serde_json::json!({"token": "sks", "adapter": "lora", "lora": {"targets": ["conv_in"]}}),
        );
        assert_eq!(e.path, ["lora", "targets", "0"]);
        let e = err(
            serde_json::json!({"adapter": "lora", "styles": [{"token": "<a>"}, {"token": "<b>"}]}),
        );
        assert_eq!(e.path, ["adapter"]);
    }

    #[test]
    fn lora_defaults_are_filled_in_so_equal_settings_share_a_key() {
        let mut a = params(serde_json::json!({"token": "sks", "adapter": "lora"}));
        let mut b = params(serde_json::json!({"token": "sks", "adapter": "lora",
            "lora": {"rank": 4, "alpha": 4.0, "targets": ["to_q", "to_k", "to_v", "to_out.0"]}}));
        a.validate().unwrap();
        b.validate().unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&b).unwrap()
        );
        assert_eq!(serde_json::to_value(&a).unwrap()["adapter"], "lora");
    }
}
