//! Adam and AdamW, exactly as PyTorch's `torch.optim.Adam` and `torch.optim.AdamW` compute
//! them (single-tensor, non-amsgrad, non-capturable path), on one flat `f32` vector.
//!
//! Per step, with `t` counted from 1, `lr`, `β1`, `β2`, `ε` and weight decay `λ`:
//!
//! ```text
//! AdamW (decoupled):  p ← p · (1 − lr·λ)             before the Adam step
//! Adam  (L2):         g ← g + λ·p
//! m ← lerp(m, g, 1 − β1)          v ← v·β2 + (1 − β2)·g·g
//! denom ← sqrt(v) / sqrt(1 − β2^t) + ε
//! p ← p + (−lr / (1 − β1^t)) · m / denom
//! ```
//!
//! As in PyTorch, the scalars (`1 − β1^t`, `lr / (1 − β1^t)`, `sqrt(1 − β2^t)`, `1 − lr·λ`,
//! `1 − β1`, `1 − β2`) are computed in `f64` (Python floats) and rounded to `f32` where they
//! meet the tensors; every tensor operation is done in `f32` in ATen's CPU order, including
//! its fused multiply-adds (`add` with `alpha`, `lerp`, `addcmul`: one rounding, done here
//! with `mul_add`), `lerp`'s switch of formula at weight 0.5, and `ε` added after the
//! bias-corrected square root. Checked against PyTorch 2.15 on the CPU (4096 elements, 20
//! steps): the results agree bit for bit except where PyTorch's own vectorised `f32` `sqrt`
//! is not correctly rounded (1 ulp off in about one element in six; a NumPy emulation of
//! this code using PyTorch's `sqrt` matched PyTorch exactly). Expect agreement to about an
//! ulp per step, not bitwise; CUDA kernels differ from the CPU ones in the same way.
//!
//! The state serialises with serde. The `f32` moments round-trip bit-exactly through
//! `serde_json` with its default (ryu, shortest round-trip) formatting and its default
//! parser: checked once for every finite non-negative `f32` (negatives differ only by the
//! sign, which both sides handle separately) with serde_json 1.0.154, and on a sample in the
//! tests, so a resumed run continues bit-identically. Non-finite moments (from a non-finite
//! gradient) are written as `null` and refuse to load. `f64` values are another matter:
//! serde_json's default parser is not correctly rounded for them (about 30% of arbitrary
//! `f64` bit patterns come back changed). The `f64` hyperparameters round-trip exactly
//! when their shortest decimal form is `D·10^k` with `D` of at most 15 digits and
//! `|k| ≤ 22` (every usual setting: 0.9, 0.999, 1e-8, 0.01); serde_json's `float_roundtrip`
//! feature would remove the caveat.

use serde::{Deserialize, Serialize};

/// Adam (`decoupled: false`, L2 weight decay added to the gradient, as `torch.optim.Adam`)
/// or AdamW (`decoupled: true`, as `torch.optim.AdamW`), with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adam {
    /// The first-moment decay `β1` (PyTorch's default 0.9).
    pub beta1: f64,
    /// The second-moment decay `β2` (PyTorch's default 0.999).
    pub beta2: f64,
    /// `ε`, added to the bias-corrected root of the second moment (default 1e-8).
    pub eps: f64,
    /// `λ`: Adam's L2 coefficient or AdamW's decoupled decay (PyTorch's defaults: 0 for Adam,
    /// 0.01 for AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay (`p ← p·(1 − lr·λ)`) instead of Adam's L2 term.
    pub decoupled: bool,
    /// The first moment (`exp_avg`); empty until the first step.
    pub m: Vec<f32>,
    /// The second moment (`exp_avg_sq`); empty until the first step.
    pub v: Vec<f32>,
    /// Steps taken (PyTorch's `state["step"]`).
    pub t: u64,
}

impl Adam {
    /// `torch.optim.Adam` with its defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    // Named after PyTorch's classes (`Adam::adam()`, `Adam::adamw()`): one type, two optimizers.
    #[allow(clippy::self_named_constructors)]
    pub fn adam() -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }

    /// `torch.optim.AdamW` with its defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw() -> Self {
        Adam {
            weight_decay: 0.01,
            decoupled: true,
            ..Adam::adam()
        }
    }

    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }

    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// One optimizer step on `params` with gradient `grad` at learning rate `lr`, updating
    /// `params` in place. The state is created (zeros) on the first step, as PyTorch does.
    ///
    /// `lr` enters the scalar arithmetic as `f64`; PyTorch holds it as a Python float, so it
    /// matches PyTorch given the same value (an `f32` of 1e-3 is 1.0000000475e-3).
    ///
    /// # Panics
    ///
    /// When `grad`'s length differs from `params`'s, or from the state's after the first step
    /// (the optimizer belongs to one parameter vector).
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f32) {
        let n = params.len();
        assert_eq!(
            grad.len(),
            n,
            "Adam::step: gradient has {} elements, parameters {n}",
            grad.len()
        );
        if self.t == 0 && self.m.is_empty() && self.v.is_empty() {
            self.m = vec![0.0; n];
            self.v = vec![0.0; n];
        }
        assert!(
            self.m.len() == n && self.v.len() == n,
            "Adam::step: the state holds {} elements, parameters {n}",
            self.m.len()
        );

        self.t += 1;
        // Python-float (f64) scalars, as in torch.optim.adam._single_tensor_adam.
        let lr = f64::from(lr);
        let step = self.t as f64;
        let bias_correction1 = 1.0 - self.beta1.powf(step);
        let bias_correction2 = 1.0 - self.beta2.powf(step);
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.powf(0.5);
        // Where they meet f32 tensors, ATen rounds them to f32.
        let neg_step_size = (-step_size) as f32;
        let bc2_sqrt = bias_correction2_sqrt as f32;
        let eps = self.eps as f32;
        let w1 = (1.0 - self.beta1) as f32;
        let beta2 = self.beta2 as f32;
        let w2 = (1.0 - self.beta2) as f32;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let wd = self.weight_decay as f32;
        let apply_decay = self.weight_decay != 0.0;

        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            let mut g = g;
            if apply_decay {
                if self.decoupled {
                    *p *= decay; // param.mul_(1 - lr * weight_decay)
                } else {
                    g = wd.mul_add(*p, g); // grad.add(param, alpha=weight_decay)
                }
            }
            // exp_avg.lerp_(grad, 1 - beta1)
            *m = if w1.abs() < 0.5 {
                w1.mul_add(g - *m, *m)
            } else {
                (-(g - *m)).mul_add(1.0 - w1, g)
            };
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            *v = (w2 * g).mul_add(g, *v * beta2);
            // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            let denom = v.sqrt() / bc2_sqrt + eps;
            // param.addcdiv_(exp_avg, denom, value=-step_size)
            *p += neg_step_size * *m / denom;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference numbers below were produced once with the dev venv's PyTorch 2.15.0
    // (/root/.venvs/nsync-dev/bin/python), CPU, float32, `foreach=False`:
    //
    //     p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float32))
    //     opt = torch.optim.Adam([p], lr=float(np.float32(0.01)), foreach=False,
    //                            weight_decay=0.1)        # and AdamW(weight_decay=0.01),
    //                                                     # and Adam() without decay
    //     for k in range(5):
    //         p.grad = torch.tensor(GRADS[k], dtype=torch.float32); opt.step()
    //         print(p)                                   # one row of the tables below
    //     print(opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])
    //
    // printed as shortest round-trip float32 (numpy's format_float_scientific(unique=True)).

    const P0: [f32; 7] = [0.5, -1.25, 2.0, 0.0, -0.3, 1e-3, 3.0];
    const GRADS: [[f32; 7]; 5] = [
        [1e-01, -2e-01, 1e-08, 0e+00, 3e+00, -1e-09, 5e-01],
        [2e-01, -1.5e-01, 2e-08, 0e+00, -3e+00, -1e-09, 2.5e-01],
        [3e-01, -1e-01, 3e-08, 0e+00, 3e+00, -1e-09, 0e+00],
        [4e-01, -5e-02, 4e-08, 0e+00, -3e+00, -1e-09, -2.5e-01],
        [5e-01, 0e+00, 5e-08, 0e+00, 3e+00, -1e-09, -5e-01],
    ];
    const LR: f32 = 0.01;

    /// torch.optim.Adam(weight_decay=0.1): params after each step, final exp_avg, exp_avg_sq.
    const ADAM_L2: [[f32; 7]; 5] = [
        [
            4.9e-01, -1.24e+00, 1.99e+00, 0e+00, -3.1e-01, -8.999e-03, 2.99e+00,
        ],
        [
            4.801687e-01,
            -1.2300802e+00,
            1.9800013e+00,
            0e+00,
            -3.0937207e-01,
            -2.3428765e-03,
            2.9802642e+00,
        ],
        [
            4.7039458e-01,
            -1.2203215e+00,
            1.9700049e+00,
            0e+00,
            -3.1263846e-01,
            4.239096e-03,
            2.9711936e+00,
        ],
        [
            4.606138e-01,
            -1.210835e+00,
            1.9600116e+00,
            0e+00,
            -3.1200942e-01,
            6.7480095e-03,
            2.9635015e+00,
        ],
        [
            4.5078787e-01,
            -1.2017722e+00,
            1.9500223e+00,
            0e+00,
            -3.1395423e-01,
            5.5210604e-03,
            2.958201e+00,
        ],
    ];
    const ADAM_L2_M: [f32; 7] = [
        1.5102266e-01,
        -8.695275e-02,
        8.099729e-02,
        0e+00,
        2.3846209e-01,
        2.7612537e-05,
        1.00526e-01,
    ];
    const ADAM_L2_V: [f32; 7] = [
        7.029265e-04,
        2.7391402e-04,
        1.9563515e-04,
        0e+00,
        4.4735957e-02,
        1.5070101e-09,
        1.0702752e-03,
    ];

    /// torch.optim.AdamW(weight_decay=0.01).
    const ADAMW: [[f32; 7]; 5] = [
        [
            4.8995e-01,
            -1.239875e+00,
            1.9948e+00,
            0e+00,
            -3.0997e-01,
            1.908991e-03,
            2.9897e+00,
        ],
        [
            4.802492e-01,
            -1.2299253e+00,
            1.9886876e+00,
            0e+00,
            -3.094127e-01,
            2.817891e-03,
            2.9800794e+00,
        ],
        [
            4.7062114e-01,
            -1.2203767e+00,
            1.9819394e+00,
            0e+00,
            -3.127397e-01,
            3.7267003e-03,
            2.9725757e+00,
        ],
        [
            4.6096998e-01,
            -1.2116017e+00,
            1.9747052e+00,
            0e+00,
            -3.121821e-01,
            4.6354183e-03,
            2.9692667e+00,
        ],
        [
            4.512515e-01,
            -1.2041668e+00,
            1.9670751e+00,
            0e+00,
            -3.14195e-01,
            5.5440455e-03,
            2.9704525e+00,
        ],
    ];
    /// AdamW's moments (decoupled decay leaves them as without decay).
    const ADAMW_M: [f32; 7] = [
        1.31441e-01,
        -3.6657e-02,
        1.31441e-08,
        0e+00,
        2.5113e-01,
        -4.0950998e-10,
        -2.1470003e-02,
    ];
    const ADAMW_V: [f32; 7] = [
        5.4950034e-04,
        7.475033e-05,
        5.495003e-18,
        0e+00,
        4.491009e-02,
        4.99001e-21,
        6.237517e-04,
    ];

    /// torch.optim.Adam() without weight decay.
    const ADAM_PLAIN: [[f32; 7]; 5] = [
        [
            4.9e-01,
            -1.24e+00,
            1.995e+00,
            0e+00,
            -3.1e-01,
            1.9090909e-03,
            2.99e+00,
        ],
        [
            4.803482e-01,
            -1.2301743e+00,
            1.9890872e+00,
            0e+00,
            -3.094737e-01,
            2.8181819e-03,
            2.9806783e+00,
        ],
        [
            4.7076818e-01,
            -1.2207488e+00,
            1.982538e+00,
            0e+00,
            -3.1283164e-01,
            3.7272729e-03,
            2.9734726e+00,
        ],
        [
            4.611641e-01,
            -1.2120959e+00,
            1.975502e+00,
            0e+00,
            -3.1230533e-01,
            4.6363636e-03,
            2.970461e+00,
        ],
        [
            4.514917e-01,
            -1.2047821e+00,
            1.9680694e+00,
            0e+00,
            -3.1434947e-01,
            5.5454546e-03,
            2.9719439e+00,
        ],
    ];

    fn assert_rel(got: &[f32], want: &[f32], what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-6 * f64::from(g.abs().max(w.abs()));
            assert!(
                (f64::from(g) - f64::from(w)).abs() <= tol,
                "{what}[{i}]: got {g:e}, PyTorch {w:e}"
            );
        }
    }

    fn check(mut opt: Adam, want: &[[f32; 7]; 5], m: &[f32; 7], v: &[f32; 7], name: &str) {
        let mut p = P0;
        for (k, (g, row)) in GRADS.iter().zip(want).enumerate() {
            opt.step(&mut p, g, LR);
            assert_rel(&p, row, &format!("{name} step {}", k + 1));
        }
        assert_rel(&opt.m, m, &format!("{name} exp_avg"));
        assert_rel(&opt.v, v, &format!("{name} exp_avg_sq"));
        assert_eq!(opt.t, 5);
    }

    #[test]
    fn adam_with_l2_decay_matches_pytorch() {
        let opt = Adam::adam().with_weight_decay(0.1);
        check(opt, &ADAM_L2, &ADAM_L2_M, &ADAM_L2_V, "Adam(wd=0.1)");
    }

    #[test]
    fn adamw_matches_pytorch() {
        check(Adam::adamw(), &ADAMW, &ADAMW_M, &ADAMW_V, "AdamW(wd=0.01)");
    }

    #[test]
    fn adam_without_decay_matches_pytorch() {
        // Same moments as AdamW: the decoupled decay does not enter them.
        check(Adam::adam(), &ADAM_PLAIN, &ADAMW_M, &ADAMW_V, "Adam()");
    }

    #[test]
    fn defaults_match_pytorch() {
        let a = Adam::adam();
        assert_eq!(
            (a.beta1, a.beta2, a.eps, a.weight_decay, a.decoupled),
            (0.9, 0.999, 1e-8, 0.0, false)
        );
        let w = Adam::adamw();
        assert_eq!((w.weight_decay, w.decoupled), (0.01, true));
        let c = Adam::adamw().with_betas(0.8, 0.99).with_eps(1e-6);
        assert_eq!((c.beta1, c.beta2, c.eps), (0.8, 0.99, 1e-6));
    }

    #[test]
    fn eps_is_added_after_the_bias_corrected_root() {
        // First step: m̂ = g, v̂ = g², so the update is lr·g/(|g| + ε). With g = ε it is lr/2.
        let mut opt = Adam::adam();
        let mut p = [0.0f32];
        opt.step(&mut p, &[1e-8], 0.1);
        assert!((p[0] + 0.05).abs() < 1e-8, "{}", p[0]);
    }

    #[test]
    fn state_round_trips_through_serde_json_bit_exactly() {
        let mut opt = Adam::adamw().with_betas(0.9, 0.999);
        let mut p = P0;
        for g in &GRADS[..3] {
            opt.step(&mut p, g, LR);
        }
        let text = serde_json::to_string(&opt).unwrap();
        let mut resumed: Adam = serde_json::from_str(&text).unwrap();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&resumed.m), bits(&opt.m));
        assert_eq!(bits(&resumed.v), bits(&opt.v));
        assert_eq!(resumed, opt);
        // The resumed run continues bit-identically.
        let mut q = p;
        for g in &GRADS[3..] {
            opt.step(&mut p, g, LR);
            resumed.step(&mut q, g, LR);
        }
        assert_eq!(bits(&p), bits(&q));
        assert_eq!(bits(&resumed.v), bits(&opt.v));
    }

    #[test]
    fn f32_values_round_trip_through_serde_json() {
        // A sample over all bit patterns (every 4099th; stride coprime to 2, so all classes of
        // low bits appear) plus the edges. An exhaustive run over every finite non-negative
        // pattern (and every 1021st negative one) was done once when this was written
        // (serde_json 1.0.154, release build, about 4 minutes): no value failed.
        let mut values: Vec<f32> = (0..=u32::MAX / 4099)
            .map(|k| f32::from_bits(k * 4099))
            .filter(|x| x.is_finite())
            .collect();
        values.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
            f32::EPSILON,
            1e-8,
            0.999,
            0.1,
            1.0 / 3.0,
            16777216.0,
        ]);
        let text = serde_json::to_string(&values).unwrap();
        let back: Vec<f32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.len(), values.len());
        for (x, y) in values.iter().zip(&back) {
            assert_eq!(x.to_bits(), y.to_bits(), "{x:e} came back as {y:e}");
        }
        // Usual hyperparameters (f64) round-trip too.
        for x in [
            0.9f64, 0.999, 0.95, 0.98, 1e-8, 1e-6, 0.01, 0.1, 8e-4, 5e-4, 1e-3, 0.0,
        ] {
            let opt = Adam::adamw()
                .with_betas(x, x)
                .with_eps(x)
                .with_weight_decay(x);
            let back: Adam = serde_json::from_str(&serde_json::to_string(&opt).unwrap()).unwrap();
            let b = [back.beta1, back.beta2, back.eps, back.weight_decay];
            assert!(b.iter().all(|y| y.to_bits() == x.to_bits()), "{x:e}");
        }
        // Non-finite moments refuse to load rather than load wrong.
        let mut bad = Adam::adam();
        bad.m = vec![f32::NAN];
        bad.v = vec![f32::INFINITY];
        let text = serde_json::to_string(&bad).unwrap();
        assert!(serde_json::from_str::<Adam>(&text).is_err());
    }

    #[test]
    #[should_panic(expected = "gradient has 2 elements, parameters 3")]
    fn length_mismatch_panics() {
        Adam::adam().step(&mut [0.0; 3], &[0.0; 2], 0.1);
    }

    #[test]
    #[should_panic(expected = "the state holds 3 elements")]
    fn state_belongs_to_one_vector() {
        let mut opt = Adam::adam();
        opt.step(&mut [0.0; 3], &[1.0; 3], 0.1);
        opt.step(&mut [0.0; 4], &[1.0; 4], 0.1);
    }
}
