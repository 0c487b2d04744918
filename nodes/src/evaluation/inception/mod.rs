//! Inception v3 as a feature extractor for FID and KID: the 2048-d output of the final
//! global average pool (pytorch-fid's `pool3`), in two variants.
//!
//! - [`InceptionVariant::FidTf2015`] — the standard FID network: the TensorFlow
//!   "2015-12-05" Inception as ported by pytorch-fid (`fid_inception_v3()`): torchvision's
//!   `Inception3` layout with 1008 classes, and the `FIDInceptionA/C/E_1/E_2` patches —
//!   average-pool branches that do **not** count the zero padding (TensorFlow's average) in
//!   Mixed_5b–5d, 6b–6e and 7b, and a **max**-pool branch in Mixed_7c.
//!   Weights: pytorch-fid's GitHub release,
//!   <https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth>
//!   (≈ 91 MiB; the name carries the first hex digits of its SHA-256, torch.hub's check).
//! - [`InceptionVariant::Torchvision`] — torchvision's ImageNet `inception_v3` (the backbone
//!   of the package the NSYNC paper took its FID/KID from): plain blocks whose average pools
//!   count the padding, an average pool in Mixed_7c, 1000 classes and an `AuxLogits` head.
//!   Weights: <https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth>
//!   (`torchvision.models.Inception_V3_Weights.IMAGENET1K_V1`).
//!
//! Both use BatchNorm with ε = 0.001 after every convolution (torchvision's `BasicConv2d`).
//!
//! **Input**: `[N, 3, H, W]` f32, normally 299×299, scaled to [−1, 1] as `2x − 1` of [0, 1]
//! pixels — what pytorch-fid's `InceptionV3` feeds its blocks after its resize, for both
//! variants (it calls the blocks directly, so torchvision's `transform_input` never runs;
//! torchvision's own model with `transform_input=True` maps ImageNet-normalised input to
//! the same `2x − 1`). The resizing belongs to [`super::preprocess`].
//!
//! **Weights** load strictly ([`Weights`]): the `.pth` files above as they are (PyTorch
//! pickles, zip or legacy format, read without Python) or converted to safetensors with the
//! same tensor names (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`,
//! …). Every tensor is checked by name and shape; `fc` (1008 vs 1000 classes, which also
//! tells the two files apart) and torchvision's `AuxLogits` are checked and unused;
//! `num_batches_tracked` buffers are ignored. Each BatchNorm is folded into its convolution
//! at load time (in f64): inference only, no gradients.
//!
//! **Speed**: on the CPU, activations are kept channel-major and every convolution is one
//! matrix product over the whole batch, with im2col, pooling and bias + ReLU as parallel
//! kernels (`ops.rs`); other devices use candle's `conv2d` and pools. Measured on a 2-core
//! AMD EPYC (Zen 4), 2 threads, f32, 299×299, when the machine was otherwise idle: 11.2
//! images/s at batch 8 and 11.0 at batch 16, against PyTorch 2.15 (pytorch-fid's model,
//! `bench/inception_reference.py`) 10.0–11.0 and 9.5–9.9; per CPU-second 6.0 against 5.0–5.6.
//!
//! Parity with pytorch-fid / torchvision on random weights (see [`random_weights`]) is
//! tested by `nodes/tests/inception_parity.rs` against fixtures written by
//! `tools/make_inception_fixtures.py` (features agree to ~5e-7 relative).

mod blocks;
mod layers;
mod ops;
mod random;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;
use blocks::{BlockA, BlockB, BlockC, BlockD, BlockE};
use layers::{max_pool_3x3_s2, ConvBn, PoolKind};
use ops::Geometry;
pub use random::random_weights;

/// pytorch-fid's FID Inception weights (`fid_inception_v3()` downloads them from here).
pub const FID_WEIGHTS_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";

/// torchvision's ImageNet Inception v3 weights (`Inception_V3_Weights.IMAGENET1K_V1`).
pub const TORCHVISION_WEIGHTS_URL: &str =
    "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth";

/// Channels of pytorch-fid's four output blocks: first max pool, second max pool,
/// Mixed_6e (the aux-classifier input), final average pool.
pub const BLOCK_CHANNELS: [usize; 4] = [64, 192, 768, 2048];

/// Length of the feature vector [`InceptionV3::forward_features`] returns.
pub const FEATURES: usize = 2048;

/// Images that go through the stem (Conv2d_1a … the second max pool, at 149–71 px)
/// together. Its activations are large (5.5 MB per image after Conv2d_2b), so a small
/// group stays in cache and below malloc's mmap threshold (no page faults on every
/// allocation), while its matrix products stay wide (≥ 5041 columns per image).
const STEM_GROUP: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InceptionVariant {
    /// pytorch-fid's port of the TensorFlow 2015-12-05 Inception (standard FID).
    FidTf2015,
    /// torchvision's ImageNet Inception v3.
    Torchvision,
}

impl InceptionVariant {
    /// Classes of the (unused) `fc` layer in the published checkpoint.
    pub fn classes(self) -> usize {
        match self {
            InceptionVariant::FidTf2015 => 1008,
            InceptionVariant::Torchvision => 1000,
        }
    }

    fn pools(self) -> (PoolKind, PoolKind) {
        match self {
            InceptionVariant::FidTf2015 => (PoolKind::AvgExcludePad, PoolKind::Max),
            InceptionVariant::Torchvision => (PoolKind::AvgIncludePad, PoolKind::AvgIncludePad),
        }
    }
}

/// Where the network's tensors come from: a checkpoint ([`Weights`]) or the seeded
/// generator of [`random_weights`].
pub(crate) trait TensorSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError>;
    fn contains(&self, name: &str) -> bool;
    fn path(&self) -> &Path;
}

impl TensorSource for Weights {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        self.get(name, shape).map_err(reword)
    }
    fn contains(&self, name: &str) -> bool {
        Weights::contains(self, name)
    }
    fn path(&self) -> &Path {
        Weights::path(self)
    }
}

pub struct InceptionV3 {
    variant: InceptionVariant,
    /// Conv2d_1a_3x3, 2a, 2b | max pool | 3b, 4a | max pool.
    stem: [ConvBn; 5],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7: [BlockE; 2],
}

impl InceptionV3 {
    /// Loads a checkpoint: `.pth`/`.pt` (PyTorch pickle) or `.safetensors`, onto `device`.
    pub fn load(
        path: &Path,
        variant: InceptionVariant,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                hint: match variant {
                    InceptionVariant::FidTf2015 => {
                        format!(
                            "download pytorch-fid's FID Inception weights from {FID_WEIGHTS_URL}"
                        )
                    }
                    InceptionVariant::Torchvision => {
                        format!("download torchvision's Inception v3 weights from {TORCHVISION_WEIGHTS_URL}")
                    }
                },
            });
        }
        let weights = Weights::load(path, DType::F32, &Device::Cpu)?;
        Self::from_weights(&weights, variant, device)
    }

    /// Builds the network from `weights`, which must hold exactly its tensors (plus
    /// `num_batches_tracked` buffers).
    pub fn from_weights(
        weights: &Weights,
        variant: InceptionVariant,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let net = Self::build(weights, variant, device)?;
        weights.finish(&["num_batches_tracked"]).map_err(reword)?;
        Ok(net)
    }

    /// The network with the random weights of [`random_weights`]`(variant, seed)`, without
    /// materialising the unused tensors' file.
    pub fn random(
        variant: InceptionVariant,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Self::build(&random::RandomSource::new(seed), variant, device)
    }

    pub fn variant(&self) -> InceptionVariant {
        self.variant
    }

    pub(crate) fn build(
        src: &dyn TensorSource,
        variant: InceptionVariant,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let conv = |name: &str, cin, cout, k, stride, pad| {
            let g = Geometry {
                kernel: (k, k),
                stride,
                pad: (pad, pad),
            };
            ConvBn::load(src, name, (cin, cout), g, device)
        };
        let (pool, last_pool) = variant.pools();
        let net = InceptionV3 {
            variant,
            stem: [
                conv("Conv2d_1a_3x3", 3, 32, 3, 2, 0)?,
                conv("Conv2d_2a_3x3", 32, 32, 3, 1, 0)?,
                conv("Conv2d_2b_3x3", 32, 64, 3, 1, 1)?,
                conv("Conv2d_3b_1x1", 64, 80, 1, 1, 0)?,
                conv("Conv2d_4a_3x3", 80, 192, 3, 1, 0)?,
            ],
            mixed_5: [
                BlockA::load(src, "Mixed_5b", 192, 32, pool, device)?,
                BlockA::load(src, "Mixed_5c", 256, 64, pool, device)?,
                BlockA::load(src, "Mixed_5d", 288, 64, pool, device)?,
            ],
            mixed_6a: BlockB::load(src, "Mixed_6a", 288, device)?,
            mixed_6: [
                BlockC::load(src, "Mixed_6b", 768, 128, pool, device)?,
                BlockC::load(src, "Mixed_6c", 768, 160, pool, device)?,
                BlockC::load(src, "Mixed_6d", 768, 160, pool, device)?,
                BlockC::load(src, "Mixed_6e", 768, 192, pool, device)?,
            ],
            mixed_7a: BlockD::load(src, "Mixed_7a", 768, device)?,
            mixed_7: [
                BlockE::load(src, "Mixed_7b", 1280, pool, device)?,
                BlockE::load(src, "Mixed_7c", 2048, last_pool, device)?,
            ],
        };
        check_unused_heads(src, variant)?;
        Ok(net)
    }

    /// pytorch-fid's block outputs 0..=`last` (`InceptionV3(output_blocks=[0..=last])`):
    /// `[N, 64, 73, 73]` after the first max pool, `[N, 192, 35, 35]` after the second,
    /// `[N, 768, 17, 17]` after Mixed_6e, `[N, 2048, 1, 1]` after the final average pool
    /// (sizes for 299×299 input).
    pub fn forward_blocks(&self, x: &Tensor, last: usize) -> candle_core::Result<Vec<Tensor>> {
        let last = last.min(3);
        let keep = std::array::from_fn(|k| k <= last);
        let outs = self.run(x, keep)?;
        outs.into_iter()
            .flatten()
            .map(|t| t.permute((1, 0, 2, 3))?.contiguous())
            .collect()
    }

    /// The 2048-d features, `[N, 2048]` f32.
    pub fn forward_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let [_, _, _, pooled] = self.run(x, [false, false, false, true])?;
        let pooled = pooled.expect("the last block");
        let (c, n, _, _) = pooled.dims4()?;
        pooled.reshape((c, n))?.t()?.contiguous()
    }

    /// Runs the network on `x` (`[N, 3, H, W]`) up to the last block in `keep`, and returns
    /// the kept ones of pytorch-fid's four block outputs, channel-major (`[C, N, H, W]`).
    fn run(&self, x: &Tensor, keep: [bool; 4]) -> candle_core::Result<[Option<Tensor>; 4]> {
        let (n, c, _, _) = x.dims4()?;
        if n == 0 || c != 3 || x.dtype() != DType::F32 {
            candle_core::bail!(
                "Inception v3 expects [N, 3, H, W] f32 input, got {:?} {:?}",
                x.dims(),
                x.dtype()
            );
        }
        let last = keep.iter().rposition(|&k| k).unwrap_or(0);
        let mut outs: [Option<Tensor>; 4] = Default::default();
        // The stem, a few images at a time (see STEM_GROUP).
        let mut parts: [Vec<Tensor>; 2] = Default::default();
        for start in (0..n).step_by(STEM_GROUP) {
            let len = STEM_GROUP.min(n - start);
            let mut y = x
                .narrow(0, start, len)?
                .permute((1, 0, 2, 3))?
                .contiguous()?;
            for conv in &self.stem[..3] {
                y = conv.forward(&y)?;
            }
            y = max_pool_3x3_s2(&y)?;
            if keep[0] {
                parts[0].push(y.clone());
            }
            if last >= 1 {
                y = max_pool_3x3_s2(&self.stem[4].forward(&self.stem[3].forward(&y)?)?)?;
                parts[1].push(y);
            }
        }
        for (k, p) in parts.iter().enumerate() {
            if !p.is_empty() {
                outs[k] = Some(if p.len() == 1 {
                    p[0].clone()
                } else {
                    Tensor::cat(p, 1)?
                });
            }
        }
        if last <= 1 {
            if !keep[1] {
                outs[1] = None;
            }
            return Ok(outs);
        }
        let mut y = outs[1].clone().expect("block 1");
        if !keep[1] {
            outs[1] = None;
        }
        for block in &self.mixed_5 {
            y = block.forward(&y)?;
        }
        y = self.mixed_6a.forward(&y)?;
        for block in &self.mixed_6 {
            y = block.forward(&y)?;
        }
        if keep[2] {
            outs[2] = Some(y.clone());
        }
        if last == 2 {
            return Ok(outs);
        }
        y = self.mixed_7a.forward(&y)?;
        for block in &self.mixed_7 {
            y = block.forward(&y)?;
        }
        let (c, n, h, w) = y.dims4()?;
        outs[3] = Some(
            y.reshape((c, n, h * w))?
                .mean_keepdim(2)?
                .reshape((c, n, 1, 1))?,
        );
        Ok(outs)
    }
}

/// [`Weights`]' messages speak of diffusers' `config.json`; an Inception checkpoint has none.
fn reword(e: ModelError) -> ModelError {
    match e {
        ModelError::BadFile { path, message } => ModelError::BadFile {
            path,
            message: message
                .replace(" (does config.json match the weights?)", "")
                .replace(
                    "the weights do not match the architecture in config.json",
                    "not an Inception v3 checkpoint (pytorch-fid's or torchvision's layout)",
                ),
        },
        e => e,
    }
}

/// The checkpoint's classifier (and torchvision's auxiliary classifier) are not used for
/// features, but are checked, so that a truncated or mismatched file is refused.
fn check_unused_heads(src: &dyn TensorSource, variant: InceptionVariant) -> Result<(), ModelError> {
    let classes = variant.classes();
    // The two published files differ in their heads only: say so on a class-count mismatch.
    let hint = |e: ModelError| match e {
        ModelError::BadFile { path, message } if message.contains("has shape") => {
            let message = format!(
                "{message}; pytorch-fid's FID Inception has 1008 classes, torchvision's \
                 ImageNet Inception 1000: is the variant ({variant:?}) right?"
            );
            ModelError::BadFile { path, message }
        }
        e => e,
    };
    src.tensor("fc.weight", &[classes, FEATURES])
        .map_err(hint)?;
    src.tensor("fc.bias", &[classes]).map_err(hint)?;
    if variant == InceptionVariant::Torchvision {
        // torchvision's file has the AuxLogits head; a state dict saved with
        // aux_logits=False does not. Either all of it or none.
        let convs = [
            ("AuxLogits.conv0", 768, 128, 1),
            ("AuxLogits.conv1", 128, 768, 5),
        ];
        let mut names: Vec<(String, Vec<usize>)> = Vec::new();
        for (name, cin, cout, k) in convs {
            names.push((format!("{name}.conv.weight"), vec![cout, cin, k, k]));
            for leaf in ["weight", "bias", "running_mean", "running_var"] {
                names.push((format!("{name}.bn.{leaf}"), vec![cout]));
            }
        }
        names.push(("AuxLogits.fc.weight".into(), vec![classes, 768]));
        names.push(("AuxLogits.fc.bias".into(), vec![classes]));
        if names.iter().any(|(n, _)| src.contains(n)) {
            for (name, shape) in &names {
                src.tensor(name, shape)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable route (candle's conv2d, pools and broadcasts: what CUDA and Metal run)
    /// computes the same features as the CPU kernels, for both variants.
    #[test]
    fn portable_route_agrees_with_cpu_kernels() {
        let v: Vec<f32> = (0..2 * 3 * 80 * 80)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
            .collect();
        let x = Tensor::from_vec(v, (2, 3, 80, 80), &Device::Cpu).unwrap();
        for variant in [InceptionVariant::FidTf2015, InceptionVariant::Torchvision] {
            let net = InceptionV3::random(variant, 5, &Device::Cpu).unwrap();
            let fast = net.forward_features(&x).unwrap();
            ops::FORCE_PORTABLE.with(|f| f.set(true));
            let portable = net.forward_features(&x);
            ops::FORCE_PORTABLE.with(|f| f.set(false));
            let portable = portable.unwrap();
            let diff = (&fast - &portable)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            let scale = portable.abs().unwrap().max_all().unwrap();
            let rel = diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap();
            assert!(rel < 1e-5, "{variant:?}: {rel}");
        }
    }
}
