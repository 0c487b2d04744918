//! `prompt_template`: per-item strings from a template over other per-item texts.
//!
//! `template = "{caption} in the style of painting"` with `inputs = { caption = "captions" }`
//! is the paper's negative-prompt generator. Placeholders name input ports, entries of
//! `values`, or `item` (the item's id).

use std::collections::BTreeMap;

use nsync_cache::Digest;
use nsync_engine::artifact::TEXTS;
use nsync_engine::node::{
    join_items_strict, BuildCx, Exec, InputSpec, ItemCx, ItemOutcome, ItemWorker, ItemsCx, Node,
    NodeError, NodeKind, OutputSpec, PerItem, WorkItem,
};
use nsync_engine::params::{typed_params, BuildError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::template::Template;

/// Parameters of the `prompt_template` node.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplateParams {
    /// The text to produce per item. `{port}` inserts that input's text for the item,
    /// `{name}` an entry of `values`, `{item}` the item id; `{{`/`}}` are literal braces.
    #[schemars(example = &"{caption} in the style of {generic}")]
    pub template: String,
    /// Constant values for placeholders.
    #[serde(default)]
    #[schemars(example = serde_json::json!({"generic": "painting"}))]
    pub values: BTreeMap<String, String>,
}

pub struct PromptTemplateKind;

impl NodeKind for PromptTemplateKind {
    fn kind(&self) -> &'static str {
        "prompt_template"
    }
    fn doc(&self) -> &'static str {
        "Builds one text per item from a template over per-item texts (e.g. \"{caption} in the style of painting\"). Inputs are named freely; each becomes a placeholder."
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::schema_for!(PromptTemplateParams)
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        Vec::new()
    }
    fn free_inputs(&self) -> bool {
        true
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: PromptTemplateParams = typed_params(params)?;
        let template =
            Template::parse(&p.template).map_err(|m| BuildError::at(&["template"], m))?;
        if cx.connected_inputs.is_empty() {
            return Err(
                BuildError::at(&[], "prompt_template needs at least one input").help(
                    "e.g. inputs = { caption = \"captions\" } and use {caption} in the template",
                ),
            );
        }
        for v in template.vars() {
            let known = v == "item"
                || p.values.contains_key(v)
                || cx.connected_inputs.iter().any(|i| i == v);
            if !known {
                let candidates: Vec<&str> = cx
                    .connected_inputs
                    .iter()
                    .map(String::as_str)
                    .chain(p.values.keys().map(String::as_str))
                    .chain(["item"])
                    .collect();
                let help =
                    nsync_engine::spec::diagnostic::did_you_mean(v, candidates.iter().copied())
                        .unwrap_or_else(|| {
                            format!(
                                "placeholders can be: {} (inputs), entries of `values`, or item",
                                cx.connected_inputs.join(", ")
                            )
                        });
                return Err(BuildError::at(
                    &["template"],
                    format!("unknown placeholder `{{{v}}}`"),
                )
                .help(help));
            }
        }
        for k in p.values.keys() {
            if cx.connected_inputs.contains(k) || k == "item" {
                return Err(BuildError::at(
                    &["values", k],
                    format!("`{k}` is both a value and an input name"),
                ));
            }
        }
        let uses_item = template.vars().any(|v| v == "item");
        Ok(Box::new(PromptTemplateNode {
            inputs: cx.connected_inputs.to_vec(),
            p,
            template,
            uses_item,
        }))
    }
}

pub struct PromptTemplateNode {
    p: PromptTemplateParams,
    template: Template,
    inputs: Vec<String>,
    uses_item: bool,
}

impl Node for PromptTemplateNode {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        self.inputs
            .iter()
            .map(|n| InputSpec {
                name: n.clone(),
                ty: TEXTS,
                required: false,
                doc: format!("Text for `{{{n}}}`."),
            })
            .collect()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "texts",
            ty: TEXTS,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::to_value(&self.p).expect("serialises")
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

impl PerItem for PromptTemplateNode {
    fn items(&self, cx: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        let mut items = join_items_strict(cx.inputs)?;
        if self.uses_item {
            for w in &mut items {
                w.fields.insert("item".into(), Digest::of(w.id.as_bytes()));
            }
        }
        Ok(items)
    }

    fn batch_size(&self) -> usize {
        1024
    }

    fn open<'a>(&'a self, _cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        Ok(Box::new(Render { node: self }))
    }
}

struct Render<'a> {
    node: &'a PromptTemplateNode,
}

impl ItemWorker for Render<'_> {
    fn process(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Vec<Result<ItemOutcome, NodeError>> {
        batch
            .iter()
            .map(|w| {
                let mut texts = BTreeMap::new();
                for port in &self.node.inputs {
                    let bytes = cx.read(port, &w.id)?;
                    let s = String::from_utf8(bytes).map_err(|_| {
                        NodeError::msg(format!("input `{port}` of item `{}` is not UTF-8", w.id))
                    })?;
                    texts.insert(port.as_str(), s);
                }
                let out = self.node.template.render(|v| {
                    if let Some(t) = texts.get(v) {
                        t.clone()
                    } else if let Some(t) = self.node.p.values.get(v) {
                        t.clone()
                    } else {
                        w.id.clone()
                    }
                });
                Ok(ItemOutcome::Done(BTreeMap::from([(
                    "texts".to_string(),
                    out.into_bytes(),
                )])))
            })
            .collect()
    }
}
