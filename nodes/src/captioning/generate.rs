//! Greedy decoding, as transformers' `generate(do_sample=False, num_beams=1)` for BLIP.
//!
//! Every caption starts from the same prefix (`[DEC]`, then the prompt's word pieces); at
//! each step the most likely token is appended (the first on ties, like `torch.argmax`),
//! and a caption ends after it produces `sep_token_id` or after `max_new_tokens` tokens.
//! No logits processor is applied: the hub BLIP configs set none (no repetition penalty,
//! no minimum length). Captions that end are dropped from the batch, so the others run on
//! alone; transformers keeps them and feeds padding, which changes nothing for the rest
//! (each caption attends to its own tokens and image only).

use candle_core::{Result, Tensor};

use super::blip_text::BlipTextDecoder;
use super::layers::argmax_rows;

/// The new tokens of each caption (ending with `sep` unless `max_new_tokens` ran out),
/// and, if asked for, the logits `[vocab]` that chose each of them.
pub struct Greedy {
    pub tokens: Vec<Vec<u32>>,
    pub step_logits: Option<Vec<Vec<Tensor>>>,
}

/// Decode one caption per row of `image_embeds` `[batch, tokens, width]`.
pub fn greedy(
    decoder: &BlipTextDecoder,
    image_embeds: &Tensor,
    prefix: &[u32],
    max_new_tokens: usize,
    sep: u32,
    keep_logits: bool,
) -> Result<Greedy> {
    let batch = image_embeds.dim(0)?;
    let device = image_embeds.device();
    let mut tokens = vec![Vec::new(); batch];
    let mut logits_out: Vec<Vec<Tensor>> = vec![Vec::new(); batch];
    if max_new_tokens == 0 || batch == 0 {
        return Ok(Greedy {
            tokens,
            step_logits: keep_logits.then_some(logits_out),
        });
    }
    if prefix.is_empty() {
        candle_core::bail!("greedy decoding needs a prefix (at least the [DEC] token)");
    }
    let mut cache = decoder.start(image_embeds)?;
    // Which caption each batch row belongs to.
    let mut active: Vec<usize> = (0..batch).collect();
    let flat: Vec<u32> = (0..batch).flat_map(|_| prefix.iter().copied()).collect();
    let mut input = Tensor::from_vec(flat, (batch, prefix.len()), device)?;
    for _ in 0..max_new_tokens {
        let logits = decoder.step(&input, &mut cache)?;
        let next = argmax_rows(&logits)?;
        let mut keep: Vec<u32> = Vec::with_capacity(active.len());
        for (row, (&caption, &tok)) in active.iter().zip(&next).enumerate() {
            tokens[caption].push(tok);
            if keep_logits {
                logits_out[caption].push(logits.get(row)?);
            }
            if tok != sep {
                keep.push(row as u32);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache = cache.select(&keep)?;
            active = keep.iter().map(|&r| active[r as usize]).collect();
        }
        let fed: Vec<u32> = keep.iter().map(|&r| next[r as usize]).collect();
        input = Tensor::from_vec(fed, (active.len(), 1), device)?;
    }
    Ok(Greedy {
        tokens,
        step_logits: keep_logits.then_some(logits_out),
    })
}
