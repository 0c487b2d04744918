//! Evaluating generated image sets against one real set: features (cached per image), then
//! the estimators, then the table. Shared by the `evaluate` node and `nsync eval`.
//!
//! Features are cached per (network and preprocessing, weights digest, image digest), so a
//! rerun after adding 10 generated images extracts 10 feature rows and recomputes the cheap
//! aggregates. Networks load lazily, only when some image's features are missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use image::RgbImage;
use nsync_cache::{Digest, FramedHasher};

use super::extractor::{Extractor, FidBackbone, FidResize, Network};
use super::report::{Metric, MetricValue, MetricsTable, Row, SetInfo};
use super::stats::{self, Features, KidSettings, MetricError};
use crate::diffusion::ModelError;

/// One image: its content digest, and how to decode it if its features are not cached.
pub struct ImageRef<'a> {
    pub id: String,
    pub digest: Digest,
    pub load: Box<dyn Fn() -> Result<RgbImage, String> + Sync + 'a>,
}

/// A named set of images (the real test images, or one method's generations).
pub struct ImageSet<'a> {
    pub name: String,
    pub images: Vec<ImageRef<'a>>,
}

/// Where cached feature rows live: the engine's memo in a pipeline, nowhere for one-off use.
pub trait FeatureCache: Sync {
    fn get(&self, key: &Digest) -> Option<Vec<u8>>;
    fn put(&self, key: &Digest, bytes: &[u8]) -> Result<(), String>;
}

impl FeatureCache for nsync_engine::memo::Memo<'_> {
    fn get(&self, key: &Digest) -> Option<Vec<u8>> {
        nsync_engine::memo::Memo::get(self, key)
    }
    fn put(&self, key: &Digest, bytes: &[u8]) -> Result<(), String> {
        nsync_engine::memo::Memo::put(self, key, bytes).map_err(|e| e.to_string())
    }
}

/// No caching (`nsync eval`).
pub struct NoCache;

impl FeatureCache for NoCache {
    fn get(&self, _: &Digest) -> Option<Vec<u8>> {
        None
    }
    fn put(&self, _: &Digest, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// A weights file or folder and the digest of its content.
#[derive(Clone, Debug)]
pub struct WeightsRef {
    pub path: PathBuf,
    pub digest: Digest,
}

/// The weights of each network; only those the chosen metrics need must be given.
#[derive(Clone, Debug, Default)]
pub struct EvalWeights {
    pub inception: Option<WeightsRef>,
    pub clip: Option<WeightsRef>,
    pub csd: Option<WeightsRef>,
}

#[derive(Clone, Debug)]
pub struct EvalSettings {
    pub metrics: Vec<Metric>,
    pub fid_backbone: FidBackbone,
    pub fid_resize: FidResize,
    pub kid_subsets: usize,
    pub kid_subset_size: Option<usize>,
    /// Bootstrap replicates for confidence intervals (0: none).
    pub bootstrap: usize,
    pub confidence: f64,
    pub seed: u64,
    /// Images per forward pass.
    pub batch_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{metric}: {source}")]
    Metric {
        metric: &'static str,
        source: MetricError,
    },
    #[error("image `{id}` of `{set}`: {message}")]
    Image {
        set: String,
        id: String,
        message: String,
    },
    #[error("{metric} needs {what} weights; {hint}")]
    MissingWeights {
        metric: &'static str,
        what: &'static str,
        hint: String,
    },
    #[error("`{set}` has no images; evaluate needs at least 2 images per set")]
    EmptySet { set: String },
    #[error("feature extraction failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cannot cache features: {0}")]
    Cache(String),
}

/// Runs an evaluation; reports progress through `status`.
pub struct Evaluator<'a> {
    pub settings: &'a EvalSettings,
    pub weights: &'a EvalWeights,
    pub device: Device,
    pub cache: &'a dyn FeatureCache,
    pub status: &'a (dyn Fn(String) + Sync),
    /// How to name a missing weight in errors (`the \`inception\` parameter`, `--inception`).
    pub weight_hint: &'a (dyn Fn(&'static str) -> String + Sync),
}

impl Evaluator<'_> {
    pub fn run(&self, real: &ImageSet, fakes: &[ImageSet]) -> Result<MetricsTable, EvalError> {
        for s in std::iter::once(real).chain(fakes) {
            if s.images.is_empty() {
                return Err(EvalError::EmptySet {
                    set: s.name.clone(),
                });
            }
        }
        let st = self.settings;
        let mut networks: Vec<(Network, &'static str, Option<&WeightsRef>)> = Vec::new();
        let inception = Network::Inception(st.fid_backbone, st.fid_resize);
        let uses = |m: Metric| st.metrics.contains(&m);
        if uses(Metric::Fid) || uses(Metric::Kid) {
            networks.push((inception, "inception", self.weights.inception.as_ref()));
        }
        if uses(Metric::Cmmd) {
            networks.push((Network::Clip, "clip", self.weights.clip.as_ref()));
        }
        if uses(Metric::Csd) {
            networks.push((Network::Csd, "csd", self.weights.csd.as_ref()));
        }
        let mut feats: BTreeMap<&'static str, Vec<Features>> = BTreeMap::new();
        let mut settings = BTreeMap::new();
        for (net, what, w) in networks {
            let w = w.ok_or_else(|| EvalError::MissingWeights {
                metric: match what {
                    "inception" => "FID/KID",
                    "clip" => "CMMD",
                    _ => "CSD",
                },
                what,
                hint: (self.weight_hint)(what),
            })?;
            let sets = self.features(net, w, real, fakes)?;
            let base = serde_json::json!({
                "network": net.describe(),
                "network_id": net.id(),
                "weights": w.digest.to_hex(),
            });
            for m in st.metrics.iter().copied() {
                let this = match m {
                    Metric::Fid | Metric::Kid => what == "inception",
                    Metric::Cmmd => what == "clip",
                    Metric::Csd => what == "csd",
                };
                if this {
                    settings.insert(m, base.clone());
                }
            }
            feats.insert(what, sets);
        }
        let mut notes = Vec::new();
        let mut rows = Vec::new();
        for (i, fake) in fakes.iter().enumerate() {
            let mut values = BTreeMap::new();
            for m in st.metrics.iter().copied() {
                let net = match m {
                    Metric::Fid | Metric::Kid => "inception",
                    Metric::Cmmd => "clip",
                    Metric::Csd => "csd",
                };
                let sets = &feats[net];
                let (r, g) = (&sets[0], &sets[i + 1]);
                (self.status)(format!("{}: {}", m.name(), fake.name));
                let v = self.metric(m, r, g, &mut settings, &mut notes)?;
                values.insert(m, v);
            }
            rows.push(Row {
                set: fake.name.clone(),
                images: fake.images.len(),
                values,
            });
        }
        notes.dedup();
        Ok(MetricsTable {
            real: SetInfo {
                name: real.name.clone(),
                images: real.images.len(),
            },
            metrics: st.metrics.clone(),
            rows,
            settings,
            notes,
        })
    }

    fn metric(
        &self,
        m: Metric,
        r: &Features,
        g: &Features,
        settings: &mut BTreeMap<Metric, serde_json::Value>,
        notes: &mut Vec<String>,
    ) -> Result<MetricValue, EvalError> {
        let st = self.settings;
        let err = |source| EvalError::Metric {
            metric: m.name(),
            source,
        };
        let kid_settings = KidSettings {
            subsets: st.kid_subsets,
            subset_size: st.kid_subset_size,
            seed: st.seed,
        };
        let point = |r: &Features, g: &Features| -> Result<f64, MetricError> {
            Ok(match m {
                Metric::Fid => stats::fid(r, g)?.value,
                Metric::Kid => stats::kid(r, g, &kid_settings)?.mean,
                Metric::Cmmd => stats::cmmd(r, g)?,
                Metric::Csd => stats::csd_score(r, g)?,
            })
        };
        let mut v = match m {
            Metric::Kid => {
                let k = stats::kid(r, g, &kid_settings).map_err(err)?;
                let s = settings.entry(m).or_insert_with(|| serde_json::json!({}));
                s["subsets"] = k.subsets.into();
                s["subset_size"] = k.subset_size.into();
                s["seed"] = st.seed.into();
                s["kernel"] = "(x·y/d + 1)^3, unbiased MMD²".into();
                if k.reduced {
                    notes.push(format!(
                        "KID: the default subset size 1000 was reduced to {} (the smallest set's size)",
                        k.subset_size
                    ));
                }
                MetricValue {
                    value: k.mean,
                    std: Some(k.std),
                    ci: None,
                }
            }
            _ => {
                let s = settings.entry(m).or_insert_with(|| serde_json::json!({}));
                match m {
                    Metric::Fid => s["estimator"] = "f64, symmetric eigendecomposition".into(),
                    Metric::Cmmd => s["estimator"] = "Gaussian kernel σ=10, ×1000, biased".into(),
                    Metric::Csd => s["estimator"] = "mean_i cos(mean_j r_j, g_i)".into(),
                    Metric::Kid => {}
                }
                MetricValue {
                    value: point(r, g).map_err(err)?,
                    std: None,
                    ci: None,
                }
            }
        };
        if st.bootstrap > 0 {
            let iv = stats::bootstrap(r, g, &point, st.bootstrap, st.seed, st.confidence)
                .map_err(err)?;
            v.ci = Some([iv.low, iv.high]);
            let s = settings.entry(m).or_insert_with(|| serde_json::json!({}));
            s["bootstrap"] = serde_json::json!({
                "replicates": st.bootstrap, "confidence": st.confidence, "seed": st.seed
            });
        }
        Ok(v)
    }

    /// Feature rows of every set (real first) under `net`, from the cache where present.
    fn features(
        &self,
        net: Network,
        w: &WeightsRef,
        real: &ImageSet,
        fakes: &[ImageSet],
    ) -> Result<Vec<Features>, EvalError> {
        let sets: Vec<&ImageSet> = std::iter::once(real).chain(fakes).collect();
        let key = |d: &Digest| {
            FramedHasher::new("nsync.features.v1")
                .str(1, &net.id())
                .digest(2, &w.digest)
                .digest(3, d)
                .finish()
        };
        // Rows by image digest: an image in several sets is extracted once.
        let mut rows: BTreeMap<Digest, Vec<f32>> = BTreeMap::new();
        let mut missing: Vec<(&ImageSet, &ImageRef)> = Vec::new();
        for s in &sets {
            for im in &s.images {
                if rows.contains_key(&im.digest)
                    || missing.iter().any(|(_, m)| m.digest == im.digest)
                {
                    continue;
                }
                match self
                    .cache
                    .get(&key(&im.digest))
                    .and_then(|b| decode_row(&b))
                {
                    Some(r) => {
                        rows.insert(im.digest, r);
                    }
                    None => missing.push((s, im)),
                }
            }
        }
        let total = rows.len() + missing.len();
        if !missing.is_empty() {
            (self.status)(format!(
                "{}: loading weights ({} of {total} images to extract)",
                net_short(net),
                missing.len()
            ));
            let ex = Extractor::load(net, &w.path, &self.device)?;
            let start = Instant::now();
            let mut done = 0;
            for chunk in missing.chunks(self.settings.batch_size.max(1)) {
                let imgs = chunk
                    .iter()
                    .map(|(s, im)| {
                        (im.load)().map_err(|message| EvalError::Image {
                            set: s.name.clone(),
                            id: im.id.clone(),
                            message,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&RgbImage> = imgs.iter().collect();
                let out = ex.extract(&refs)?;
                for ((_, im), row) in chunk.iter().zip(out) {
                    self.cache
                        .put(&key(&im.digest), &encode_row(&row))
                        .map_err(EvalError::Cache)?;
                    rows.insert(im.digest, row);
                }
                done += chunk.len();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
                let left = (missing.len() - done) as f64 / rate.max(1e-9);
                (self.status)(format!(
                    "{}: features {done}/{} ({rate:.1} images/s, ~{left:.0} s left)",
                    net_short(net),
                    missing.len()
                ));
            }
        }
        sets.iter()
            .map(|s| {
                let r: Vec<Vec<f32>> = s.images.iter().map(|im| rows[&im.digest].clone()).collect();
                Features::from_rows(&r).map_err(|source| EvalError::Metric {
                    metric: net_short(net),
                    source,
                })
            })
            .collect()
    }
}

fn net_short(net: Network) -> &'static str {
    match net {
        Network::Inception(..) => "inception",
        Network::Clip => "clip",
        Network::Csd => "csd",
    }
}

fn encode_row(r: &[f32]) -> Vec<u8> {
    r.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_row(b: &[u8]) -> Option<Vec<f32>> {
    (b.len().is_multiple_of(4) && !b.is_empty()).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}
