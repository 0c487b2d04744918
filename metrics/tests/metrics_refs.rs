//! The estimators against every weight-free reference value of
//! `tests/fixtures/eval/metrics_refs.json` (a committed copy of
//! `shared/reference/metrics_refs.json`, written by the reference implementations:
//! pytorch-fid, torch-fidelity, clean-fid, Bińkowski et al.'s mmd-gan code, the CMMD code,
//! numpy). Inputs are rebuilt from each case's `data` string with the references' LCG.
//! Tolerances follow `shared/docs/metrics.md`.

use std::path::Path;

use nsync_metrics::{
    self, cmmd, csd_per_image, csd_score, fid, frechet_distance, kid, kid_with, lcg_matrix,
    polynomial_kernel, polynomial_mmd, Features, GaussianStats, KidSettings, SqrtTraceMethod,
    SubsetSampler,
};
use serde_json::Value;

fn refs() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval/metrics_refs.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

/// `|got − want| ≤ rel·max(1, |want|)`, with the case named on failure.
#[track_caller]
fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, reference {want:e}, |Δ| = {:e} > {tol:e}",
        (got - want).abs()
    );
}

/// The inputs of a case from its `data` string: each `lcg(seed,n,d[,scale,shift])`, wrapped
/// in `rownorm(…)` when the rows are L2-normalised; `X=Y=lcg(…)` gives the same set twice.
fn inputs(data: &str) -> (Features, Features) {
    let mut sets = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.find("lcg(") {
        let normalised = rest[..at].ends_with("rownorm(");
        let args_end = rest[at..].find(')').unwrap() + at;
        let args: Vec<f64> = rest[at + 4..args_end]
            .split(',')
            .map(|a| a.trim().parse().unwrap())
            .collect();
        let (scale, shift) = match args.len() {
            3 => (1.0, 0.0),
            5 => (args[3], args[4]),
            _ => panic!("unexpected lcg arguments in {data:?}"),
        };
        let f = lcg_matrix(
            args[0] as u64,
            args[1] as usize,
            args[2] as usize,
            scale,
            shift,
        )
        .unwrap();
        sets.push(if normalised {
            f.l2_normalised().unwrap()
        } else {
            f
        });
        rest = &rest[args_end..];
    }
    match sets.len() {
        1 => (sets[0].clone(), sets.pop().unwrap()),
        2 => {
            let y = sets.pop().unwrap();
            (sets.pop().unwrap(), y)
        }
        _ => panic!("expected one or two lcg(…) in {data:?}"),
    }
}

#[test]
fn lcg_first_values_match_the_reference_generator() {
    let r = refs();
    let want = nums(&r["lcg_first_values_seed1"]);
    let got = lcg_matrix(1, 1, want.len(), 1.0, 0.0).unwrap();
    assert_eq!(got.as_slice(), want.as_slice(), "lcg_first_values_seed1");
}

#[test]
fn fid_closed_form() {
    let r = &refs()["fid_closed_form"];
    let eye = |s: f64| {
        (0..9)
            .map(|i| if i % 4 == 0 { s } else { 0.0 })
            .collect::<Vec<_>>()
    };
    let a = GaussianStats::from_parts(vec![0.0; 3], &eye(1.0)).unwrap();
    let b = GaussianStats::from_parts(vec![1.0; 3], &eye(4.0)).unwrap();
    let v = frechet_distance(&a, &b).unwrap();
    for key in ["expected", "pytorch_fid", "torch_fidelity"] {
        close(v.value, num(&r[key]), 1e-14, key);
    }
    assert_eq!(v.method, SqrtTraceMethod::Cholesky);
}

#[test]
fn fid_pytorch_fid_unit_test() {
    // pytorch-fid's test: μ1 = 0, μ2 = 1, Σ1 = Σ2 = I, d = 2048.
    let r = &refs()["fid_pytorch_fid_unit_test"];
    let d = 2048;
    let mut eye = vec![0.0; d * d];
    (0..d).for_each(|i| eye[i * d + i] = 1.0);
    let a = GaussianStats::from_parts(vec![0.0; d], &eye).unwrap();
    let b = GaussianStats::from_parts(vec![1.0; d], &eye).unwrap();
    let v = frechet_distance(&a, &b).unwrap();
    close(v.value, num(&r["value"]), 1e-12, "value");
    close(v.value, num(&r["expected"]), 1e-12, "expected");
}

/// μ, Σ and the three FID references of an `fid_*` case, within `rel`.
fn fid_case(key: &str, rel: f64) -> nsync_metrics::FidValue {
    let r = &refs()[key];
    let (x, y) = inputs(r["data"].as_str().unwrap());
    for (f, mu, sigma) in [
        (&x, "mu1[0:3]", "sigma1[0][0:3]"),
        (&y, "mu2[0:3]", "sigma2[0][0:3]"),
    ] {
        let s = GaussianStats::from_features(f).unwrap();
        for (i, want) in nums(&r[mu]).into_iter().enumerate() {
            close(s.mean()[i], want, 1e-14, &format!("{key} {mu} [{i}]"));
        }
        for (j, want) in nums(&r[sigma]).into_iter().enumerate() {
            close(
                s.covariance(0, j),
                want,
                1e-14,
                &format!("{key} {sigma} [{j}]"),
            );
        }
    }
    let v = fid(&x, &y).unwrap();
    for reference in [
        "pytorch_fid_sqrtm",
        "torch_fidelity_eigvals",
        "symmetric_eigh",
    ] {
        close(
            v.value,
            num(&r[reference]),
            rel,
            &format!("{key} {reference}"),
        );
    }
    assert_eq!(r["eps_offset_used"], Value::Bool(false));
    v
}

// n > d: "equals scipy's sqrtm route to ~1e-14" (metrics.md).
#[test]
fn fid_a_10x4_vs_12x4() {
    let v = fid_case("fid_A_10x4_vs_12x4", 1e-13);
    assert_eq!(v.method, SqrtTraceMethod::Cholesky);
}

#[test]
fn fid_b_300x16_vs_250x16() {
    let v = fid_case("fid_B_300x16_vs_250x16", 1e-13);
    assert_eq!(v.method, SqrtTraceMethod::Cholesky);
}

// n < d: the references differ among themselves by ~1e-8; metrics.md allows 1e-6 relative.
#[test]
fn fid_c_rank_deficient_5x8_vs_6x8() {
    let v = fid_case("fid_C_rank_deficient_5x8_vs_6x8", 1e-6);
    assert_eq!(v.method, SqrtTraceMethod::ImageSpace);
    // The three references carry ~1e-8 of rounding from the four zero eigenvalues of
    // Σ1^½ Σ2 Σ1^½; the image-space route has none. Reference: the symmetric form evaluated
    // with 60-digit arithmetic (mpmath: μ, Σ, `eigsy` of Σ1^½ Σ2 Σ1^½) on the same float64
    // inputs gives 5.224872105536142114.
    close(
        v.value,
        5.224_872_105_536_142,
        1e-14,
        "fid_C, 60-digit evaluation",
    );
    // The same statistics through the d × d covariances (singular: the eigen fallback, or a
    // Cholesky of rounding-level pivots) agree to the same tolerance.
    let r = &refs()["fid_C_rank_deficient_5x8_vs_6x8"];
    let (x, y) = inputs(r["data"].as_str().unwrap());
    let s1 = GaussianStats::from_features(&x).unwrap();
    let s2 = GaussianStats::from_features(&y).unwrap();
    let w = frechet_distance(&s1, &s2).unwrap();
    close(
        w.value,
        num(&r["symmetric_eigh"]),
        1e-6,
        "d × d route vs symmetric_eigh",
    );
}

#[test]
fn fid_d_identical_sets() {
    let v = fid_case("fid_D_identical_sets", 1e-13);
    assert_eq!(v.method, SqrtTraceMethod::Cholesky);
}

/// The KID references of an equal-size `kid_*` case.
fn kid_case(key: &str) {
    let r = &refs()[key];
    let (x, y) = inputs(r["data"].as_str().unwrap());
    assert_eq!(r["kernel"], "(x.y/d + 1)^3");
    let k = |a: &Features, b: &Features| polynomial_kernel(a.row(0), b.row(0));
    close(k(&x, &x), num(&r["k_xx[0][0]"]), 1e-14, "k_xx[0][0]");
    close(k(&x, &y), num(&r["k_xy[0][0]"]), 1e-14, "k_xy[0][0]");
    close(k(&y, &y), num(&r["k_yy[0][0]"]), 1e-14, "k_yy[0][0]");

    let mmd = polynomial_mmd(&x, &y).unwrap();
    let rel = 1e-12;
    close(mmd.unbiased, num(&r["mmd2_unbiased"]), rel, "mmd2_unbiased");
    close(
        mmd.unbiased,
        num(&r["mmdgan_sklearn_mmd2"]),
        rel,
        "mmdgan_sklearn_mmd2",
    );
    close(mmd.biased, num(&r["mmd2_biased"]), rel, "mmd2_biased");
    close(
        mmd.u_statistic,
        num(&r["mmd2_u_statistic"]),
        rel,
        "mmd2_u_statistic",
    );
    close(
        mmd.variance.unwrap(),
        num(&r["mmdgan_variance_estimate"]),
        rel,
        "mmdgan_variance_estimate",
    );

    // Subsets of the full size: each a permutation of the sets, so the mean is the full-set
    // value and the std is rounding noise (~3e-16 in the reference).
    let settings = KidSettings {
        subset_size: Some(x.n()),
        ..KidSettings::default()
    };
    let v = kid(&x, &y, &settings).unwrap();
    close(
        v.mean,
        num(&r["torch_fidelity_kid(subset_size=n) mean"]),
        rel,
        "torch-fidelity mean",
    );
    close(
        v.mean,
        num(&r["clean_fid_kernel_distance"]),
        rel,
        "clean_fid_kernel_distance",
    );
    close(v.std, num(&r["std"]), 1e-12, "std");
    assert_eq!((v.subsets, v.subset_size, v.reduced), (100, x.n(), false));
}

#[test]
fn kid_a_10x4_vs_10x4() {
    kid_case("kid_A_10x4_vs_10x4");
}

#[test]
fn kid_b_300x16_vs_300x16() {
    kid_case("kid_B_300x16_vs_300x16");
}

#[test]
fn kid_c_random_subsets_match_torch_fidelity_draws() {
    let r = &refs()["kid_C_random_subsets_300_vs_250"];
    let (x, y) = inputs(r["data"].as_str().unwrap());
    let want = nums(&r["torch_fidelity(subsets=100,subset_size=100,rng_seed=2020) [mean,std]"]);
    let settings = KidSettings {
        subsets: 100,
        subset_size: Some(100),
        seed: 2020,
    };
    let v = kid_with(&x, &y, &settings, SubsetSampler::NumpyLegacy).unwrap();
    close(v.mean, want[0], 1e-12, "torch-fidelity KID mean");
    close(v.std, want[1], 1e-12, "torch-fidelity KID std (population)");

    // ChaCha8 draws are other subsets of the same sets: the mean agrees within the
    // sampling error of two 100-subset means (3 standard errors).
    let c = kid(&x, &y, &settings).unwrap();
    let se = want[1] * (2.0f64 / 100.0).sqrt();
    assert!(
        (c.mean - want[0]).abs() < 3.0 * se,
        "ChaCha8 KID mean {} vs torch-fidelity {} (3 s.e. = {})",
        c.mean,
        want[0],
        3.0 * se
    );
}

#[test]
fn cmmd_a_5x8_vs_6x8() {
    let r = &refs()["cmmd_A_5x8_vs_6x8"];
    let data = r["data"].as_str().unwrap();
    let (x, y) = inputs(data);
    let v = cmmd(&x, &y).unwrap();
    close(
        v,
        num(&r["cmmd_normalised_f64"]),
        1e-12,
        "cmmd_normalised_f64",
    );
    // The reference runs in float32: "f64 and f32 differ by up to ~4e-4 relative".
    close(
        v,
        num(&r["cmmd_normalised_f32"]),
        4e-4,
        "cmmd_normalised_f32",
    );
    let raw = inputs(&data.replace("rownorm(", "("));
    let v = cmmd(&raw.0, &raw.1).unwrap();
    close(
        v,
        num(&r["cmmd_unnormalised_f64"]),
        1e-12,
        "cmmd_unnormalised_f64",
    );
}

#[test]
fn cmmd_b_64x768_vs_48x768() {
    let r = &refs()["cmmd_B_64x768_vs_48x768"];
    let (x, y) = inputs(r["data"].as_str().unwrap());
    let v = cmmd(&x, &y).unwrap();
    close(
        v,
        num(&r["cmmd_normalised_f64"]),
        1e-12,
        "cmmd_normalised_f64",
    );
    close(
        v,
        num(&r["cmmd_normalised_f32"]),
        4e-4,
        "cmmd_normalised_f32",
    );
}

#[test]
fn cmmd_readme_example_inversion() {
    // Two unit vectors at the reference's cosine: one image per set, so
    // CMMD = 1000·(1 + 1 − 2·exp(−‖x − y‖²/200)).
    let r = &refs()["cmmd_readme_example_inversion"];
    let c = num(&r["cosine_similarity"]);
    let x = Features::from_rows(&[[1.0, 0.0]]).unwrap();
    let y = Features::from_rows(&[[c, (1.0 - c * c).sqrt()]]).unwrap();
    let dist: f64 = x
        .row(0)
        .iter()
        .zip(y.row(0))
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    close(dist, num(&r["squared_distance"]), 1e-14, "squared_distance");
    close(cmmd(&x, &y).unwrap(), num(&r["cmmd"]), 1e-10, "cmmd");
}

#[test]
fn csd_a_4x6_vs_3x6() {
    let r = &refs()["csd_A_4x6_vs_3x6"];
    let (real, generated) = inputs(r["data"].as_str().unwrap());
    let per = csd_per_image(&real, &generated).unwrap();
    let want = nums(&r["per_image_cos"]);
    assert_eq!(per.len(), want.len());
    for (i, (g, w)) in per.iter().zip(&want).enumerate() {
        close(*g, *w, 1e-14, &format!("per_image_cos[{i}]"));
    }
    close(
        csd_score(&real, &generated).unwrap(),
        num(&r["score"]),
        1e-14,
        "score",
    );
    let norm = real.mean().iter().map(|v| v * v).sum::<f64>().sqrt();
    close(norm, num(&r["mean_vector_norm"]), 1e-14, "mean_vector_norm");
}

#[test]
fn every_reference_case_is_tested() {
    // A new case in the fixture must get a test here.
    let tested = [
        "generator",
        "lcg_first_values_seed1",
        "fid_closed_form",
        "fid_pytorch_fid_unit_test",
        "fid_A_10x4_vs_12x4",
        "fid_B_300x16_vs_250x16",
        "fid_C_rank_deficient_5x8_vs_6x8",
        "fid_D_identical_sets",
        "kid_A_10x4_vs_10x4",
        "kid_B_300x16_vs_300x16",
        "kid_C_random_subsets_300_vs_250",
        "cmmd_A_5x8_vs_6x8",
        "cmmd_B_64x768_vs_48x768",
        "cmmd_readme_example_inversion",
        "csd_A_4x6_vs_3x6",
    ];
    let r = refs();
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, tested);
}
