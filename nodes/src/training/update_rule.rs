//! The NSYNC update rules: how the gradients of one training step's passes become the update.
//!
//! Each step computes *separate* gradients with respect to the trainable rows, flattened into
//! vectors: `g_pos` (a real image, caption + " in the style of S*"), `g_neg` (the synthetic
//! generic-style image made from the same caption) and `g_anc` (another real image). With
//! `proj(a, b) = (a·b / b·b) b` the paper's rules are
//!
//! ```text
//! CTOA (NSYNC):  u = g_pos − proj(g_pos, g_neg) + proj(g_pos, g_anc)
//! CTO:           u = g_pos − proj(g_pos, g_neg)
//! CTM:           u = mean(g_pos, g_neg)            negative caption: "... not in the style of S*"
//! CTMA:          u = mean(g_pos, g_neg, g_anc)     negative caption: "... not in the style of S*"
//! TI:            u = g_pos
//! ```
//!
//! The authors' reference code accumulates the three backward passes into one `.grad` without
//! zeroing in between (its "negative" gradient is `g_pos + g_neg`, its "anchor" gradient
//! `g_pos + g_neg + g_anc`) and, in the default NSYNC setting, projects onto `g_pos` itself
//! instead of the anchor. [`Compat::ReferenceCode`] reproduces its *effective* updates from the
//! clean, separate gradients (`a = g_pos`, `b = g_neg`, `c = g_anc`):
//!
//! ```text
//! CTOA:  u = 2a − proj(a, a + b)
//! CTO:   u = a − proj(a, a + b)
//! CTM:   u = a + b/2
//! CTMA:  u = a + (2/3) b + (1/3) c
//! TI:    u = a
//! ```
//!
//! Callers always pass the separate gradients; [`combine`] never expects accumulated ones.
//! Sums, dot products and norms are computed in `f64`; the update is rounded to `f32` once.
//! A projection onto a vector whose squared norm is zero (or not finite) is no projection (the
//! zero vector) rather than NaN. Non-finite gradient entries are not rejected: they propagate
//! into the update, and checking for them is the trainer's business.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The caption suffix of positives and anchors, and of the negatives of TI, CTO and CTOA;
/// `{token}` stands for the learned token (`S*`). Joined to the caption with one space.
pub const STYLE_SUFFIX: &str = "in the style of {token}";

/// The caption suffix of the negatives of CTM and CTMA; `{token}` stands for the learned
/// token. Joined to the caption with one space.
pub const NOT_STYLE_SUFFIX: &str = "not in the style of {token}";

/// A training variant of the paper (its ablation); CTOA is NSYNC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Plain Textual Inversion, the baseline: the update is the positive gradient; no
    /// negatives, no anchor.
    Ti,
    /// Contrastive, orthogonal: the positive gradient minus its projection onto the negative
    /// gradient.
    Cto,
    /// Contrastive, orthogonal, with anchor (NSYNC, the default): CTO plus the positive
    /// gradient's projection onto the gradient of another real image.
    #[default]
    Ctoa,
    /// Contrastive, mean: the mean of the positive and negative gradients, the negative
    /// captioned "... not in the style of S*".
    Ctm,
    /// Contrastive, mean, with anchor: the mean of the positive, negative and anchor
    /// gradients, the negative captioned "... not in the style of S*".
    Ctma,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Ti,
        Variant::Cto,
        Variant::Ctoa,
        Variant::Ctm,
        Variant::Ctma,
    ];

    /// The name used in pipeline files: `ti`, `cto`, `ctoa`, `ctm`, `ctma`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ti => "ti",
            Variant::Cto => "cto",
            Variant::Ctoa => "ctoa",
            Variant::Ctm => "ctm",
            Variant::Ctma => "ctma",
        }
    }

    /// Whether a step needs the negative pass (`g_neg`): every variant but TI.
    pub fn needs_negative(self) -> bool {
        !matches!(self, Variant::Ti)
    }

    /// Whether a step needs the anchor pass (`g_anc`): CTOA and CTMA. (In
    /// [`Compat::ReferenceCode`] CTOA's anchor gradient does not change the update, as in the
    /// reference code, which runs the pass and discards it; [`combine`] still asks for it, so
    /// that a step costs what the reference code's step costs.)
    pub fn needs_anchor(self) -> bool {
        matches!(self, Variant::Ctoa | Variant::Ctma)
    }

    /// The suffix of the negative image's caption, with `{token}` standing for the learned
    /// token: [`STYLE_SUFFIX`] (`"in the style of {token}"`) for TI, CTO and CTOA (the
    /// negative is trained with the very text of the positive), [`NOT_STYLE_SUFFIX`]
    /// (`"not in the style of {token}"`) for CTM and CTMA. Joined to the caption with one
    /// space (see [`Variant::negative_caption`]).
    pub fn negative_caption_suffix(self) -> &'static str {
        match self {
            Variant::Ti | Variant::Cto | Variant::Ctoa => STYLE_SUFFIX,
            Variant::Ctm | Variant::Ctma => NOT_STYLE_SUFFIX,
        }
    }

    /// The negative image's full caption: `"{caption} {suffix}"` with the token substituted.
    pub fn negative_caption(self, caption: &str, token: &str) -> String {
        let suffix = self.negative_caption_suffix().replace("{token}", token);
        format!("{caption} {suffix}")
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which update formulas to apply: the paper's, or the authors' reference code's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// The paper's rules (the default).
    #[default]
    Paper,
    /// The authors' reference code's effective rules, which differ from the paper because its
    /// backward passes accumulate into one gradient and its anchor term projects onto the
    /// positive gradient itself: CTO `a − proj(a, a+b)`, CTOA `2a − proj(a, a+b)`, CTM
    /// `a + b/2`, CTMA `a + (2/3)b + (1/3)c`, TI `a` (`a`, `b`, `c`: the separate positive,
    /// negative and anchor gradients). For reproducing the reference code's results only.
    ReferenceCode,
}

/// The update of one step, with the measurements the training curves plot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Combined {
    /// The vector handed to the optimizer in place of the trainable rows' gradient.
    pub update: Vec<f32>,
    /// The cosine between `g_pos` and `g_neg` (the separate gradients, whatever the compat);
    /// `None` without a negative gradient or when either norm is zero or not finite.
    pub cos_pos_neg: Option<f32>,
    /// The norm of the projection subtracted (CTO, CTOA); 0 for the other variants. In
    /// [`Compat::ReferenceCode`] this is `‖proj(a, a+b)‖`.
    pub removed_norm: f32,
    /// The norm of the anchor projection added (CTOA); 0 for the other variants. In
    /// [`Compat::ReferenceCode`] the added term is `proj(a, a) = a`, so this is `‖a‖`.
    pub added_norm: f32,
    /// `‖g_pos‖`.
    pub g_pos_norm: f32,
    /// `‖g_neg‖`, when a negative gradient was given.
    pub g_neg_norm: Option<f32>,
    /// `‖g_anc‖`, when an anchor gradient was given.
    pub g_anc_norm: Option<f32>,
}

/// The update for one step of `variant` from the separate gradients of the positive, negative
/// and anchor passes, by the paper's rules or the reference code's ([`Compat`]).
///
/// Errors when `g_pos` is empty, when a gradient the variant needs is missing
/// ([`Variant::needs_negative`], [`Variant::needs_anchor`]), or when a given gradient's length
/// differs from `g_pos`'s. Gradients a variant does not use (negatives for TI, an anchor for
/// CTO or CTM) may be given: they are length-checked and measured, and do not change the
/// update.
pub fn combine(
    variant: Variant,
    compat: Compat,
    g_pos: &[f32],
    g_neg: Option<&[f32]>,
    g_anc: Option<&[f32]>,
) -> Result<Combined, String> {
    let n = g_pos.len();
    if n == 0 {
        return Err("the positive gradient g_pos is empty".to_string());
    }
    for (name, g) in [("g_neg", g_neg), ("g_anc", g_anc)] {
        if let Some(g) = g {
            if g.len() != n {
                return Err(format!(
                    "{name} has {} elements but g_pos has {n}; all gradients must be flattened \
                     over the same trainable parameters",
                    g.len()
                ));
            }
        }
    }
    if variant.needs_negative() && g_neg.is_none() {
        return Err(format!(
            "{variant} needs the negative gradient g_neg (the synthetic image's pass)"
        ));
    }
    if variant.needs_anchor() && g_anc.is_none() {
        return Err(format!(
            "{variant} needs the anchor gradient g_anc (another real image's pass)"
        ));
    }

    let a = g_pos;
    let pp = dot(a, a);
    let g_pos_norm = pp.sqrt();
    let g_neg_norm = g_neg.map(|b| dot(b, b).sqrt());
    let g_anc_norm = g_anc.map(|c| dot(c, c).sqrt());
    let cos_pos_neg = g_neg.zip(g_neg_norm).and_then(|(b, nb)| {
        let d = g_pos_norm * nb;
        (d > 0.0 && d.is_finite()).then(|| (dot(a, b) / d) as f32)
    });

    let mut removed = 0.0f64;
    let mut added = 0.0f64;
    // The `unwrap_or_default` calls below cannot fire: presence was checked above.
    let update: Vec<f32> = match (compat, variant) {
        (_, Variant::Ti) => a.to_vec(),
        (Compat::Paper, Variant::Cto | Variant::Ctoa) => {
            let b = g_neg.unwrap_or_default();
            let cb = proj_coef(dot(a, b), dot(b, b));
            removed = cb.abs() * g_neg_norm.unwrap_or_default();
            if variant == Variant::Ctoa {
                let c = g_anc.unwrap_or_default();
                let cc = proj_coef(dot(a, c), dot(c, c));
                added = cc.abs() * g_anc_norm.unwrap_or_default();
                (0..n)
                    .map(|i| (f64::from(a[i]) - cb * f64::from(b[i]) + cc * f64::from(c[i])) as f32)
                    .collect()
            } else {
                (0..n)
                    .map(|i| (f64::from(a[i]) - cb * f64::from(b[i])) as f32)
                    .collect()
            }
        }
        (Compat::Paper, Variant::Ctm) => {
            let b = g_neg.unwrap_or_default();
            (0..n)
                .map(|i| ((f64::from(a[i]) + f64::from(b[i])) / 2.0) as f32)
                .collect()
        }
        (Compat::Paper, Variant::Ctma) => {
            let (b, c) = (g_neg.unwrap_or_default(), g_anc.unwrap_or_default());
            (0..n)
                .map(|i| ((f64::from(a[i]) + f64::from(b[i]) + f64::from(c[i])) / 3.0) as f32)
                .collect()
        }
        (Compat::ReferenceCode, Variant::Cto | Variant::Ctoa) => {
            let b = g_neg.unwrap_or_default();
            // s = a + b: the reference code's accumulated "negative" gradient.
            let s: Vec<f64> = (0..n).map(|i| f64::from(a[i]) + f64::from(b[i])).collect();
            let as_: f64 = (0..n).map(|i| f64::from(a[i]) * s[i]).sum();
            let ss: f64 = s.iter().map(|x| x * x).sum();
            let cs = proj_coef(as_, ss);
            removed = cs.abs() * ss.sqrt();
            // CTOA's anchor term is proj(a, a), which is a (or nothing when a = 0).
            let anchor_coef = if variant == Variant::Ctoa {
                proj_coef(pp, pp)
            } else {
                0.0
            };
            added = anchor_coef.abs() * g_pos_norm;
            (0..n)
                .map(|i| {
                    let ai = f64::from(a[i]);
                    (ai - cs * s[i] + anchor_coef * ai) as f32
                })
                .collect()
        }
        (Compat::ReferenceCode, Variant::Ctm) => {
            // mean(a, a + b)
            let b = g_neg.unwrap_or_default();
            (0..n)
                .map(|i| (f64::from(a[i]) + f64::from(b[i]) / 2.0) as f32)
                .collect()
        }
        (Compat::ReferenceCode, Variant::Ctma) => {
            // mean(a, a + b, a + b + c)
            let (b, c) = (g_neg.unwrap_or_default(), g_anc.unwrap_or_default());
            (0..n)
                .map(|i| {
                    ((3.0 * f64::from(a[i]) + 2.0 * f64::from(b[i]) + f64::from(c[i])) / 3.0) as f32
                })
                .collect()
        }
    };

    Ok(Combined {
        update,
        cos_pos_neg,
        removed_norm: removed as f32,
        added_norm: added as f32,
        g_pos_norm: g_pos_norm as f32,
        g_neg_norm: g_neg_norm.map(|x| x as f32),
        g_anc_norm: g_anc_norm.map(|x| x as f32),
    })
}

/// [`combine`] applied to each of `segments` on its own (ranges that tile `0..g_pos.len()` in
/// order, e.g. one per LoRA tensor for a per-tensor projection), the updates concatenated.
/// With one segment this is exactly [`combine`]. With several, the measurements describe the
/// whole vectors: `cos_pos_neg` and the gradient norms over the whole vectors, and
/// `removed_norm` / `added_norm` the norms of the concatenated removed / added projections
/// (the segments are disjoint, so these are the root sum of the segments' squares).
pub fn combine_segments(
    variant: Variant,
    compat: Compat,
    segments: &[std::ops::Range<usize>],
    g_pos: &[f32],
    g_neg: Option<&[f32]>,
    g_anc: Option<&[f32]>,
) -> Result<Combined, String> {
    let n = g_pos.len();
    let tiles = segments.first().is_some_and(|s| s.start == 0)
        && segments.last().is_some_and(|s| s.end == n)
        && segments.windows(2).all(|w| w[0].end == w[1].start)
        && segments.iter().all(|s| s.start < s.end);
    if !tiles {
        return Err(format!(
            "the projection segments do not tile the {n} gradient entries"
        ));
    }
    if let [only] = segments {
        debug_assert_eq!(*only, 0..n);
        return combine(variant, compat, g_pos, g_neg, g_anc);
    }
    for (name, g) in [("g_neg", g_neg), ("g_anc", g_anc)] {
        if let Some(g) = g {
            if g.len() != n {
                return Err(format!(
                    "{name} has {} elements but g_pos has {n}; all gradients must be flattened \
                     over the same trainable parameters",
                    g.len()
                ));
            }
        }
    }
    let mut update = Vec::with_capacity(n);
    let (mut removed, mut added) = (0.0f64, 0.0f64);
    for seg in segments {
        let c = combine(
            variant,
            compat,
            &g_pos[seg.clone()],
            g_neg.map(|g| &g[seg.clone()]),
            g_anc.map(|g| &g[seg.clone()]),
        )?;
        update.extend(c.update);
        removed += f64::from(c.removed_norm).powi(2);
        added += f64::from(c.added_norm).powi(2);
    }
    let whole = combine(Variant::Ti, compat, g_pos, g_neg, g_anc)?;
    Ok(Combined {
        update,
        removed_norm: removed.sqrt() as f32,
        added_norm: added.sqrt() as f32,
        ..whole
    })
}

/// `proj(a, b) = (a·b / b·b) b`, in `f64`, with the zero-norm guard (an empty result for an
/// empty input). Exposed for trainers that project other parameter sets (LoRA, per tensor).
pub fn proj(a: &[f32], b: &[f32]) -> Vec<f32> {
    let coef = proj_coef(dot(a, b), dot(b, b));
    b.iter().map(|&x| (coef * f64::from(x)) as f32).collect()
}

/// `a·b` in `f64` (over the shorter length; callers check lengths).
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// The coefficient `a·b / b·b` of a projection onto `b`; 0 (no projection) when `b·b` is 0 or
/// not finite.
fn proj_coef(ab: f64, bb: f64) -> f64 {
    if bb == 0.0 || !bb.is_finite() {
        0.0
    } else {
        ab / bb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn norm(a: &[f32]) -> f64 {
        dot(a, a).sqrt()
    }

    fn run(
        variant: Variant,
        compat: Compat,
        a: &[f32],
        b: Option<&[f32]>,
        c: Option<&[f32]>,
    ) -> Combined {
        combine(variant, compat, a, b, c).unwrap()
    }

    /// Element-wise closeness, relative to the vector's scale.
    fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= tol * scale,
                "element {i}: got {g}, want {w}"
            );
        }
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    #[test]
    fn cto_update_is_orthogonal_to_the_negative() {
        for seed in 0..20 {
            let (a, b) = (random(768, seed), random(768, 1000 + seed));
            let r = run(Variant::Cto, Compat::Paper, &a, Some(&b), None);
            let u = &r.update;
            let bound = 1e-6 * norm(u) * norm(&b);
            assert!(dot(u, &b).abs() <= bound, "u·b = {}", dot(u, &b));
            assert!(r.removed_norm > 0.0);
            assert_eq!(r.added_norm, 0.0);
        }
        // Also when the two are nearly parallel (most of g_pos is removed).
        let a = random(300, 7);
        let b: Vec<f32> = a
            .iter()
            .zip(random(300, 8))
            .map(|(x, e)| 2.0 * x + 1e-3 * e)
            .collect();
        let u = run(Variant::Cto, Compat::Paper, &a, Some(&b), None).update;
        assert!(dot(&u, &b).abs() <= 1e-6 * norm(&u) * norm(&b));
    }

    #[test]
    fn ctoa_is_cto_plus_the_anchor_projection() {
        let (a, b, c) = (random(500, 1), random(500, 2), random(500, 3));
        let cto = run(Variant::Cto, Compat::Paper, &a, Some(&b), None);
        let ctoa = run(Variant::Ctoa, Compat::Paper, &a, Some(&b), Some(&c));
        let pc = proj(&a, &c);
        let want: Vec<f64> = (0..a.len())
            .map(|i| f64::from(cto.update[i]) + f64::from(pc[i]))
            .collect();
        assert_close(&ctoa.update, &want, 1e-6);
        assert_eq!(ctoa.removed_norm, cto.removed_norm);
        assert!((f64::from(ctoa.added_norm) - norm(&pc)).abs() <= 1e-6 * norm(&pc));
        // Small hand-made case: a = (1, 0), b = (1, 1), c = (0, 1):
        // a − proj(a, b) = (1/2, −1/2); proj(a, c) = 0.
        let r = run(
            Variant::Ctoa,
            Compat::Paper,
            &[1.0, 0.0],
            Some(&[1.0, 1.0]),
            Some(&[0.0, 1.0]),
        );
        assert_eq!(r.update, vec![0.5, -0.5]);
        assert_eq!(r.added_norm, 0.0);
        assert!((r.removed_norm - 0.5f32.sqrt()).abs() < 1e-7);
    }

    #[test]
    fn mean_rules() {
        let a = [1.0f32, -2.0, 4.0];
        let b = [3.0f32, 2.0, -1.0];
        let c = [2.0f32, 3.0, 0.5];
        let ctm = run(Variant::Ctm, Compat::Paper, &a, Some(&b), None);
        assert_eq!(ctm.update, vec![2.0, 0.0, 1.5]);
        let ctma = run(Variant::Ctma, Compat::Paper, &a, Some(&b), Some(&c));
        assert_eq!(ctma.update, vec![2.0, 1.0, 3.5 / 3.0]);
        for r in [&ctm, &ctma] {
            assert_eq!((r.removed_norm, r.added_norm), (0.0, 0.0));
        }
        // On random vectors, against the definition.
        let (a, b, c) = (random(100, 4), random(100, 5), random(100, 6));
        let ctma = run(Variant::Ctma, Compat::Paper, &a, Some(&b), Some(&c));
        let want: Vec<f64> = (0..100)
            .map(|i| (f64::from(a[i]) + f64::from(b[i]) + f64::from(c[i])) / 3.0)
            .collect();
        assert_close(&ctma.update, &want, 1e-7);
    }

    #[test]
    fn reference_code_formulas_on_hand_made_vectors() {
        // a = (1, 0), b = (0, 1), c = (1, 1): a + b = (1, 1), proj(a, a + b) = (1/2, 1/2).
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let c = [1.0f32, 1.0];
        let rc = Compat::ReferenceCode;
        let cto = run(Variant::Cto, rc, &a, Some(&b), None);
        assert_eq!(cto.update, vec![0.5, -0.5]);
        assert!((cto.removed_norm - 0.5f32.sqrt()).abs() < 1e-7);
        let ctoa = run(Variant::Ctoa, rc, &a, Some(&b), Some(&c));
        assert_eq!(ctoa.update, vec![1.5, -0.5]);
        assert_eq!(ctoa.added_norm, 1.0);
        let ctm = run(Variant::Ctm, rc, &a, Some(&b), None);
        assert_eq!(ctm.update, vec![1.0, 0.5]);
        let ctma = run(Variant::Ctma, rc, &a, Some(&b), Some(&c));
        assert_close(&ctma.update, &[4.0 / 3.0, 1.0], 1e-7);
        let ti = run(Variant::Ti, rc, &a, Some(&b), Some(&c));
        assert_eq!(ti.update, a.to_vec());

        // The paper's rules on the same vectors differ.
        let p = Compat::Paper;
        assert_eq!(
            run(Variant::Cto, p, &a, Some(&b), None).update,
            vec![1.0, 0.0]
        );
        assert_eq!(
            run(Variant::Ctoa, p, &a, Some(&b), Some(&c)).update,
            vec![1.5, 0.5]
        );
        assert_eq!(
            run(Variant::Ctm, p, &a, Some(&b), None).update,
            vec![0.5, 0.5]
        );
    }

    #[test]
    fn reference_code_is_the_paper_rule_on_accumulated_gradients() {
        let (a, b, c) = (random(400, 10), random(400, 11), random(400, 12));
        let ab: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let abc: Vec<f32> = ab.iter().zip(&c).map(|(x, y)| x + y).collect();
        let rc = Compat::ReferenceCode;

        // CTO: a − proj(a, a + b), i.e. the paper's CTO fed the accumulated "negative".
        let cto = run(Variant::Cto, rc, &a, Some(&b), None);
        let pab = proj(&a, &ab);
        let want: Vec<f64> = (0..400)
            .map(|i| f64::from(a[i]) - f64::from(pab[i]))
            .collect();
        assert_close(&cto.update, &want, 1e-6);
        let paper_on_acc = run(Variant::Cto, Compat::Paper, &a, Some(&ab), None);
        assert_close(&cto.update, &to64(&paper_on_acc.update), 1e-6);
        assert!(dot(&cto.update, &ab).abs() <= 1e-6 * norm(&cto.update) * norm(&ab));

        // CTOA: 2a − proj(a, a + b); the anchor does not matter.
        let ctoa = run(Variant::Ctoa, rc, &a, Some(&b), Some(&c));
        let want2: Vec<f64> = (0..400).map(|i| want[i] + f64::from(a[i])).collect();
        assert_close(&ctoa.update, &want2, 1e-6);
        let other_anchor = random(400, 13);
        let ctoa2 = run(Variant::Ctoa, rc, &a, Some(&b), Some(&other_anchor));
        assert_eq!(ctoa.update, ctoa2.update);
        // ... and is not the paper's CTOA.
        let paper = run(Variant::Ctoa, Compat::Paper, &a, Some(&b), Some(&c));
        let diff: Vec<f32> = paper
            .update
            .iter()
            .zip(&ctoa.update)
            .map(|(x, y)| x - y)
            .collect();
        assert!(norm(&diff) > 0.1 * norm(&paper.update));

        // CTM: mean(a, a + b) = a + b/2; CTMA: mean(a, a + b, a + b + c).
        let ctm = run(Variant::Ctm, rc, &a, Some(&b), None);
        let want: Vec<f64> = (0..400)
            .map(|i| f64::from(a[i]) + f64::from(b[i]) / 2.0)
            .collect();
        assert_close(&ctm.update, &want, 1e-7);
        let acc = run(Variant::Ctm, Compat::Paper, &a, Some(&ab), None);
        assert_close(&ctm.update, &to64(&acc.update), 1e-6);
        let ctma = run(Variant::Ctma, rc, &a, Some(&b), Some(&c));
        let want: Vec<f64> = (0..400)
            .map(|i| f64::from(a[i]) + 2.0 / 3.0 * f64::from(b[i]) + f64::from(c[i]) / 3.0)
            .collect();
        assert_close(&ctma.update, &want, 1e-6);
        let acc = run(Variant::Ctma, Compat::Paper, &a, Some(&ab), Some(&abc));
        assert_close(&ctma.update, &to64(&acc.update), 1e-6);
    }

    #[test]
    fn zero_norm_guard() {
        let a = random(64, 20);
        let zero = vec![0.0f32; 64];
        for compat in [Compat::Paper, Compat::ReferenceCode] {
            // g_neg = 0: CTO removes nothing and returns g_pos (in the reference code a + b = a,
            // so it removes all of a; that is its formula, not a guard case).
            let r = run(Variant::Cto, compat, &a, Some(&zero), None);
            assert!(r.update.iter().all(|x| x.is_finite()));
            assert!(r.cos_pos_neg.is_none());
            assert_eq!(r.g_neg_norm, Some(0.0));
            if compat == Compat::Paper {
                assert_eq!(r.update, a);
                assert_eq!(r.removed_norm, 0.0);
            }
            // g_pos = 0: everything stays zero and finite.
            for v in [Variant::Cto, Variant::Ctoa] {
                let r = run(v, compat, &zero, Some(&a), Some(&a));
                assert_eq!(r.update, zero);
                assert_eq!((r.removed_norm, r.added_norm), (0.0, 0.0));
            }
        }
        // Paper CTOA with a zero anchor is CTO.
        let b = random(64, 21);
        let ctoa = run(Variant::Ctoa, Compat::Paper, &a, Some(&b), Some(&zero));
        let cto = run(Variant::Cto, Compat::Paper, &a, Some(&b), None);
        assert_eq!(ctoa.update, cto.update);
        // Reference CTO with b = −a: a + b = 0, no projection, u = a.
        let neg: Vec<f32> = a.iter().map(|x| -x).collect();
        let r = run(Variant::Cto, Compat::ReferenceCode, &a, Some(&neg), None);
        assert_eq!(r.update, a);
        assert_eq!(proj(&a, &zero), zero);
    }

    #[test]
    fn ti_ignores_negatives_and_anchors() {
        let (a, b, c) = (random(50, 30), random(50, 31), random(50, 32));
        for compat in [Compat::Paper, Compat::ReferenceCode] {
            let alone = run(Variant::Ti, compat, &a, None, None);
            let with = run(Variant::Ti, compat, &a, Some(&b), Some(&c));
            assert_eq!(alone.update, a);
            assert_eq!(with.update, a);
            assert_eq!((with.removed_norm, with.added_norm), (0.0, 0.0));
            assert!(with.g_neg_norm.is_some() && with.cos_pos_neg.is_some());
        }
        assert!(!Variant::Ti.needs_negative() && !Variant::Ti.needs_anchor());
    }

    #[test]
    fn measurements() {
        let a = [3.0f32, 4.0];
        let b = [4.0f32, -3.0];
        let c = [0.0f32, 2.0];
        let r = run(Variant::Ctoa, Compat::Paper, &a, Some(&b), Some(&c));
        assert_eq!(r.g_pos_norm, 5.0);
        assert_eq!(r.g_neg_norm, Some(5.0));
        assert_eq!(r.g_anc_norm, Some(2.0));
        assert_eq!(r.cos_pos_neg, Some(0.0));
        assert_eq!(r.removed_norm, 0.0);
        assert_eq!(r.added_norm, 4.0); // proj(a, c) = (0, 4)
        assert_eq!(r.update, vec![3.0, 8.0]);
        let r = run(Variant::Cto, Compat::Paper, &a, Some(&[6.0, 8.0]), None);
        assert_eq!(r.cos_pos_neg, Some(1.0));
        assert_eq!(r.removed_norm, 5.0);
        assert_eq!(r.update, vec![0.0, 0.0]);
    }

    #[test]
    fn errors() {
        let a = [1.0f32, 2.0];
        let short = [1.0f32];
        let p = Compat::Paper;
        assert!(combine(Variant::Ti, p, &[], None, None).is_err());
        for v in [Variant::Cto, Variant::Ctoa, Variant::Ctm, Variant::Ctma] {
            let e = combine(v, p, &a, None, Some(&a)).unwrap_err();
            assert!(e.contains("g_neg"), "{e}");
        }
        for v in [Variant::Ctoa, Variant::Ctma] {
            for compat in [Compat::Paper, Compat::ReferenceCode] {
                let e = combine(v, compat, &a, Some(&a), None).unwrap_err();
                assert!(e.contains("g_anc"), "{e}");
            }
        }
        let e = combine(Variant::Cto, p, &a, Some(&short), None).unwrap_err();
        assert!(e.contains("g_neg has 1 elements but g_pos has 2"), "{e}");
        let e = combine(Variant::Ctoa, p, &a, Some(&a), Some(&short)).unwrap_err();
        assert!(e.contains("g_anc"), "{e}");
        // Unused inputs are still length-checked.
        assert!(combine(Variant::Ti, p, &a, Some(&short), None).is_err());
        // Unused inputs are fine when well-formed.
        assert!(combine(Variant::Cto, p, &a, Some(&a), Some(&a)).is_ok());
    }

    #[test]
    fn names_captions_and_serde() {
        assert_eq!(Variant::default(), Variant::Ctoa);
        assert_eq!(Compat::default(), Compat::Paper);
        for v in Variant::ALL {
            let s = serde_json::to_string(&v).unwrap();
            assert_eq!(s, format!("\"{}\"", v.name()));
            assert_eq!(serde_json::from_str::<Variant>(&s).unwrap(), v);
        }
        assert_eq!(
            Variant::ALL.map(Variant::name),
            ["ti", "cto", "ctoa", "ctm", "ctma"]
        );
        assert_eq!(
            serde_json::to_string(&Compat::ReferenceCode).unwrap(),
            "\"reference_code\""
        );
        assert!(serde_json::from_str::<Variant>("\"nsync\"").is_err());
        let needs: Vec<(bool, bool)> = Variant::ALL
            .iter()
            .map(|v| (v.needs_negative(), v.needs_anchor()))
            .collect();
        assert_eq!(
            needs,
            [
                (false, false),
                (true, false),
                (true, true),
                (true, false),
                (true, true)
            ]
        );
        assert_eq!(
            Variant::Ctoa.negative_caption_suffix(),
            "in the style of {token}"
        );
        assert_eq!(
            Variant::Ctma.negative_caption_suffix(),
            "not in the style of {token}"
        );
        assert_eq!(
            Variant::Ctm.negative_caption("a bridge over a pond", "<monet>"),
            "a bridge over a pond not in the style of <monet>"
        );
        assert_eq!(
            Variant::Cto.negative_caption("a bridge", "S*"),
            "a bridge in the style of S*"
        );
        let schema = serde_json::to_value(schemars::schema_for!(Variant)).unwrap();
        let text = schema.to_string();
        for name in ["ti", "cto", "ctoa", "ctm", "ctma"] {
            assert!(text.contains(&format!("\"{name}\"")), "{text}");
        }
    }

    #[test]
    fn segments_project_each_part_on_its_own() {
        let (a, b, c) = (random(30, 1), random(30, 2), random(30, 3));
        // One segment is `combine` itself, bit for bit.
        let one = combine_segments(
            Variant::Ctoa,
            Compat::Paper,
            std::slice::from_ref(&(0..30)),
            &a,
            Some(&b),
            Some(&c),
        )
        .unwrap();
        assert_eq!(
            one,
            run(Variant::Ctoa, Compat::Paper, &a, Some(&b), Some(&c))
        );
        // Per segment: each part of the CTO update is orthogonal to that part of g_neg.
        let segs = [0..10, 10..25, 25..30];
        let per = combine_segments(Variant::Cto, Compat::Paper, &segs, &a, Some(&b), None).unwrap();
        let mut removed = 0.0;
        for s in &segs {
            let u = &per.update[s.clone()];
            let d = dot(u, &b[s.clone()]);
            assert!(d.abs() <= 1e-5 * norm(u) * norm(&b[s.clone()]), "{d}");
            let part = run(
                Variant::Cto,
                Compat::Paper,
                &a[s.clone()],
                Some(&b[s.clone()]),
                None,
            );
            assert_eq!(u, part.update.as_slice());
            removed += f64::from(part.removed_norm).powi(2);
        }
        assert!((f64::from(per.removed_norm) - removed.sqrt()).abs() < 1e-6);
        // … which is not the flat projection, and the measurements cover the whole vectors.
        let flat = run(Variant::Cto, Compat::Paper, &a, Some(&b), None);
        assert_ne!(per.update, flat.update);
        assert_eq!(per.cos_pos_neg, flat.cos_pos_neg);
        assert_eq!(per.g_pos_norm, flat.g_pos_norm);
        // Segments must tile the vector.
        let short = 0..10;
        for bad in [&[0..10, 11..30][..], std::slice::from_ref(&short), &[][..]] {
            let e = combine_segments(Variant::Ti, Compat::Paper, bad, &a, None, None).unwrap_err();
            assert!(e.contains("tile"), "{e}");
        }
    }
}
