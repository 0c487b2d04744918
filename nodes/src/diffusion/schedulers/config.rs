//! A diffusers `scheduler_config.json`, read the way diffusers' `from_config` reads it.
//!
//! One file configures any of the schedulers: diffusers builds e.g. a `DDIMScheduler` from
//! Stable Diffusion 1.5's `PNDMScheduler` config, taking the keys DDIM accepts and DDIM's
//! own defaults for the rest. Some defaults differ between classes (`clip_sample` is true
//! for DDIM and DDPM, `set_alpha_to_one` true for DDIM but false for PNDM,
//! `timestep_spacing` is `linspace` for Euler ancestral and `leading` elsewhere), so those
//! keys stay optional here and each scheduler resolves them with its own default
//! ([`SchedulerConfig::timestep_spacing_for`] and friends). Keys listed in
//! `_use_default_values` count as absent, as in diffusers; unknown keys are ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Result, SchedulerError};
use super::kind::SchedulerKind;

/// How betas run from `beta_start` to `beta_end` over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Linear,
    /// Linear in `sqrt(beta)`, then squared (Stable Diffusion).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise (SD 1.x, SD 2.x base).
    Epsilon,
    /// `v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x₀` (SD 2.x 768).
    VPrediction,
    /// The clean sample `x₀`.
    Sample,
}

/// How the inference timesteps are placed among the training timesteps (table 2 of
/// "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The keys of a diffusers scheduler config that the schedulers here read.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: BetaSchedule,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub steps_offset: usize,
    /// DDIM default true, PNDM default false.
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// PNDM only; default false (which these schedulers do not support).
    #[serde(default)]
    pub skip_prk_steps: Option<bool>,
    /// DDIM and DDPM; default true.
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Euler ancestral default `linspace`, the others `leading`.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM, DDPM and Euler ancestral (PNDM does not accept it).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// DDPM only: `fixed_small` (default), `fixed_small_log` or `fixed_large`. A string,
    /// so that other schedulers built from a config with a value DDPM lacks still build.
    #[serde(default)]
    pub variance_type: Option<String>,
    /// Dynamic thresholding (DDIM, DDPM): not for latent diffusion, and not supported.
    #[serde(default)]
    pub thresholding: bool,
    /// The file this came from, for error messages.
    #[serde(skip)]
    pub origin: PathBuf,
}

fn default_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> BetaSchedule {
    BetaSchedule::Linear
}
fn default_prediction_type() -> PredictionType {
    PredictionType::Epsilon
}
fn default_clip_sample_range() -> f64 {
    1.0
}

impl Default for SchedulerConfig {
    /// diffusers' defaults (an empty config file).
    fn default() -> Self {
        SchedulerConfig::from_json_str("{}", Path::new("<default scheduler config>"))
            .expect("the empty config deserialises")
    }
}

impl SchedulerConfig {
    /// Read a `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<SchedulerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SchedulerError::config(
                path,
                format!("cannot read: {e} (expected a diffusers scheduler_config.json)"),
            )
        })?;
        SchedulerConfig::from_json_str(&text, path)
    }

    /// Parse a config's JSON text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<SchedulerConfig> {
        let bad = |m: String| SchedulerError::config(origin, m);
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = value
            .as_object_mut()
            .ok_or_else(|| bad("expected a JSON object of scheduler settings".into()))?;
        // Keys that were defaults when the file was saved take the building class's default.
        if let Some(defaults) = map.remove("_use_default_values") {
            for key in defaults.as_array().into_iter().flatten() {
                if let Some(k) = key.as_str() {
                    map.remove(k);
                }
            }
        }
        let mut config: SchedulerConfig = serde_json::from_value(value).map_err(|e| {
            bad(format!(
                "{e}; fix the value or remove the key to use diffusers' default"
            ))
        })?;
        config.origin = origin.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SchedulerError::config(&self.origin, m));
        if self.num_train_timesteps == 0 {
            return bad("num_train_timesteps is 0; it must be at least 1 (usually 1000)".into());
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != self.num_train_timesteps {
                return bad(format!(
                    "trained_betas has {} values but num_train_timesteps is {}; they must agree",
                    betas.len(),
                    self.num_train_timesteps
                ));
            }
        } else if self.beta_schedule != BetaSchedule::SquaredcosCapV2
            && !(self.beta_start >= 0.0 && self.beta_end >= 0.0 && self.beta_end < 1.0)
        {
            return bad(format!(
                "beta_start {} / beta_end {} must lie in [0, 1)",
                self.beta_start, self.beta_end
            ));
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return bad(format!(
                "clip_sample_range is {}; it must be positive",
                self.clip_sample_range
            ));
        }
        Ok(())
    }

    /// The spacing `kind` uses: the config's, else that class's default.
    pub fn timestep_spacing_for(&self, kind: SchedulerKind) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(match kind {
            SchedulerKind::EulerAncestral => TimestepSpacing::Linspace,
            _ => TimestepSpacing::Leading,
        })
    }

    /// Whether the step past timestep 0 uses `ᾱ = 1` (else `ᾱ₀`): DDIM defaults to true,
    /// PNDM to false.
    pub fn set_alpha_to_one_for(&self, kind: SchedulerKind) -> bool {
        self.set_alpha_to_one.unwrap_or(kind == SchedulerKind::Ddim)
    }

    /// Whether DDIM/DDPM clamp the predicted `x₀` to `±clip_sample_range` (default true).
    pub fn clip_sample_or_default(&self) -> bool {
        self.clip_sample.unwrap_or(true)
    }

    /// The range DDIM/DDPM clamp the predicted `x₀` to, if they clamp it.
    pub(crate) fn clip_range(&self) -> Option<f64> {
        self.clip_sample_or_default()
            .then_some(self.clip_sample_range)
    }

    /// Refuse dynamic thresholding (DDIM, DDPM), which is not implemented.
    pub(crate) fn refuse_thresholding(&self) -> Result<()> {
        if self.thresholding {
            return Err(self.reject(
                "thresholding (dynamic thresholding)",
                "set \"thresholding\": false (it is meant for pixel-space models)",
            ));
        }
        Ok(())
    }

    /// Reject settings the schedulers here do not implement, naming the key.
    pub(crate) fn reject(&self, what: &str, fix: &str) -> SchedulerError {
        SchedulerError::config(&self.origin, format!("{what} is not supported; {fix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c = SchedulerConfig::from_json_str(
            r#"{"_class_name": "X", "some_future_key": [1, 2], "beta_schedule": "scaled_linear"}"#,
            Path::new("t.json"),
        )
        .unwrap();
        assert_eq!(c.num_train_timesteps, 1000);
        assert_eq!(c.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(
            c.timestep_spacing_for(SchedulerKind::EulerAncestral),
            TimestepSpacing::Linspace
        );
        assert_eq!(
            c.timestep_spacing_for(SchedulerKind::Pndm),
            TimestepSpacing::Leading
        );
        assert!(c.set_alpha_to_one_for(SchedulerKind::Ddim));
        assert!(!c.set_alpha_to_one_for(SchedulerKind::Pndm));
    }

    #[test]
    fn use_default_values_drops_keys() {
        let c = SchedulerConfig::from_json_str(
            r#"{"timestep_spacing": "leading", "_use_default_values": ["timestep_spacing"]}"#,
            Path::new("t.json"),
        )
        .unwrap();
        assert_eq!(c.timestep_spacing, None);
    }

    #[test]
    fn errors_name_the_file() {
        let e = SchedulerConfig::from_json_str(
            r#"{"beta_schedule": "sigmoid"}"#,
            Path::new("sched/scheduler_config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("sched/scheduler_config.json: "), "{e}");
        assert!(e.contains("sigmoid"), "{e}");
    }
}
