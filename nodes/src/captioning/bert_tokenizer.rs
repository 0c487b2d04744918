//! BLIP's tokenizer: BERT WordPiece (`bert-base-uncased` plus `[DEC]` and `[ENC]`), read
//! from the model folder's `tokenizer.json` with the `tokenizers` crate.
//!
//! transformers 5's `BertTokenizer` rebuilds the pipeline from that file's vocabulary
//! (BERT normaliser with lower-casing, BERT pre-tokeniser, WordPiece decoder) and keeps the
//! file's post-processor; for a standard BERT `tokenizer.json`, as the hub BLIP repositories
//! ship, that is the file's own pipeline. Decoding drops special tokens and, when
//! `tokenizer_config.json` says `clean_up_tokenization_spaces`, applies transformers'
//! clean-up of spaces before punctuation once more. Parity is tested on a corpus
//! (`nodes/tests/blip_parity.rs`).

use std::path::Path;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::diffusion::ModelError;

pub struct BlipTokenizer {
    inner: Tokenizer,
    clean_up_spaces: bool,
}

impl BlipTokenizer {
    /// `tokenizer.json` (required) and `tokenizer_config.json` (optional) of `dir`.
    pub fn from_dir(dir: &Path) -> Result<BlipTokenizer, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                hint: "a BLIP model folder needs the tokenizer.json of its hub repository".into(),
            });
        }
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| ModelError::bad(&path, format!("not a tokenizers file: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let clean_up_spaces = match std::fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .map_err(|e| ModelError::bad(&cfg_path, format!("not valid JSON: {e}")))?
                .get("clean_up_tokenization_spaces")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            Err(_) => false,
        };
        Ok(BlipTokenizer {
            inner,
            clean_up_spaces,
        })
    }

    /// A tokenizer from an in-memory `tokenizer.json` text.
    pub fn from_json(text: &str, clean_up_spaces: bool) -> Result<BlipTokenizer, String> {
        let inner = text
            .parse::<Tokenizer>()
            .map_err(|e| format!("not a tokenizers file: {e}"))?;
        Ok(BlipTokenizer {
            inner,
            clean_up_spaces,
        })
    }

    /// The `tokenizer.json` of a BERT-uncased WordPiece tokenizer over `vocab` (its index is
    /// the id; it must hold `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`), with `[DEC]` and
    /// `[ENC]` added after it as special tokens: the file transformers 5 writes for
    /// `BertTokenizer(vocab)` plus `add_special_tokens({"bos_token": "[DEC]", ...})`.
    pub fn bert_json(vocab: &[String]) -> Result<String, String> {
        let id = |t: &str| {
            vocab
                .iter()
                .position(|v| v == t)
                .ok_or_else(|| format!("the vocabulary has no {t}"))
        };
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
        let mut added: Vec<(usize, &str)> = specials
            .iter()
            .map(|t| Ok((id(t)?, *t)))
            .collect::<Result<_, String>>()?;
        added.sort();
        added.push((vocab.len(), "[DEC]"));
        added.push((vocab.len() + 1, "[ENC]"));
        let added: Vec<Value> = added
            .iter()
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let special =
            |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
        let mut map = serde_json::Map::new();
        for (i, t) in vocab.iter().enumerate() {
            if map.insert(t.clone(), json!(i)).is_some() {
                return Err(format!("the vocabulary lists {t} twice"));
            }
        }
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
                "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [cls], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [sep], "tokens": ["[SEP]"]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": Value::Object(map)}
        });
        Ok(serde_json::to_string_pretty(&doc).expect("JSON serialises") + "\n")
    }

    /// Every token, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of `text` with the special tokens (`[CLS] … [SEP]`), as `tokenizer(text).input_ids`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(|e| format!("cannot tokenise {text:?}: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// The decoder's first ids for `prompt`: what `BlipForConditionalGeneration.generate`
    /// makes of the processor's `input_ids` — the first token replaced by `bos` (`[DEC]`)
    /// and the last (`[SEP]`) dropped. Without a prompt: `[bos]`.
    pub fn prefix(&self, prompt: Option<&str>, bos: u32) -> Result<Vec<u32>, String> {
        let Some(prompt) = prompt else {
            return Ok(vec![bos]);
        };
        let mut ids = self.encode(prompt)?;
        if ids.len() < 2 {
            return Ok(vec![bos]);
        }
        ids[0] = bos;
        ids.pop();
        Ok(ids)
    }

    /// `tokenizer.decode(ids, skip_special_tokens=skip_special)`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, String> {
        let text = self
            .inner
            .decode(ids, skip_special)
            .map_err(|e| format!("cannot decode {ids:?}: {e}"))?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The caption of a generated sequence without its prompt: the decoded sequence minus
    /// the decoded prefix when it starts with it (so a word piece that continues the
    /// prompt's last word keeps its `##`-less form), else the new tokens decoded alone.
    pub fn caption_text(&self, prefix: &[u32], new: &[u32]) -> Result<String, String> {
        let all: Vec<u32> = prefix.iter().chain(new).copied().collect();
        let full = self.decode(&all, true)?;
        let head = self.decode(prefix, true)?;
        let text = match full.strip_prefix(head.as_str()) {
            Some(rest) => rest.to_string(),
            None => self.decode(new, true)?,
        };
        Ok(text.trim().to_string())
    }
}

/// transformers' `clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}
