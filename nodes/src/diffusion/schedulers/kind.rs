//! Which scheduler to build, and building it from a config as diffusers' `from_config`
//! does: the class named by the config's `_class_name`, or an explicit choice, with the
//! config's keys that class accepts and its own defaults for the rest.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::SchedulerConfig;
use super::ddim::Ddim;
use super::ddpm::Ddpm;
use super::error::{Result, SchedulerError};
use super::euler_ancestral::EulerAncestral;
use super::pndm::Pndm;
use super::Scheduler;

/// A sampling scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// DDIM: deterministic (eta 0) or with noise (eta > 0).
    Ddim,
    /// PLMS (PNDM with skip_prk_steps), Stable Diffusion 1.x's default.
    Pndm,
    /// DDPM ancestral sampling with the posterior variance (stochastic).
    Ddpm,
    /// Euler ancestral (stochastic).
    #[serde(rename = "euler_a")]
    EulerAncestral,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 4] = [
        SchedulerKind::Ddim,
        SchedulerKind::Pndm,
        SchedulerKind::Ddpm,
        SchedulerKind::EulerAncestral,
    ];

    /// The short name used in pipeline files: `ddim`, `pndm`, `ddpm`, `euler_a`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Ddpm => "ddpm",
            SchedulerKind::EulerAncestral => "euler_a",
        }
    }

    /// The diffusers class.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddpm => "DDPMScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
        }
    }

    pub fn from_class_name(class: &str) -> Option<SchedulerKind> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.class_name() == class)
    }

    /// Whether sampling with this scheduler (and DDIM's `eta`) draws noise, i.e. whether
    /// its result depends on a seed beyond the initial latents.
    pub fn draws_noise(self, eta: f64) -> bool {
        match self {
            SchedulerKind::Ddim => eta > 0.0,
            SchedulerKind::Pndm => false,
            SchedulerKind::Ddpm | SchedulerKind::EulerAncestral => true,
        }
    }

    fn names() -> String {
        SchedulerKind::ALL.map(|k| k.name()).join(", ")
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scheduler `{s}`; choose one of {}",
                    SchedulerKind::names()
                )
            })
    }
}

impl SchedulerConfig {
    /// The scheduler the config's `_class_name` names.
    pub fn class_kind(&self) -> Result<SchedulerKind> {
        let class = self.class_name.as_deref().ok_or_else(|| {
            SchedulerError::config(
                &self.origin,
                format!(
                    "no `_class_name`; choose a scheduler explicitly ({})",
                    SchedulerKind::names()
                ),
            )
        })?;
        SchedulerKind::from_class_name(class).ok_or_else(|| {
            SchedulerError::config(
                &self.origin,
                format!(
                    "`_class_name` is `{class}`, which is not implemented here; choose one of {} \
                     explicitly (it is built from this same config)",
                    SchedulerKind::names()
                ),
            )
        })
    }
}

/// The scheduler `kind` (or, if `None`, the one the config's `_class_name` names), from
/// `config`. `eta` is DDIM's noise weight; other schedulers take only 0.
pub fn build(
    config: &SchedulerConfig,
    kind: Option<SchedulerKind>,
    eta: f64,
) -> Result<Box<dyn Scheduler>> {
    let kind = match kind {
        Some(k) => k,
        None => config.class_kind()?,
    };
    if kind != SchedulerKind::Ddim && eta != 0.0 {
        return Err(SchedulerError::usage(format!(
            "eta {eta} applies to ddim only; set it to 0 for {kind}"
        )));
    }
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(config)?.with_eta(eta)?),
        SchedulerKind::Pndm => Box::new(Pndm::new(config)?),
        SchedulerKind::Ddpm => Box::new(Ddpm::new(config)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestral::new(config)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), k);
            assert_eq!(SchedulerKind::from_class_name(k.class_name()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert!("euler"
            .parse::<SchedulerKind>()
            .unwrap_err()
            .contains("euler_a"));
    }

    #[test]
    fn builds_by_class_name_or_choice() {
        let c = SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "clip_sample": false}"#,
            Path::new("s.json"),
        )
        .unwrap();
        assert_eq!(build(&c, None, 0.0).unwrap().kind(), SchedulerKind::Pndm);
        assert_eq!(
            build(&c, Some(SchedulerKind::Ddim), 0.3).unwrap().kind(),
            SchedulerKind::Ddim
        );
        assert!(build(&c, None, 0.3).is_err());
        let other = SchedulerConfig::from_json_str(
            r#"{"_class_name": "LMSDiscreteScheduler"}"#,
            Path::new("s.json"),
        )
        .unwrap();
        let e = build(&other, None, 0.0).err().unwrap().to_string();
        assert!(
            e.starts_with("s.json: ") && e.contains("LMSDiscreteScheduler"),
            "{e}"
        );
        assert!(build(&other, Some(SchedulerKind::EulerAncestral), 0.0).is_ok());
    }
}
