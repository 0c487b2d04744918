//! The VAE's residual blocks: the shared [`ResnetBlock`] without a time embedding, with
//! the VAE's group-norm epsilon.

use crate::diffusion::weights::Weights;
use crate::diffusion::ModelError;

pub use crate::diffusion::resnet::ResnetBlock;

/// diffusers builds every VAE group norm with this epsilon (`resnet_eps=1e-6`).
pub const NORM_EPS: f64 = 1e-6;

/// Load `{name}` mapping `inp` → `out` channels.
pub fn load(
    w: &Weights,
    name: &str,
    inp: usize,
    out: usize,
    groups: usize,
) -> std::result::Result<ResnetBlock, ModelError> {
    ResnetBlock::load(w, name, inp, out, None, groups, NORM_EPS)
}

/// Load a block's `{block}.resnets.{0..count}`: the first maps `inp` → `out` channels, the
/// others keep `out`.
pub fn load_resnets(
    w: &Weights,
    block: &str,
    count: usize,
    inp: usize,
    out: usize,
    groups: usize,
) -> std::result::Result<Vec<ResnetBlock>, ModelError> {
    (0..count)
        .map(|j| {
            let from = if j == 0 { inp } else { out };
            load(w, &format!("{block}.resnets.{j}"), from, out, groups)
        })
        .collect()
}
