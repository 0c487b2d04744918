//! What a training run learns, laid out as one flat `f32` vector (what the optimizer updates
//! and a checkpoint holds):
//!
//! - [`Adapter::Embedding`] (Textual Inversion): each style's token rows
//!   `[n_vectors × hidden]`, style after style;
//! - [`Adapter::Lora`]: per adapted UNet layer, in [`UNet::lora_sites`] order, `A`
//!   `[rank × in]` then `B` `[out × rank]` (row-major).
//!
//! The update rule ([`super::update_rule::combine`]) is applied to the gradient over one
//! *segment* of that vector at a time ([`Adapter::segments`]): each style's own rows for
//! embeddings (a style's passes only see its own token); for LoRA the whole vector
//! ([`Projection::Flat`], the default: the direct analogue of the paper's flattened token
//! rows) or each tensor on its own ([`Projection::PerTensor`]).
//!
//! [`UNet::lora_sites`]: crate::diffusion::unet::UNet::lora_sites

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::{Device, Tensor, Var};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diffusion::lora::{Lora, LoraLayer, LoraSite};
use crate::diffusion::noise;

/// Over which parameters the update rule projects, for LoRA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// One projection over the flattened vector of all LoRA parameters (the default).
    #[default]
    Flat,
    /// One projection per LoRA tensor (each layer's `A` and `B` separately).
    PerTensor,
}

/// What is trained.
#[derive(Clone, Debug)]
pub enum Adapter {
    /// The styles' token embeddings (Textual Inversion).
    Embedding,
    /// LoRA adapters on the UNet.
    Lora(LoraLayout),
}

/// The LoRA adapters a run trains.
#[derive(Clone, Debug)]
pub struct LoraLayout {
    /// The adapted layers, in the order of the flat vector.
    pub sites: Vec<LoraSite>,
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f64,
    pub projection: Projection,
}

impl LoraLayout {
    /// Each tensor's range in the flat vector and shape: per site `A` then `B`.
    pub fn tensors(&self) -> Vec<(Range<usize>, [usize; 2])> {
        let mut out = Vec::with_capacity(2 * self.sites.len());
        let mut at = 0;
        for s in &self.sites {
            for shape in [[self.rank, s.in_dim], [s.out_dim, self.rank]] {
                let n = shape[0] * shape[1];
                out.push((at..at + n, shape));
                at += n;
            }
        }
        out
    }

    /// The length of the flat vector.
    pub fn len(&self) -> usize {
        self.tensors().last().map_or(0, |(r, _)| r.end)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The initial vector: `A` drawn from N(0, 1/rank²) (PEFT's `init_lora_weights =
    /// "gaussian"`, as diffusers' LoRA training scripts use), one seeded stream per layer;
    /// `B` zero, so the adapted UNet starts as the frozen one.
    pub fn init(&self, seed: u64) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len());
        let std = 1.0 / self.rank as f64;
        for (i, s) in self.sites.iter().enumerate() {
            let a = (noise::gaussian(
                noise::derive(seed, "lora A", i as u64),
                &[self.rank, s.in_dim],
                &Device::Cpu,
            )? * std)?;
            out.extend(a.flatten_all()?.to_vec1::<f32>()?);
            out.extend(std::iter::repeat_n(0f32, s.out_dim * self.rank));
        }
        Ok(out)
    }

    /// The adapters for `params` as tensors on `device`, plus, when `trainable`, the
    /// [`Var`]s behind them (per site `A`, `B`) whose gradients a pass reads.
    pub fn build(
        &self,
        params: &[f32],
        device: &Device,
        trainable: bool,
    ) -> candle_core::Result<(Lora, Vec<Var>)> {
        let mut layers = BTreeMap::new();
        let mut vars = Vec::new();
        let tensors = self.tensors();
        for (s, pair) in self.sites.iter().zip(tensors.chunks(2)) {
            let mut ab = Vec::with_capacity(2);
            for (range, shape) in pair {
                let t = Tensor::from_slice(&params[range.clone()], shape.as_slice(), device)?;
                if trainable {
                    let v = Var::from_tensor(&t)?;
                    ab.push(v.as_tensor().clone());
                    vars.push(v);
                } else {
                    ab.push(t);
                }
            }
            let b = ab.pop().expect("two tensors");
            let a = ab.pop().expect("two tensors");
            layers.insert(
                s.name.clone(),
                LoraLayer {
                    a,
                    b,
                    scale: self.scale,
                },
            );
        }
        Ok((Lora { layers }, vars))
    }
}

impl Adapter {
    /// The segments of the flat vector the update rule projects over, for style `style`
    /// whose rows (embeddings) are `rows` of the vector; ranges are relative to the
    /// style's gradient, which covers `rows` (embeddings) or the whole vector (LoRA).
    pub fn segments(&self, rows: Range<usize>) -> Vec<Range<usize>> {
        match self {
            Adapter::Embedding => std::iter::once(0..rows.len()).collect(),
            Adapter::Lora(l) => match l.projection {
                Projection::Flat => std::iter::once(0..l.len()).collect(),
                Projection::PerTensor => l.tensors().into_iter().map(|(r, _)| r).collect(),
            },
        }
    }
}
