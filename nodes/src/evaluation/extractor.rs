//! Feature extractors: a network, its weights and the exact preprocessing of its reference.
//!
//! Each metric reads features of one network: FID and KID the Inception pool features,
//! CMMD the CLIP ViT-L/14-336 embeddings, CSD the style descriptor. A [`Network`] names the
//! network *and* its preprocessing, because both change the numbers (a different resize
//! moves FID by several points); its [`Network::id`] goes into every cached feature's key
//! and into the settings printed beside each result.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::RgbImage;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::clip_vision::ClipVision;
use super::csd::Csd;
use super::inception::{InceptionV3, InceptionVariant};
use super::preprocess::{prepare_batch, Recipe};
use crate::diffusion::ModelError;

/// The Inception network behind FID and KID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FidBackbone {
    /// Standard FID: the TF 2015-12-05 Inception as ported by pytorch-fid
    /// (`pt_inception-2015-12-05-6726825d.pth`).
    #[default]
    Tf2015,
    /// torchvision's ImageNet Inception v3 (`inception_v3_google-0cc3c7bd.pth`), the
    /// backbone behind the NSYNC paper's own FID/KID numbers (not comparable with standard FID).
    Torchvision,
}

/// How images are resized for the standard Inception.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FidResize {
    /// pytorch-fid: bilinear to 299 without antialias, then `2x−1`.
    #[default]
    PytorchFid,
    /// clean-fid's "clean" mode: PIL bicubic with antialias on floats, `(x−128)/128`.
    Clean,
}

/// A network with its preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Inception(FidBackbone, FidResize),
    Clip,
    Csd,
}

impl Network {
    pub fn recipe(&self) -> Recipe {
        match self {
            Network::Inception(FidBackbone::Tf2015, FidResize::PytorchFid) => Recipe::PytorchFid,
            Network::Inception(FidBackbone::Tf2015, FidResize::Clean) => Recipe::CleanFid,
            Network::Inception(FidBackbone::Torchvision, _) => Recipe::TorchvisionInception,
            Network::Clip => Recipe::Cmmd,
            Network::Csd => Recipe::Csd,
        }
    }

    /// A stable identifier of network and preprocessing, for cache keys. Bump the version
    /// suffix when the implementation's output changes.
    pub fn id(&self) -> String {
        let net = match self {
            Network::Inception(FidBackbone::Tf2015, _) => "inception-v3-fid-tf2015",
            Network::Inception(FidBackbone::Torchvision, _) => "inception-v3-torchvision",
            Network::Clip => "clip-vision-projection-l2",
            Network::Csd => "csd-style-l2",
        };
        format!("{net}/v1|{}", self.recipe().id())
    }

    /// One line for reports: what the network is and how images were prepared.
    pub fn describe(&self) -> &'static str {
        match self {
            Network::Inception(FidBackbone::Tf2015, FidResize::PytorchFid) => {
                "Inception v3 (TF 2015-12-05, pytorch-fid), pool 2048-d; bilinear resize to 299 without antialias, 2x-1"
            }
            Network::Inception(FidBackbone::Tf2015, FidResize::Clean) => {
                "Inception v3 (TF 2015-12-05, pytorch-fid), pool 2048-d; clean-fid resize (PIL bicubic on floats to 299)"
            }
            Network::Inception(FidBackbone::Torchvision, _) => {
                "Inception v3 (torchvision ImageNet weights), pool 2048-d"
            }
            Network::Clip => {
                "CLIP ViT-L/14-336 image embeddings, L2-normalised; centre crop, PIL bicubic to 336"
            }
            Network::Csd => {
                "CSD ViT-L style descriptor, L2-normalised; shorter side PIL bicubic to 224, centre crop"
            }
        }
    }
}

enum Loaded {
    Inception(Box<InceptionV3>),
    Clip(Box<ClipVision>),
    Csd(Box<Csd>),
}

/// A loaded network, ready to turn images into feature rows.
pub struct Extractor {
    network: Network,
    net: Loaded,
    device: Device,
}

impl Extractor {
    /// Load the weights at `path` (a file for Inception and CSD, a folder for CLIP).
    pub fn load(network: Network, path: &Path, device: &Device) -> Result<Self, ModelError> {
        let net = match network {
            Network::Inception(backbone, _) => {
                let variant = match backbone {
                    FidBackbone::Tf2015 => InceptionVariant::FidTf2015,
                    FidBackbone::Torchvision => InceptionVariant::Torchvision,
                };
                Loaded::Inception(Box::new(InceptionV3::load(path, variant, device)?))
            }
            Network::Clip => Loaded::Clip(Box::new(ClipVision::from_dir(path, device)?)),
            Network::Csd => Loaded::Csd(Box::new(Csd::load(path, device)?)),
        };
        Ok(Extractor {
            network,
            net,
            device: device.clone(),
        })
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// Features of `images`, one row each, in order.
    pub fn extract(&self, images: &[&RgbImage]) -> candle_core::Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let x = prepare_batch(self.network.recipe(), images, &self.device)?;
        let f: Tensor = match &self.net {
            Loaded::Inception(m) => m.forward_features(&x)?,
            Loaded::Clip(m) => m.embed(&x)?,
            Loaded::Csd(m) => m.embed(&x)?,
        };
        f.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()
    }
}
