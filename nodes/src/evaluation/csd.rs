//! The Contrastive Style Descriptor (Somepalli et al., "Measuring Style Similarity in
//! Diffusion Models", ECCV 2024): OpenAI CLIP's ViT-L/14 image tower at 224 px (QuickGELU,
//! `ln_pre`, 24 blocks of width 1024, `ln_post` on the class token, CLIP's `proj` removed),
//! then the style head `feature @ last_layer_style` (1024×768), L2-normalised.
//!
//! Weights: the authors' checkpoint (github.com/learn2phoenix/CSD, "CSD model (ViT-L)"
//! linked from its README) is a PyTorch zip pickle holding `model_state_dict` with the
//! `module.` prefix of DistributedDataParallel: `module.backbone.conv1.weight`, …,
//! `module.last_layer_style`, and `module.last_layer_content` (the content head, which the
//! style descriptor does not use and this loader deliberately ignores). The Hugging Face
//! copy `tomg-group-umd/CSD-ViT-L` (`model.safetensors`) has the same names without
//! `module.`. Both load, as `.pth` or as safetensors with either naming. Every backbone
//! tensor and the style head must be present with the right shape, and any other tensor is
//! an error naming the file: the authors' own loader uses `strict=False`, which would leave
//! a mis-named tensor at its random initial value without a word.
//!
//! The architecture is read from the shapes (width, patch, grid, depth, MLP and style
//! widths; heads = width / 64 as in OpenAI CLIP), so reduced test models load the same way.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::vit::{
    l2_normalise, safetensors_shapes, Activation, BlockTensors, Dense, Shapes, Vit, VitConfig,
    VitTensors,
};
use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

/// The key of the state dict inside the authors' pickle.
const PTH_KEY: &str = "model_state_dict";

/// The shape of a CSD network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsdConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub mlp_width: usize,
    pub style_dim: usize,
}

impl CsdConfig {
    /// The released CSD: OpenAI CLIP ViT-L/14 at 224 px with a 768-d style head.
    pub fn vit_large_patch14() -> CsdConfig {
        CsdConfig {
            image_size: 224,
            patch_size: 14,
            width: 1024,
            layers: 24,
            mlp_width: 4096,
            style_dim: 768,
        }
    }

    /// OpenAI CLIP's rule: 64-wide heads.
    pub fn heads(&self) -> usize {
        self.width / 64
    }

    fn vit(&self) -> Result<VitConfig, String> {
        if self.width == 0 || !self.width.is_multiple_of(64) {
            return Err(format!(
                "width {} is not a multiple of 64 (CLIP's head width)",
                self.width
            ));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err("image size is not a multiple of the patch size".into());
        }
        Ok(VitConfig {
            image_size: self.image_size,
            patch_size: self.patch_size,
            width: self.width,
            layers: self.layers,
            heads: self.heads(),
            mlp_width: self.mlp_width,
            eps: 1e-5,
            act: Activation::QuickGelu,
        })
    }

    /// Read the architecture from the tensor shapes of a checkpoint whose names start
    /// with `prefix` (`module.` or nothing).
    fn from_shapes(shapes: &Shapes, prefix: &str) -> Result<CsdConfig, String> {
        let b = format!("{prefix}backbone.");
        let shape = |name: &str| {
            shapes
                .get(name)
                .ok_or_else(|| format!("missing tensor `{name}`"))
        };
        let conv = shape(&format!("{b}conv1.weight"))?;
        let [width, 3, patch, p2] = conv[..] else {
            return Err(format!(
                "`{b}conv1.weight` has shape {conv:?}, expected [width, 3, patch, patch]"
            ));
        };
        if patch != p2 {
            return Err(format!(
                "`{b}conv1.weight` has a non-square kernel {conv:?}"
            ));
        }
        let pos = shape(&format!("{b}positional_embedding"))?;
        let grid = match pos[..] {
            [t, w] if w == width && t >= 2 => (1..=t).find(|g| g * g + 1 == t),
            _ => None,
        }
        .ok_or_else(|| {
            format!("`{b}positional_embedding` has shape {pos:?}, expected [grid² + 1, {width}]")
        })?;
        let layers = (0..)
            .take_while(|i| {
                shapes.contains_key(&format!("{b}transformer.resblocks.{i}.ln_1.weight"))
            })
            .count();
        let mlp_width = match shapes.get(&format!("{b}transformer.resblocks.0.mlp.c_fc.weight")) {
            Some(s) => s[0],
            None => 4 * width,
        };
        let style = shape(&format!("{prefix}last_layer_style"))?;
        let [w, style_dim] = style[..] else {
            return Err(format!(
                "`{prefix}last_layer_style` has shape {style:?}, expected [{width}, dim]"
            ));
        };
        if w != width {
            return Err(format!(
                "`{prefix}last_layer_style` has shape {style:?}, expected [{width}, dim]"
            ));
        }
        Ok(CsdConfig {
            image_size: grid * patch,
            patch_size: patch,
            width,
            layers,
            mlp_width,
            style_dim,
        })
    }
}

/// The CSD style descriptor.
pub struct Csd {
    config: CsdConfig,
    vit: Vit,
    style: Dense,
}

/// `module.` when the names carry DistributedDataParallel's prefix.
fn prefix_of(has: impl Fn(&str) -> bool) -> &'static str {
    if has("module.backbone.conv1.weight") {
        "module."
    } else {
        ""
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// The names and shapes in a PyTorch zip checkpoint, and the key of its state dict
/// (`model_state_dict` in the authors' file; `None` for a bare state dict).
fn pth_shapes(path: &Path) -> Result<(Shapes, Option<&'static str>), ModelError> {
    let read = |key: Option<&str>| candle_core::pickle::read_pth_tensor_info(path, false, key);
    let (infos, key) = match read(Some(PTH_KEY)) {
        Ok(infos) => (infos, Some(PTH_KEY)),
        Err(first) => match read(None) {
            Ok(infos) if !infos.is_empty() => (infos, None),
            _ => {
                return Err(ModelError::bad(
                    path,
                    format!("cannot read it as a PyTorch checkpoint with `{PTH_KEY}` ({first}); legacy (non-zip) pickles of torch < 1.6 are not read: re-save it with a current torch or convert it to safetensors"),
                ))
            }
        },
    };
    let shapes = infos
        .into_iter()
        .map(|t| (t.name, t.layout.shape().dims().to_vec()))
        .collect();
    Ok((shapes, key))
}

impl Csd {
    /// Load the authors' checkpoint (`.pth`, any name not ending in `.safetensors`) or a
    /// safetensors file with the same tensors, with or without the `module.` prefix.
    pub fn load(path: &Path, device: &Device) -> Result<Csd, ModelError> {
        let (shapes, weights) = if is_safetensors(path) {
            let shapes = safetensors_shapes(path)?;
            (shapes, Weights::load(path, DType::F32, device)?)
        } else {
            let (shapes, key) = pth_shapes(path)?;
            (shapes, Weights::load_pth(path, key, DType::F32, device)?)
        };
        let prefix = prefix_of(|n| shapes.contains_key(n));
        let config = CsdConfig::from_shapes(&shapes, prefix)
            .map_err(|e| ModelError::bad(path, format!("not a CSD checkpoint: {e}")))?;
        let model = Self::from_weights(config, &weights)?;
        weights.finish(&["last_layer_content"])?;
        Ok(model)
    }

    /// Build from open weights (a file, or [`Weights::random`]), names with or without
    /// `module.`; the caller checks for unused tensors with [`Weights::finish`].
    pub fn from_weights(config: CsdConfig, w: &Weights) -> Result<Csd, ModelError> {
        let vit_cfg = config.vit().map_err(|e| ModelError::bad(w.path(), e))?;
        let prefix = prefix_of(|n| w.contains(n));
        let (d, m, p) = (config.width, config.mlp_width, config.patch_size);
        let get = |name: &str, shape: &[usize]| w.get(&format!("{prefix}backbone.{name}"), shape);
        let pair = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                get(&format!("{name}.weight"), &[out, inp])?,
                get(&format!("{name}.bias"), &[out])?,
            ))
        };
        let norm = |name: &str| -> Result<(Tensor, Tensor), ModelError> {
            Ok((
                get(&format!("{name}.weight"), &[d])?,
                get(&format!("{name}.bias"), &[d])?,
            ))
        };
        let bad = |e: candle_core::Error| ModelError::bad(w.path(), e);
        let mut blocks = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let n = format!("transformer.resblocks.{l}");
            let in_w = get(&format!("{n}.attn.in_proj_weight"), &[3 * d, d])?;
            let in_b = get(&format!("{n}.attn.in_proj_bias"), &[3 * d])?;
            // nn.MultiheadAttention packs q, k, v in that order.
            let chunk = |i: usize| -> Result<(Tensor, Tensor), ModelError> {
                Ok((
                    in_w.narrow(0, i * d, d).map_err(bad)?,
                    in_b.narrow(0, i * d, d).map_err(bad)?,
                ))
            };
            blocks.push(BlockTensors {
                ln1: norm(&format!("{n}.ln_1"))?,
                q: chunk(0)?,
                k: chunk(1)?,
                v: chunk(2)?,
                out: pair(&format!("{n}.attn.out_proj"), d, d)?,
                ln2: norm(&format!("{n}.ln_2"))?,
                fc1: pair(&format!("{n}.mlp.c_fc"), m, d)?,
                fc2: pair(&format!("{n}.mlp.c_proj"), d, m)?,
            });
        }
        let tokens = vit_cfg.tokens();
        let tensors = VitTensors {
            patch: get("conv1.weight", &[d, 3, p, p])?,
            class: get("class_embedding", &[d])?,
            positions: get("positional_embedding", &[tokens, d])?,
            ln_pre: norm("ln_pre")?,
            blocks,
            ln_post: norm("ln_post")?,
        };
        let style = w.get(&format!("{prefix}last_layer_style"), &[d, config.style_dim])?;
        Ok(Csd {
            vit: Vit::new(vit_cfg, tensors).map_err(bad)?,
            style: Dense::from_in_out(&style, None).map_err(bad)?,
            config,
        })
    }

    /// A model with random weights drawn from `seed` (benchmarks, tiny test models), on
    /// the CPU.
    pub fn random_weights(config: CsdConfig, seed: u64) -> Result<Csd, ModelError> {
        Self::from_weights(config, &Weights::random(seed, "<random CSD weights>"))
    }

    /// Write random weights as a safetensors file (names without `module.`) that
    /// [`Self::load`] reads.
    pub fn write_random(path: &Path, config: &CsdConfig, seed: u64) -> Result<(), ModelError> {
        let w = Weights::random(seed, "<random CSD weights>");
        Self::from_weights(config.clone(), &w)?;
        candle_core::safetensors::save(&w.into_tensors(), path)
            .map_err(|e| ModelError::bad(path, e))
    }

    /// The backbone's feature `[n, width]` (`ln_post` of the class token) of images
    /// `[n, 3, size, size]` normalised with the CLIP mean and std.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.vit.forward(x)
    }

    /// The L2-normalised style descriptors `[n, style_dim]` of images `[n, 3, size, size]`
    /// normalised with the CLIP mean and std.
    pub fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        l2_normalise(&self.style.forward(&self.vit.forward(x)?)?)
    }

    /// The input side length (224 for the released CSD).
    pub fn image_size(&self) -> usize {
        self.config.image_size
    }

    /// The descriptor width (768 for the released CSD).
    pub fn dim(&self) -> usize {
        self.config.style_dim
    }

    pub fn config(&self) -> &CsdConfig {
        &self.config
    }
}
