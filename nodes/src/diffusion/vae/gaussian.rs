//! What the VAE encoder returns: a diagonal Gaussian over latents (diffusers
//! `DiagonalGaussianDistribution`).
//!
//! The noise for [`DiagonalGaussian::sample`] is an argument, never drawn here: the
//! caller owns the random stream (seeded, reproducible, cacheable), and a parity test can
//! feed diffusers' exact noise. `logvar` is clamped to `[-30, 20]` as diffusers does,
//! which keeps `std` finite; the clamp is `maximum`/`minimum`, so gradients flow through
//! it (to zero where it clips, like PyTorch's).

use candle_core::Tensor;

use crate::diffusion::nn::Result;

pub struct DiagonalGaussian {
    /// `[b, latent_channels, h, w]`.
    pub mean: Tensor,
    /// `[b, latent_channels, h, w]`, already clamped to `[-30, 20]`.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// Split the encoder's `[b, 2·c, h, w]` output into mean (first `c` channels) and log
    /// variance (last `c`), as `torch.chunk(parameters, 2, dim=1)` does.
    pub fn from_parameters(parameters: &Tensor) -> Result<DiagonalGaussian> {
        let c2 = parameters.dim(1)?;
        if c2 % 2 != 0 {
            candle_core::bail!("Gaussian parameters need an even channel count, got {c2}");
        }
        let c = c2 / 2;
        Ok(DiagonalGaussian {
            mean: parameters.narrow(1, 0, c)?,
            logvar: parameters.narrow(1, c, c)?.clamp(-30f32, 20f32)?,
        })
    }

    /// `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        (&self.logvar * 0.5)?.exp()
    }

    /// `mean + std · noise`, with `noise` standard normal of the mean's shape.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        &self.mean + (self.std()? * noise)?
    }

    /// The most likely latents (the mean), diffusers' `latent_dist.mode()`.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }
}
