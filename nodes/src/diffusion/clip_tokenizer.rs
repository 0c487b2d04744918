//! The CLIP tokenizer of Stable Diffusion, built from a diffusers `tokenizer/` folder
//! (`vocab.json` + `merges.txt`; the SD repositories ship no `tokenizer.json`).
//!
//! It reproduces transformers' `CLIPTokenizer` (transformers 5, where it is the
//! `tokenizers`-backed class and never uses ftfy; identical to `CLIPTokenizerFast` of 4.x):
//! NFC, whitespace runs collapsed to one space, lower case; CLIP's regular expression; GPT-2
//! byte-level mapping; BPE with `</w>` word ends; `<|startoftext|> … <|endoftext|>` around
//! at most 77 tokens. Built from the `tokenizers` crate's parts (pure Rust, offline). Tokens
//! added later (`<monet>`) are matched whole, after lower-casing, as transformers does; the
//! special tokens (including SD 2.x's pad token `!`) are matched whole before BPE.
//! Parity is tested against transformers on a corpus (`nodes/tests/sd_parity.rs`).

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::{Lowercase, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::ModelError;

/// CLIP's word pattern (from the original `clip/simple_tokenizer.py`).
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    inner: Tokenizer,
    pub bos: u32,
    pub eos: u32,
    /// Padding id: `<|endoftext|>` for SD 1.x, `!` for SD 2.x (from the folder's config).
    pub pad: u32,
    /// Positions of the text encoder (77).
    pub max_len: usize,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ModelError::bad(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::bad(path, e)),
    }
}

/// A token in a config: `"!"` or `{"content": "!"}`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(str::to_string)
        .or_else(|| v.get("content")?.as_str().map(str::to_string))
}

impl ClipTokenizer {
    /// Load from a diffusers `tokenizer/` folder.
    pub fn from_dir(dir: &Path) -> Result<ClipTokenizer, ModelError> {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        for f in [&vocab, &merges] {
            if !f.is_file() {
                return Err(ModelError::MissingFile {
                    path: f.clone(),
                    hint: "a diffusers `tokenizer/` folder needs vocab.json and merges.txt".into(),
                });
            }
        }
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .end_of_word_suffix("</w>".into())
            .unk_token(EOS.into())
            .build()
            .map_err(|e| {
                ModelError::bad(
                    &vocab,
                    format!("cannot build the BPE model with {}: {e}", merges.display()),
                )
            })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let special = read_json(&dir.join("special_tokens_map.json"))?;
        let find = |key: &str| {
            special
                .as_ref()
                .and_then(|s| s.get(key))
                .and_then(token_string)
                .or_else(|| {
                    config
                        .as_ref()
                        .and_then(|c| c.get(key))
                        .and_then(token_string)
                })
        };
        let max_len = config
            .as_ref()
            .and_then(|c| c.get("model_max_length"))
            .and_then(|v| v.as_u64())
            .filter(|&n| n > 2 && n <= 4096)
            .unwrap_or(77) as usize;
        let pad_token = find("pad_token").unwrap_or_else(|| EOS.to_string());

        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NormSeq::new(vec![
                NFC.into(),
                Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                    .map_err(|e| ModelError::bad(dir, e))?
                    .into(),
                Lowercase.into(),
            ])))
            .map_err(|e| ModelError::bad(dir, e))?;
        let split = Split::new(
            SplitPattern::Regex(PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| ModelError::bad(dir, e))?;
        inner.with_pre_tokenizer(Some(PreSeq::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        let id = |t: &str, inner: &Tokenizer| {
            inner
                .token_to_id(t)
                .ok_or_else(|| ModelError::bad(&vocab, format!("has no `{t}` token")))
        };
        let bos = id(BOS, &inner)?;
        let eos = id(EOS, &inner)?;
        let pad = id(&pad_token, &inner)?;
        inner
            .add_special_tokens([
                AddedToken::from(BOS, true),
                AddedToken::from(EOS, true),
                AddedToken::from(pad_token.as_str(), true),
            ])
            .map_err(|e| ModelError::bad(dir, e))?;
        let post = TemplateProcessing::builder()
            .try_single(format!("{BOS} $A {EOS}"))
            .map_err(|e| ModelError::bad(dir, e))?
            .special_tokens(vec![(BOS, bos), (EOS, eos)])
            .build()
            .map_err(|e| ModelError::bad(dir, e))?;
        inner.with_post_processor(Some(post));
        Ok(ClipTokenizer {
            inner,
            bos,
            eos,
            pad,
            max_len,
        })
    }

    /// Add a token matched whole (Textual Inversion's `<monet>`); returns its id.
    pub fn add_token(&mut self, token: &str) -> Result<u32, String> {
        self.inner
            .add_tokens([AddedToken::from(token, false)])
            .map_err(|e| e.to_string())?;
        self.inner
            .token_to_id(token)
            .ok_or_else(|| format!("could not add token `{token}`"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `<|startoftext|> tokens <|endoftext|>`, however long.
    pub fn encode_full(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| format!("cannot tokenise {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Self::encode_full`] truncated to `max_len` the way transformers truncates: the first
    /// `max_len - 2` tokens between the start and end tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.encode_full(text)?;
        if ids.len() > self.max_len {
            ids.truncate(self.max_len - 1);
            ids.push(self.eos);
        }
        Ok(ids)
    }

    /// [`Self::encode`] padded with the pad id to exactly `max_len` positions.
    pub fn encode_padded(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.encode(text)?;
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }

    /// How many tokens of `text` the encoder will not see (0 if it fits).
    pub fn overflow(&self, text: &str) -> Result<usize, String> {
        Ok(self.encode_full(text)?.len().saturating_sub(self.max_len))
    }
}
