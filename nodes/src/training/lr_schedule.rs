//! Learning-rate schedules, exactly as diffusers' `get_scheduler` builds them (transformers'
//! `get_constant_schedule`, `get_constant_schedule_with_warmup` and
//! `get_cosine_schedule_with_warmup` with `num_cycles` 0.5): a `LambdaLR` whose multiplier of
//! the base learning rate is evaluated at the optimizer step count.
//!
//! Step numbering: [`LrSchedule::lr_at`]`(base, k, total)` is the learning rate the `k`-th
//! optimizer step uses, counting from 0 — in a diffusers training loop (`optimizer.step()`
//! then `lr_scheduler.step()`), the value of `optimizer.param_groups[0]["lr"]` when step `k`
//! runs. So with a warmup the very first step has learning rate 0, and the full rate is first
//! used at step `warmup_steps`. (diffusers' scripts multiply `warmup_steps` and the total by
//! the number of processes; pass the numbers as counted in optimizer steps here.)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the learning rate changes over training (diffusers' `lr_scheduler` names). In pipeline
/// files: `{ kind = "constant" }`, `{ kind = "constant_with_warmup", warmup_steps = 500 }`,
/// `{ kind = "cosine", warmup_steps = 500 }`; a field the kind does not take is an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Serialised by the derive; deserialised through `LrScheduleRepr` (strict about fields).
#[serde(tag = "kind", rename_all = "snake_case", from = "LrScheduleRepr")]
pub enum LrSchedule {
    /// The base learning rate throughout (diffusers' `constant`, the default of its Textual
    /// Inversion script).
    #[default]
    Constant,
    /// A linear ramp from 0 over `warmup_steps` optimizer steps (step `k` < `warmup_steps`
    /// uses `k / warmup_steps` of the base rate), then the base learning rate
    /// (`constant_with_warmup`).
    ConstantWithWarmup { warmup_steps: u64 },
    /// A linear ramp over `warmup_steps`, then half a cosine from the base learning rate down
    /// to 0 at the last step of training (`cosine`). Beyond the total number of steps the
    /// cosine rises again, as diffusers' does.
    Cosine { warmup_steps: u64 },
}

/// What pipeline files hold (and the schema shows): [`LrSchedule`] with `constant` as an
/// empty struct variant, because serde lets a unit variant of an internally tagged enum
/// ignore unknown fields (`{ kind = "constant", warmup_steps = 500 }` would silently drop
/// the warmup).
#[derive(Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LrScheduleRepr {
    /// The base learning rate throughout (diffusers' `constant`, the default of its Textual
    /// Inversion script).
    Constant {},
    /// A linear ramp from 0 over `warmup_steps` optimizer steps, then the base learning rate
    /// (diffusers' `constant_with_warmup`).
    ConstantWithWarmup {
        /// Optimizer steps of the linear ramp: step `k` < `warmup_steps` uses
        /// `k / warmup_steps` of the base rate.
        warmup_steps: u64,
    },
    /// A linear ramp over `warmup_steps` optimizer steps, then half a cosine from the base
    /// learning rate down to 0 at the last step (diffusers' `cosine`).
    Cosine {
        /// Optimizer steps of the linear ramp.
        warmup_steps: u64,
    },
}

impl From<LrScheduleRepr> for LrSchedule {
    fn from(r: LrScheduleRepr) -> Self {
        match r {
            LrScheduleRepr::Constant {} => LrSchedule::Constant,
            LrScheduleRepr::ConstantWithWarmup { warmup_steps } => {
                LrSchedule::ConstantWithWarmup { warmup_steps }
            }
            LrScheduleRepr::Cosine { warmup_steps } => LrSchedule::Cosine { warmup_steps },
        }
    }
}

impl LrSchedule {
    /// diffusers' name: `constant`, `constant_with_warmup`, `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::ConstantWithWarmup { .. } => "constant_with_warmup",
            LrSchedule::Cosine { .. } => "cosine",
        }
    }

    /// The warmup length in optimizer steps (0 for `constant`).
    pub fn warmup_steps(self) -> u64 {
        match self {
            LrSchedule::Constant => 0,
            LrSchedule::ConstantWithWarmup { warmup_steps }
            | LrSchedule::Cosine { warmup_steps } => warmup_steps,
        }
    }

    /// The `LambdaLR` multiplier of the base learning rate for optimizer step `step` (from 0)
    /// of `total_steps` (used by `cosine` only), computed in `f64` as Python does.
    pub fn multiplier(self, step: u64, total_steps: u64) -> f64 {
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::ConstantWithWarmup { warmup_steps } => {
                if step < warmup_steps {
                    step as f64 / (warmup_steps as f64).max(1.0)
                } else {
                    1.0
                }
            }
            LrSchedule::Cosine { warmup_steps } => {
                if step < warmup_steps {
                    return step as f64 / warmup_steps.max(1) as f64;
                }
                // progress = (step − warmup) / max(1, total − warmup), the difference signed
                let span = (total_steps as i128 - warmup_steps as i128).max(1);
                let progress = (step - warmup_steps) as f64 / span as f64;
                let num_cycles = 0.5;
                let angle = std::f64::consts::PI * num_cycles * 2.0 * progress;
                (0.5 * (1.0 + angle.cos())).max(0.0)
            }
        }
    }

    /// The learning rate of optimizer step `step` (from 0) of `total_steps`:
    /// `base_lr · multiplier`, in `f64`, rounded to `f32` once.
    pub fn lr_at(self, base_lr: f32, step: u64, total_steps: u64) -> f32 {
        (f64::from(base_lr) * self.multiplier(step, total_steps)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced once with the dev venv (diffusers 0.42.1, torch 2.15.0):
    //
    //     opt = torch.optim.AdamW([p], lr=float(np.float32(5e-4)))
    //     s = get_scheduler(NAME, opt, num_warmup_steps=W, num_training_steps=TOTAL)
    //     for step in range(TOTAL + 3):
    //         lrs.append(opt.param_groups[0]["lr"]); opt.step(); s.step()
    //
    // printed as shortest round-trip float32. Entry k is the lr optimizer step k used.
    const BASE: f32 = 5e-4;

    fn check(schedule: LrSchedule, total: u64, want: &[f32]) {
        for (k, &w) in want.iter().enumerate() {
            let got = schedule.lr_at(BASE, k as u64, total);
            let tol = 1e-6 * f64::from(w.abs().max(got.abs()));
            assert!(
                (f64::from(got) - f64::from(w)).abs() <= tol,
                "{} step {k} of {total}: got {got:e}, diffusers {w:e}",
                schedule.name()
            );
        }
    }

    #[test]
    fn constant_matches_diffusers() {
        check(LrSchedule::Constant, 10, &[5e-4; 13]);
    }

    #[test]
    fn constant_with_warmup_matches_diffusers() {
        let s = LrSchedule::ConstantWithWarmup { warmup_steps: 4 };
        let want = [
            0e+00, 1.25e-04, 2.5e-04, 3.75e-04, 5e-04, 5e-04, 5e-04, 5e-04, 5e-04, 5e-04, 5e-04,
            5e-04, 5e-04,
        ];
        check(s, 10, &want);
        // warmup 0 is constant.
        let s = LrSchedule::ConstantWithWarmup { warmup_steps: 0 };
        check(s, 3, &[5e-4; 4]);
    }

    #[test]
    fn cosine_matches_diffusers() {
        let want = [
            0e+00,
            1.6666668e-04,
            3.3333336e-04,
            5e-04,
            4.7524224e-04,
            4.0587247e-04,
            3.0563024e-04,
            1.9436977e-04,
            9.412756e-05,
            2.4757785e-05,
            0e+00,
            2.4757785e-05,
            9.412756e-05,
        ];
        check(LrSchedule::Cosine { warmup_steps: 3 }, 10, &want);
        let want = [
            5e-04,
            4.7524224e-04,
            4.0587247e-04,
            3.0563024e-04,
            1.9436977e-04,
            9.412756e-05,
            2.4757785e-05,
            0e+00,
            2.4757785e-05,
            9.412756e-05,
        ];
        check(LrSchedule::Cosine { warmup_steps: 0 }, 7, &want);
        // A warmup longer than training.
        let want = [
            0e+00,
            1.00000005e-04,
            2.0000001e-04,
            3e-04,
            4.0000002e-04,
            5e-04,
        ];
        check(LrSchedule::Cosine { warmup_steps: 5 }, 3, &want);
    }

    #[test]
    fn serde_names_and_schema() {
        assert_eq!(LrSchedule::default(), LrSchedule::Constant);
        let cases = [
            (LrSchedule::Constant, r#"{"kind":"constant"}"#),
            (
                LrSchedule::ConstantWithWarmup { warmup_steps: 500 },
                r#"{"kind":"constant_with_warmup","warmup_steps":500}"#,
            ),
            (
                LrSchedule::Cosine { warmup_steps: 7 },
                r#"{"kind":"cosine","warmup_steps":7}"#,
            ),
        ];
        for (s, json) in cases {
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
            assert_eq!(serde_json::from_str::<LrSchedule>(json).unwrap(), s);
            assert!(json.contains(s.name()));
        }
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind":"cosine"}"#).is_err());
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind":"constant","warmup":3}"#).is_err());
        let schema = serde_json::to_value(schemars::schema_for!(LrSchedule)).unwrap();
        let text = schema.to_string();
        for name in ["constant", "constant_with_warmup", "cosine", "warmup_steps"] {
            assert!(text.contains(&format!("\"{name}\"")), "{text}");
        }
        assert_eq!(LrSchedule::Cosine { warmup_steps: 7 }.warmup_steps(), 7);
        assert_eq!(LrSchedule::Constant.warmup_steps(), 0);
    }
}
