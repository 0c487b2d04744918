//! Edge cases of the estimators, each against an analytic or published reference value
//! (the reference-implementation numbers are in `nodes/tests/metrics_refs.rs`).

use crate::bootstrap::quantile;
use crate::sampling::IndexRng;
use crate::*;

fn lcg(seed: u64, n: usize, d: usize) -> Features {
    lcg_matrix(seed, n, d, 1.0, 0.0).unwrap()
}

/// `f` with `c` added to every row.
fn shifted(f: &Features, c: &[f64]) -> Features {
    let rows: Vec<Vec<f64>> = (0..f.n())
        .map(|i| f.row(i).iter().zip(c).map(|(x, c)| x + c).collect())
        .collect();
    Features::from_rows(&rows).unwrap()
}

/// `f` with every value multiplied by `a`.
fn scaled(f: &Features, a: f64) -> Features {
    Features::from_vec(f.n(), f.d(), f.as_slice().iter().map(|x| a * x).collect()).unwrap()
}

#[track_caller]
fn close(got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "got {got:e}, want {want:e}");
}

#[test]
fn features_reject_empty_ragged_and_non_finite_input() {
    let none: [Vec<f32>; 0] = [];
    assert!(matches!(
        Features::from_rows(&none),
        Err(MetricError::Empty { .. })
    ));
    assert!(matches!(
        Features::from_rows(&[Vec::<f32>::new()]),
        Err(MetricError::Empty { .. })
    ));
    let e = Features::from_rows(&[vec![1.0f32, 2.0], vec![3.0]]).unwrap_err();
    assert_eq!(
        e,
        MetricError::Ragged {
            row: 1,
            len: 1,
            expected: 2
        }
    );
    assert!(e
        .to_string()
        .contains("feature row 1 has 1 values but row 0 has 2"));
    let e = Features::from_rows(&[[0.0f64, 1.0], [f64::NAN, 2.0]]).unwrap_err();
    assert!(matches!(e, MetricError::NonFinite { row: 1, col: 0, .. }));
    assert!(e.to_string().contains("row 1, column 0 is NaN"));
    let e = Features::from_flat(2, 3, &[0.0f32; 5]).unwrap_err();
    assert_eq!(e, MetricError::Shape { n: 2, d: 3, len: 5 });
}

#[test]
fn features_widen_f32_exactly() {
    let f = Features::from_rows(&[[0.1f32, -2.5]]).unwrap();
    assert_eq!(f.as_slice(), &[f64::from(0.1f32), -2.5]);
    assert_eq!((f.n(), f.d()), (1, 2));
}

#[test]
fn a_single_image_is_an_error_that_names_the_set() {
    let one = lcg(1, 1, 4);
    let many = lcg(2, 5, 4);
    let e = fid(&many, &one).unwrap_err();
    assert_eq!(
        e.to_string(),
        "FID needs at least 2 images per set; got 1 generated image"
    );
    let e = kid(&many, &one, &KidSettings::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "KID needs at least 2 images per set; got 1 generated image"
    );
    let e = fid(&one, &many).unwrap_err();
    assert_eq!(
        e.to_string(),
        "FID needs at least 2 images per set; got 1 real image"
    );
    // CMMD and CSD are defined for one image per set.
    assert!(cmmd(&one, &many).is_ok());
    assert!(csd_score(&many, &one).is_ok());
}

#[test]
fn mismatched_dimensions_are_an_error() {
    let e = fid(&lcg(1, 5, 4), &lcg(2, 5, 3)).unwrap_err();
    assert_eq!(
        e,
        MetricError::DimensionMismatch {
            real: 4,
            generated: 3
        }
    );
    assert!(e
        .to_string()
        .contains("real features are 4-d but generated features are 3-d"));
    for r in [
        kid(&lcg(1, 5, 4), &lcg(2, 5, 3), &KidSettings::default()).map(|_| ()),
        cmmd(&lcg(1, 5, 4), &lcg(2, 5, 3)).map(|_| ()),
        csd_score(&lcg(1, 5, 4), &lcg(2, 5, 3)).map(|_| ()),
    ] {
        assert!(matches!(r, Err(MetricError::DimensionMismatch { .. })));
    }
}

/// Reference: a shift `c` of one set changes only the mean term, FID = ‖c‖².
#[test]
fn fid_of_a_shifted_copy_is_the_squared_shift_on_every_route() {
    let c = [0.5, -1.0, 0.25, 2.0, 0.0, 1.5];
    let norm2: f64 = c.iter().map(|v| v * v).sum();
    for (n, method) in [
        (4, SqrtTraceMethod::ImageSpace), // n < d
        (6, SqrtTraceMethod::ImageSpace), // n = d
        (40, SqrtTraceMethod::Cholesky),  // n > d
    ] {
        let x = lcg(3, n, 6);
        let v = fid(&x, &shifted(&x, &c)).unwrap();
        assert_eq!(v.method, method, "n = {n}");
        close(v.value, norm2, 1e-12);
        close(v.trace_sqrt, v.trace_real, 1e-12);
    }
}

/// Reference: `Σ2 = a² Σ1` gives `Tr (Σ1 Σ2)^½ = a Tr Σ1`, FID = (1 − a)² Tr Σ1.
#[test]
fn fid_of_a_scaled_copy_is_closed_form() {
    let a = 1.7;
    for n in [3, 50] {
        let x = lcg(4, n, 8);
        let v = fid(&x, &scaled(&x, a)).unwrap();
        let want = v.mean_term + (1.0 - a) * (1.0 - a) * v.trace_real;
        close(v.value, want, 1e-12);
        close(v.trace_generated, a * a * v.trace_real, 1e-12);
    }
}

/// Reference: identical sets, FID = 0, also with fewer images than dimensions.
#[test]
fn fid_of_identical_sets_is_zero_with_fewer_images_than_dims() {
    let x = lcg(5, 7, 32);
    let v = fid(&x, &x).unwrap();
    assert_eq!(v.method, SqrtTraceMethod::ImageSpace);
    assert!(v.value.abs() < 1e-12 * v.trace_real, "{v:?}");
}

/// Reference: a set repeated `k` times has `Σ' = k(n−1)/(kn−1) Σ`, so against the original
/// FID = (1 − √c)² Tr Σ (the small set projects the large one's covariance).
#[test]
fn fid_projected_route_matches_the_duplication_closed_form() {
    let (n, d, k) = (5, 8, 3);
    let x = lcg(6, n, d);
    let idx: Vec<usize> = (0..k * n).map(|i| i % n).collect();
    let y = x.select(&idx);
    let v = fid(&x, &y).unwrap();
    assert_eq!(v.method, SqrtTraceMethod::Projected);
    let c = (k * (n - 1)) as f64 / (k * n - 1) as f64;
    close(v.value, (1.0 - c.sqrt()).powi(2) * v.trace_real, 1e-12);
    // Roles swapped: the same value.
    let w = fid(&y, &x).unwrap();
    assert_eq!(w.method, SqrtTraceMethod::Projected);
    close(w.value, v.value, 1e-12);
}

/// Reference: diagonal covariances, `Tr (Σ1 Σ2)^½ = Σ √(a_i b_i)`. A zero variance makes a
/// covariance singular: Cholesky then runs on the other one, and when both are singular the
/// eigendecomposition route runs.
#[test]
fn fid_singular_covariances_take_the_fallback_routes() {
    let stats = |mean: [f64; 3], v: [f64; 3]| {
        let mut m = vec![0.0; 9];
        (0..3).for_each(|i| m[i * 3 + i] = v[i]);
        GaussianStats::from_parts(mean.to_vec(), &m).unwrap()
    };
    let a = stats([0.0, 1.0, 0.0], [1.0, 0.0, 2.0]);
    let b = stats([1.0, 1.0, 1.0], [4.0, 9.0, 1.0]);
    let v = frechet_distance(&a, &b).unwrap();
    assert_eq!(v.method, SqrtTraceMethod::Cholesky);
    close(v.value, 2.0 + 3.0 + 14.0 - 2.0 * (2.0 + 2f64.sqrt()), 1e-14);
    let c = stats([1.0, 1.0, 1.0], [4.0, 9.0, 0.0]);
    let v = frechet_distance(&a, &c).unwrap();
    assert_eq!(v.method, SqrtTraceMethod::Eigen);
    close(v.value, 2.0 + 3.0 + 13.0 - 2.0 * 2.0, 1e-14);
}

#[test]
fn gaussian_stats_reject_bad_parts() {
    assert!(GaussianStats::from_parts(vec![0.0; 2], &[1.0; 3]).is_err());
    let e = GaussianStats::from_parts(vec![0.0; 2], &[1.0, 0.5, 0.0, 1.0]).unwrap_err();
    assert!(e.to_string().contains("not symmetric"), "{e}");
}

#[test]
fn kid_reduces_the_default_subset_size_with_a_notice() {
    let (x, y) = (lcg(7, 30, 4), lcg(8, 20, 4));
    let v = kid(&x, &y, &KidSettings::default()).unwrap();
    assert_eq!((v.subset_size, v.subsets, v.reduced), (20, 100, true));
    assert_eq!(
        v.notice().unwrap(),
        "KID: the default subset size 1000 was reduced to 20 (the smallest set's size)"
    );
    // Reference: equal sizes make every subset a permutation, std 0 (torch-fidelity ~1e-16).
    let z = kid(
        &x.select(&(0..20).collect::<Vec<_>>()),
        &y,
        &KidSettings::default(),
    )
    .unwrap();
    assert_eq!(z.std, 0.0);
}

#[test]
fn kid_rejects_bad_settings() {
    let (x, y) = (lcg(7, 30, 4), lcg(8, 20, 4));
    let big = KidSettings {
        subset_size: Some(25),
        ..KidSettings::default()
    };
    let e = kid(&x, &y, &big).unwrap_err();
    assert_eq!(
        e,
        MetricError::SubsetTooLarge {
            subset_size: 25,
            available: 20,
            set: Set::Generated
        }
    );
    assert!(e
        .to_string()
        .contains("set `kid_subset_size` to at most 20"));
    let none = KidSettings {
        subsets: 0,
        ..KidSettings::default()
    };
    assert!(matches!(
        kid(&x, &y, &none),
        Err(MetricError::Setting { .. })
    ));
    let one = KidSettings {
        subset_size: Some(1),
        ..KidSettings::default()
    };
    assert!(matches!(
        kid(&x, &y, &one),
        Err(MetricError::Setting { .. })
    ));
    let wide_seed = KidSettings {
        seed: 1 << 32,
        subset_size: Some(10),
        ..KidSettings::default()
    };
    let e = kid_with(&x, &y, &wide_seed, SubsetSampler::NumpyLegacy).unwrap_err();
    assert!(e.to_string().contains("below 2^32"), "{e}");
}

#[test]
fn kid_is_reproducible_for_a_seed() {
    let (x, y) = (lcg(9, 40, 4), lcg(10, 30, 4));
    let s = KidSettings {
        subsets: 10,
        subset_size: Some(10),
        seed: 3,
    };
    assert_eq!(kid(&x, &y, &s).unwrap(), kid(&x, &y, &s).unwrap());
    let other = KidSettings { seed: 4, ..s };
    assert_ne!(
        kid(&x, &y, &s).unwrap().mean,
        kid(&x, &y, &other).unwrap().mean
    );
}

#[test]
fn chacha_subsets_are_distinct_indices() {
    let mut rng = IndexRng::chacha(0);
    for _ in 0..20 {
        let mut s = rng.subset(50, 20);
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 20);
        assert!(s.iter().all(|&i| i < 50));
    }
}

/// References: MT19937's first output for the default seed 5489 (Matsumoto & Nishimura;
/// `std::mt19937`), and `np.random.RandomState(0).permutation(10)`.
#[test]
fn mt19937_matches_numpy_legacy_state() {
    assert_eq!(Mt19937::new(5489).next_u32(), 3_499_211_612);
    assert_eq!(
        Mt19937::new(0).permutation(10),
        vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]
    );
}

/// Reference: CMMD of a set with itself is 0; of one pair of unit vectors at squared
/// distance s, 1000·(2 − 2·exp(−s/200)).
#[test]
fn cmmd_closed_forms() {
    let x = lcg(11, 30, 16).l2_normalised().unwrap();
    assert!(cmmd(&x, &x).unwrap().abs() < 1e-12);
    let a = Features::from_rows(&[[0.6, 0.8]]).unwrap();
    let b = Features::from_rows(&[[1.0, 0.0]]).unwrap();
    let s: f64 = 0.4f64.powi(2) + 0.8f64.powi(2);
    close(
        cmmd(&a, &b).unwrap(),
        1000.0 * (2.0 - 2.0 * (-s / 200.0).exp()),
        1e-12,
    );
}

/// Reference: rows pointing the same way have cosine 1; a zero row has no direction.
#[test]
fn csd_score_closed_forms_and_zero_rows() {
    let real = Features::from_rows(&[[1.0, 0.0], [0.0, 1.0]]).unwrap();
    let generated = Features::from_rows(&[[2.0, 2.0], [1.0, 0.0]]).unwrap();
    let per = csd_per_image(&real, &generated).unwrap();
    close(per[0], 1.0, 1e-15);
    close(per[1], 0.5f64.sqrt(), 1e-15);
    close(
        csd_score(&real, &generated).unwrap(),
        (1.0 + 0.5f64.sqrt()) / 2.0,
        1e-15,
    );
    let zero = Features::from_rows(&[[1.0, 1.0], [0.0, 0.0]]).unwrap();
    let e = csd_score(&real, &zero).unwrap_err();
    assert!(e.to_string().contains("row 1 is all zeros"), "{e}");
}

/// Reference: `numpy.percentile([1, 2, 3, 4], [2.5, 97.5])` = `[1.075, 3.925]`.
#[test]
fn quantiles_interpolate_like_numpy() {
    close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.025), 1.075, 1e-15);
    close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.975), 3.925, 1e-15);
    assert_eq!(quantile(&[7.0], 0.5), 7.0);
}

#[test]
fn bootstrap_is_seeded_and_collapses_on_constant_metrics() {
    let (x, y) = (lcg(12, 20, 3), lcg(13, 15, 3));
    // Reference: a metric that ignores the resample has a zero-width interval at its value.
    let constant = |_: &Features, _: &Features| -> Result<f64> { Ok(0.25) };
    let iv = bootstrap(&x, &y, &constant, 50, 1, 0.95).unwrap();
    assert_eq!((iv.low, iv.high, iv.mean, iv.std), (0.25, 0.25, 0.25, 0.0));
    // Reference: resamples keep each set's size.
    let sizes = |r: &Features, g: &Features| -> Result<f64> { Ok((r.n() * 100 + g.n()) as f64) };
    let iv = bootstrap(&x, &y, &sizes, 5, 1, 0.9).unwrap();
    assert_eq!((iv.low, iv.high), (2015.0, 2015.0));
    // Seeded: the same seed, the same interval; the interval brackets the point value.
    let metric = |r: &Features, g: &Features| cmmd(r, g);
    let a = bootstrap(&x, &y, &metric, 40, 7, 0.9).unwrap();
    assert_eq!(a, bootstrap(&x, &y, &metric, 40, 7, 0.9).unwrap());
    assert!(a.low < a.high && a.replicates == 40);
    assert!(bootstrap(&x, &y, &metric, 0, 7, 0.9).is_err());
    assert!(bootstrap(&x, &y, &metric, 10, 7, 1.0).is_err());
}

/// Reference: the generator maps `u ∈ [0, 1)` to `[shift − scale, shift + scale)`.
#[test]
fn lcg_values_stay_in_range() {
    let f = lcg_matrix(1, 50, 10, 1.3, 0.1).unwrap();
    assert!(f.as_slice().iter().all(|&v| (-1.2..1.4).contains(&v)));
    let mut g = Lcg::new(1);
    assert_eq!(g.next_value(1.0, 0.0), lcg(1, 1, 1).as_slice()[0]);
}
