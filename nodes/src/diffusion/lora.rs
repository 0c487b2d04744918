//! LoRA adapters on the UNet's linear layers, as PEFT's `LoraLayer` computes them for an
//! `nn.Linear` (no dropout, no bias on the adapter):
//!
//! ```text
//! y = W x + b + scale · B (A x)        A: [rank, in], B: [out, rank], scale = alpha / rank
//! ```
//!
//! A [`Lora`] maps UNet module names (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`,
//! diffusers' names) to their [`LoraLayer`]; [`super::unet::UNet::set_lora`] attaches one, and
//! every targeted linear layer then adds its term in `forward`. Train by giving `A` and `B` as
//! candle [`Var`](candle_core::Var)s' tensors: the frozen weights are plain tensors.
//!
//! ## The file format
//!
//! [`Lora::save`] writes what diffusers' `StableDiffusionPipeline.save_lora_weights` writes
//! from a PEFT-adapted UNet (`pytorch_lora_weights.safetensors`): per layer
//! `unet.<module>.lora_A.weight` `[rank, in]` and `unet.<module>.lora_B.weight` `[out, rank]`,
//! f32. A file without adapter metadata means `alpha = rank` to diffusers (`W + B·A`, see
//! `diffusers.utils.peft_utils.get_peft_kwargs`), so `scale` is baked into `lora_B` when it
//! is not 1: every loader (diffusers' `load_lora_weights` of any version, this module) then
//! computes the same function. [`Lora::load`] reads that layout (with or without the `unet.`
//! prefix) and honours diffusers' `lora_adapter_metadata` (`r`, `lora_alpha`, `use_rslora`)
//! when a file has it; per-module rank or alpha patterns, DoRA, text-encoder layers and the
//! older `.lora.down`/`.lora.up` layouts are refused with the reason.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::precision;
use super::ModelError;

/// A linear layer a LoRA can adapt: its diffusers module name and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoraSite {
    pub name: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// The default targets: the attention projections of every transformer block (self- and
/// cross-attention), as diffusers' `train_text_to_image_lora.py`.
pub const DEFAULT_TARGETS: [&str; 4] = ["to_q", "to_k", "to_v", "to_out.0"];

/// Module-name suffixes a target may name: the attention projections, the feed-forward
/// layers, and the transformers' linear input/output projections (SD 2.x; SD 1.x uses 1×1
/// convolutions there, which take no LoRA here).
pub const KNOWN_TARGETS: [&str; 8] = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "ff.net.0.proj",
    "ff.net.2",
    "proj_in",
    "proj_out",
];

/// The sites `targets` select, in `sites`' order: a site is selected when its name is a
/// target or ends with `.` + a target (PEFT's `target_modules` matching; `attn2.to_k` selects
/// only the cross-attention keys). Errors name a target that selects nothing.
pub fn select_sites(sites: &[LoraSite], targets: &[String]) -> Result<Vec<LoraSite>, String> {
    let matches = |name: &str, t: &str| name == t || name.ends_with(&format!(".{t}"));
    for t in targets {
        if !sites.iter().any(|s| matches(&s.name, t)) {
            return Err(format!(
                "LoRA target `{t}` matches no linear layer of this UNet (targets name module suffixes such as {}{})",
                DEFAULT_TARGETS.join(", "),
                if t == "proj_in" || t == "proj_out" {
                    "; this model's proj_in/proj_out are convolutions"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(sites
        .iter()
        .filter(|s| targets.iter().any(|t| matches(&s.name, t)))
        .cloned()
        .collect())
}

/// One adapted layer: `scale · B (A x)`.
#[derive(Clone, Debug)]
pub struct LoraLayer {
    /// `[rank, in]`.
    pub a: Tensor,
    /// `[out, rank]`.
    pub b: Tensor,
    pub scale: f64,
}

impl LoraLayer {
    /// The adapter's term for `x` `[..., in]`: `scale · (x Aᵀ) Bᵀ`, PEFT's order.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = precision::broadcast_matmul(x, &self.a.t()?)?;
        let h = precision::broadcast_matmul(&h, &self.b.t()?)?;
        if self.scale == 1.0 {
            Ok(h)
        } else {
            h * self.scale
        }
    }

    /// The rank (`A`'s rows).
    pub fn rank(&self) -> usize {
        self.a.dims().first().copied().unwrap_or(0)
    }
}

/// LoRA layers by UNet module name.
#[derive(Clone, Debug, Default)]
pub struct Lora {
    pub layers: BTreeMap<String, LoraLayer>,
}

/// `y` plus `lora`'s term for the layer `name` (input `x`), or `y` itself.
pub fn adapt(
    lora: Option<&Lora>,
    name: &str,
    x: &Tensor,
    y: Tensor,
) -> candle_core::Result<Tensor> {
    match lora.and_then(|l| l.layers.get(name)) {
        Some(layer) => y + layer.forward(x)?,
        None => Ok(y),
    }
}

const PREFIX: &str = "unet.";
const A_SUFFIX: &str = ".lora_A.weight";
const B_SUFFIX: &str = ".lora_B.weight";

impl Lora {
    /// The tensors of the diffusers file: `unet.<module>.lora_A.weight` = `A`,
    /// `unet.<module>.lora_B.weight` = `scale · B` (so that the file means `alpha = rank`).
    pub fn to_diffusers(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (name, l) in &self.layers {
            let b = if l.scale == 1.0 {
                l.b.clone()
            } else {
                (&l.b * l.scale)?
            };
            out.insert(
                format!("{PREFIX}{name}{A_SUFFIX}"),
                l.a.to_dtype(DType::F32)?.contiguous()?,
            );
            out.insert(
                format!("{PREFIX}{name}{B_SUFFIX}"),
                b.to_dtype(DType::F32)?.contiguous()?,
            );
        }
        Ok(out)
    }

    /// Write the diffusers/PEFT file (see the module documentation).
    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        candle_core::safetensors::save(&self.to_diffusers()?, path)
    }

    /// Read a diffusers/PEFT LoRA file (see the module documentation), in `dtype`.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Lora, ModelError> {
        let bad = |m: String| ModelError::bad(path, m);
        let scale = match metadata(path).map_err(&bad)?.get("lora_adapter_metadata") {
            Some(raw) => metadata_scale(raw).map_err(&bad)?,
            None => None,
        };
        let tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| bad(format!("cannot read safetensors: {e}")))?;
        if tensors.is_empty() {
            return Err(bad("holds no tensors".into()));
        }
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        for (key, t) in tensors {
            let k = key.strip_prefix(PREFIX).unwrap_or(&key);
            if key.starts_with("text_encoder") || key.starts_with("lora_te") {
                return Err(bad(format!(
                    "`{key}`: LoRA layers of the text encoder are not supported (UNet layers only)"
                )));
            }
            if let Some(m) = k.strip_suffix(A_SUFFIX) {
                a.insert(m.to_string(), t);
            } else if let Some(m) = k.strip_suffix(B_SUFFIX) {
                b.insert(m.to_string(), t);
            } else {
                let hint = if key.contains(".lora.down")
                    || key.contains(".lora.up")
                    || key.starts_with("lora_unet")
                {
                    "; this looks like an older diffusers or kohya layout: convert it to the PEFT layout (`lora_A`/`lora_B`) first"
                } else if key.contains("lora_magnitude_vector") {
                    "; DoRA is not supported"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "unexpected tensor `{key}`: a LoRA file holds `unet.<module>.lora_A.weight` and `.lora_B.weight` pairs{hint}"
                )));
            }
        }
        let mut layers = BTreeMap::new();
        for (name, at) in a {
            let bt = b.remove(&name).ok_or_else(|| {
                bad(format!(
                    "`{name}` has lora_A but no lora_B ({PREFIX}{name}{B_SUFFIX})"
                ))
            })?;
            let (r, _) = at
                .dims2()
                .map_err(|e| bad(format!("`{name}.lora_A`: {e}")))?;
            let (_, rb) = bt
                .dims2()
                .map_err(|e| bad(format!("`{name}.lora_B`: {e}")))?;
            if r != rb {
                return Err(bad(format!(
                    "`{name}`: lora_A has rank {r} but lora_B has rank {rb}"
                )));
            }
            let scale = match scale {
                Some((alpha, rank, rslora)) => {
                    if rank != r {
                        return Err(bad(format!("`{name}` has rank {r} but the adapter metadata says r = {rank} (per-module ranks are not supported)")));
                    }
                    if rslora {
                        alpha / (r as f64).sqrt()
                    } else {
                        alpha / r as f64
                    }
                }
                None => 1.0,
            };
            let conv = |t: Tensor| t.to_dtype(dtype).map_err(|e| bad(e.to_string()));
            layers.insert(
                name,
                LoraLayer {
                    a: conv(at)?,
                    b: conv(bt)?,
                    scale,
                },
            );
        }
        if let Some(name) = b.keys().next() {
            return Err(bad(format!("`{name}` has lora_B but no lora_A")));
        }
        Ok(Lora { layers })
    }
}

/// The `__metadata__` of a safetensors file (its JSON header's string map).
fn metadata(path: &Path) -> Result<BTreeMap<String, String>, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| format!("not a safetensors file: {e}"))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err("not a safetensors file (header too large)".into());
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| format!("not a safetensors file: {e}"))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("not a safetensors file (header): {e}"))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// `(lora_alpha, r, use_rslora)` from diffusers' `lora_adapter_metadata` (a PEFT
/// `LoraConfig` as JSON, its keys prefixed `unet.` when a pipeline saved it); per-module
/// patterns and DoRA are refused.
fn metadata_scale(raw: &str) -> Result<Option<(f64, usize, bool)>, String> {
    let all: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("lora_adapter_metadata is not JSON: {e}"))?;
    let all = all
        .as_object()
        .ok_or("lora_adapter_metadata is not a JSON object")?;
    // diffusers' pipelines prefix each component's config (`unet.lora_alpha`); a lone model's
    // metadata is unprefixed.
    let unet: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.to_string(), v.clone())))
        .collect();
    let m = if unet.is_empty() { all } else { &unet };
    for key in ["rank_pattern", "alpha_pattern"] {
        if m.get(key)
            .and_then(|p| p.as_object())
            .is_some_and(|p| !p.is_empty())
        {
            return Err(format!(
                "lora_adapter_metadata has a `{key}`: per-module ranks or alphas are not supported"
            ));
        }
    }
    if m.get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
        return Err("DoRA adapters are not supported".into());
    }
    let (Some(alpha), Some(r)) = (
        m.get("lora_alpha").and_then(|v| v.as_f64()),
        m.get("r").and_then(|v| v.as_u64()),
    ) else {
        return Ok(None);
    };
    let rslora = m.get("use_rslora").and_then(|v| v.as_bool()) == Some(true);
    Ok(Some((alpha, r as usize, rslora)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<LoraSite> {
        [
            "a.attn1.to_q",
            "a.attn1.to_out.0",
            "a.attn2.to_q",
            "a.ff.net.2",
        ]
        .iter()
        .map(|n| LoraSite {
            name: n.to_string(),
            in_dim: 4,
            out_dim: 4,
        })
        .collect()
    }

    #[test]
    fn targets_select_by_module_suffix() {
        let names = |t: &[&str]| -> Vec<String> {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            select_sites(&sites(), &t)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names(&["to_q"]), ["a.attn1.to_q", "a.attn2.to_q"]);
        assert_eq!(
            names(&["attn2.to_q", "to_out.0"]),
            ["a.attn1.to_out.0", "a.attn2.to_q"]
        );
        let err = select_sites(&sites(), &["q".to_string()]).unwrap_err();
        assert!(err.contains("`q` matches no linear layer"), "{err}");
    }

    #[test]
    fn the_file_bakes_the_scale_and_round_trips() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, 2.0, 3.0], [0.5, -1.0, 0.0]], &dev).unwrap();
        let b = Tensor::new(&[[1f32, 0.0], [0.0, 2.0], [1.0, 1.0], [0.25, -4.0]], &dev).unwrap();
        let lora = Lora {
            layers: BTreeMap::from([(
                "down_blocks.0.attn1.to_q".to_string(),
                LoraLayer { a, b, scale: 0.5 },
            )]),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.safetensors");
        lora.save(&path).unwrap();
        let raw = candle_core::safetensors::load(&path, &dev).unwrap();
        let mut keys: Vec<&String> = raw.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "unet.down_blocks.0.attn1.to_q.lora_A.weight",
                "unet.down_blocks.0.attn1.to_q.lora_B.weight"
            ]
        );
        let back = Lora::load(&path, DType::F32, &dev).unwrap();
        let l = &back.layers["down_blocks.0.attn1.to_q"];
        assert_eq!(l.scale, 1.0);
        let x = Tensor::new(&[[0.3f32, -0.2, 1.5]], &dev).unwrap();
        let want: Vec<f32> = lora.layers["down_blocks.0.attn1.to_q"]
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got: Vec<f32> = l
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn adapter_metadata_sets_the_scale_and_patterns_are_refused() {
        assert_eq!(
            metadata_scale(r#"{"r": 4, "lora_alpha": 8, "rank_pattern": {}}"#).unwrap(),
            Some((8.0, 4, false))
        );
        assert!(
            metadata_scale(r#"{"r": 4, "lora_alpha": 8, "alpha_pattern": {"x": 2}}"#)
                .unwrap_err()
                .contains("alpha_pattern")
        );
        assert_eq!(
            metadata_scale(r#"{"unet.r": 4, "unet.lora_alpha": 6, "text_encoder.r": 8}"#).unwrap(),
            Some((6.0, 4, false))
        );
        assert_eq!(metadata_scale("{}").unwrap(), None);
    }
}
