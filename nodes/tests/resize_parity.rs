//! Parity of the evaluator's preprocessing with the Python references.
//!
//! - `tests/fixtures/eval/resize_refs.json` (a copy of `shared/reference/resize_refs.json`):
//!   Pillow bicubic (8-bit and float), torch bilinear and torch-fidelity's TF1 bilinear on
//!   6×6 and 4×4 integer images.
//! - `tests/fixtures/eval/preprocess/` (made by `tools/make_resize_fixtures.py`): three crops
//!   of real paintings as PNG and, in `refs.json`, what Pillow 13, torch 2.15, torchvision
//!   0.29, transformers 5.24 and clean-fid 0.1.35 compute on them and on images derived from
//!   them here and in the script alike (a mosaic, a synthetic 1023×767 image, a 1-pixel
//!   column and row, a 3×2 image): the CMMD, CSD, clean-fid and pytorch-fid recipes and
//!   Pillow's five filters at several sizes. Bit-exact results are compared by blake3 digest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{Rgb, RgbImage};
use nsync_cache::Digest;
use nsync_nodes::evaluation::preprocess::recipe::{
    clean_fid_resize, cmmd_resize, csd_resize, prepare,
};
use nsync_nodes::evaluation::preprocess::{
    bilinear_resize, resize_f32, resize_u8, tf1_bilinear_resize, PilFilter, Recipe,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval")
}

fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The value of the small-reference entry whose key starts with `prefix`.
fn small_ref<'a>(refs: &'a Value, prefix: &str) -> &'a Value {
    let obj = refs.as_object().unwrap();
    let mut hits = obj.iter().filter(|(k, _)| k.starts_with(prefix));
    let (_, v) = hits
        .next()
        .unwrap_or_else(|| panic!("no reference {prefix}"));
    assert!(hits.next().is_none(), "ambiguous reference {prefix}");
    v
}

// ---------------------------------------------------------------- small integer images

#[test]
fn small_images_match_resize_refs() {
    let refs = load_json(&fixtures().join("resize_refs.json"));
    let inputs = [
        ("A", matrix(&refs["A_6x6"]), 4),
        ("B", matrix(&refs["B_4x4"]), 7),
    ];
    for (name, input, out) in inputs {
        let n = input.len();
        let bytes: Vec<u8> = input.iter().flatten().map(|&v| v as u8).collect();
        let floats: Vec<f32> = input.iter().flatten().map(|&v| v as f32).collect();
        let sized = |k: &str| format!("{k}_{name}_to_{out}x{out}");

        // Pillow 8-bit bicubic: exact.
        let want = matrix(small_ref(&refs, &sized("pil_bicubic_uint8")));
        let got = resize_u8(&bytes, n, n, 1, out, out, PilFilter::Bicubic).unwrap();
        let want: Vec<u8> = want.iter().flatten().map(|&v| v as u8).collect();
        assert_eq!(got, want, "pil uint8 {name}");

        // Pillow 'F' bicubic. These shared references differ from what Pillow 10.4, 12.1 and
        // 13.0 compute on x86-64 by 1–2 ulp in 5 of the 49 values of B → 7×7 (the machine
        // that made them is unknown); `small_images_match_pillow_13_exactly` checks the
        // same resizes bit for bit against Pillow 13.0.
        let want = matrix(small_ref(&refs, &sized("pil_bicubic_F")));
        let got = resize_f32(&floats, n, n, out, out, PilFilter::Bicubic).unwrap();
        for (g, w) in got.iter().zip(want.iter().flatten()) {
            let ulps = (g.to_bits() as i64 - (*w as f32).to_bits() as i64).abs();
            assert!(ulps <= 2, "pil F {name}: {g} vs {w}");
        }

        // torch bilinear and TF1 bilinear: printed with 6 decimals, and apparently computed
        // in f64 (torch computes in f32: 2–3 ulp apart at 117); torch's own f32 values are
        // checked in `small_images_match_pillow_13_exactly` and on the paintings.
        for (key, f) in [
            (
                "torch_bilinear_align_corners_false",
                bilinear_resize as ResizeFn,
            ),
            ("tf1_compat_bilinear", tf1_bilinear_resize as ResizeFn),
        ] {
            let want = matrix(small_ref(&refs, &sized(key)));
            let got = f(&floats, 1, n, n, out, out).unwrap();
            for (g, w) in got.iter().zip(want.iter().flatten()) {
                assert!((*g as f64 - w).abs() <= 1e-4, "{key} {name}: {g} vs {w}");
            }
        }
    }
}

/// Every filter on the same small images, against Pillow 13.0 and torch 2.15 (from
/// `tools/make_resize_fixtures.py`): exact.
#[test]
fn small_images_match_pillow_13_exactly() {
    let refs = load_json(&fixtures().join("preprocess/refs.json"));
    let mut checked = 0;
    for case in refs["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        if !kind.starts_with("small") {
            continue;
        }
        let [n, out] = size_of(&case["size"]).map(|v| v as usize);
        let bytes: Vec<u8> = (0..n * n)
            .map(|i| {
                let (y, x) = (i / n, i % n);
                ((37 * x + 91 * y + 11 * x * y) % 256) as u8
            })
            .collect();
        let floats: Vec<f32> = bytes.iter().map(|&v| v as f32).collect();
        let want_f32: Vec<f32> = case["f32"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        if kind == "small_torch_bilinear" {
            let got = bilinear_resize(&floats, 1, n, n, out, out).unwrap();
            for (g, w) in got.iter().zip(&want_f32) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "torch {n}→{out}: {g} vs {w}"
                );
            }
        } else {
            let f = filter(case["filter"].as_str().unwrap());
            let want_u8: Vec<u8> = case["u8"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let got = resize_u8(&bytes, n, n, 1, out, out, f).unwrap();
            assert_eq!(got, want_u8, "L {f:?} {n}→{out}");
            let got = resize_f32(&floats, n, n, out, out, f).unwrap();
            assert_eq!(got, want_f32, "F {f:?} {n}→{out}");
        }
        checked += 1;
    }
    assert_eq!(checked, 12);
}

type ResizeFn = fn(&[f32], usize, usize, usize, usize, usize) -> Option<Vec<f32>>;

// ---------------------------------------------------------------- real paintings

struct Paintings {
    refs: Value,
    images: Vec<(String, RgbImage)>,
}

impl Paintings {
    fn load() -> Self {
        let dir = fixtures().join("preprocess");
        let refs = load_json(&dir.join("refs.json"));
        let mut images = Vec::new();
        for (name, src) in refs["sources"].as_object().unwrap() {
            let path = dir.join(src["file"].as_str().unwrap());
            let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let img = img.into_rgb8();
            assert_eq!([img.width(), img.height()], size_of(&src["size"]), "{name}");
            images.push((name.clone(), img));
        }
        let derived = &refs["derived"];
        let m = &derived["mosaic"];
        let [mw, mh] = size_of(&m["size"]);
        let mut mosaic = RgbImage::new(mw, mh);
        for paste in m["pastes"].as_array().unwrap() {
            let src = find(&images, paste[0].as_str().unwrap());
            let (x, y) = (paste[1].as_i64().unwrap(), paste[2].as_i64().unwrap());
            image::imageops::replace(&mut mosaic, src, x, y);
        }
        let [sw, sh] = size_of(&derived["synthetic"]["size"]);
        let synthetic = RgbImage::from_fn(sw, sh, |x, y| {
            let (x, y) = (x as u64, y as u64);
            let v = |c: u64| {
                (((3 * x + 5 * y) / 7 + (37 * x + 91 * y + 11 * x * y + 71 * c) % 61) % 256) as u8
            };
            Rgb([v(0), v(1), v(2)])
        });
        let mut crops = Vec::new();
        for name in ["column", "row", "tiny"] {
            let d = &derived[name];
            let b: Vec<u32> = d["crop"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let src = find(&images, d["of"].as_str().unwrap());
            let crop =
                image::imageops::crop_imm(src, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image();
            crops.push((name.to_string(), crop));
        }
        images.push(("mosaic".into(), mosaic));
        images.push(("synthetic".into(), synthetic));
        images.extend(crops);
        Paintings { refs, images }
    }

    fn image(&self, name: &str) -> &RgbImage {
        find(&self.images, name)
    }

    fn cases(&self, kind: &str) -> Vec<&Value> {
        let all = self.refs["cases"].as_array().unwrap();
        let v: Vec<&Value> = all.iter().filter(|c| c["kind"] == kind).collect();
        assert!(!v.is_empty(), "no {kind} cases");
        v
    }
}

fn find<'a>(images: &'a [(String, RgbImage)], name: &str) -> &'a RgbImage {
    &images
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no image {name}"))
        .1
}

fn size_of(v: &Value) -> [u32; 2] {
    [v[0].as_u64().unwrap() as u32, v[1].as_u64().unwrap() as u32]
}

fn blake3_u8(bytes: &[u8]) -> String {
    Digest::of(bytes).to_hex()
}

fn blake3_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Digest::of(&bytes).to_hex()
}

/// `(c, y, x, value)` samples of a case.
fn samples(case: &Value) -> Vec<(usize, usize, usize, f64)> {
    case["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let i = |k: usize| s[k].as_u64().unwrap() as usize;
            (i(0), i(1), i(2), s[3].as_f64().unwrap())
        })
        .collect()
}

/// Largest difference between a CHW tensor of side `size` and a case's samples.
fn sample_error(chw: &[f32], size: usize, case: &Value) -> f64 {
    samples(case)
        .into_iter()
        .map(|(c, y, x, v)| (chw[(c * size + y) * size + x] as f64 - v).abs())
        .fold(0.0, f64::max)
}

fn label(case: &Value) -> String {
    format!(
        "{}/{}",
        case["image"].as_str().unwrap(),
        case["kind"].as_str().unwrap()
    )
}

fn check_exact(case: &Value, key: &str, got: String, chw: &[f32], size: usize) {
    let want = case[key].as_str().unwrap();
    assert_eq!(
        got,
        want,
        "{} {key}: digest differs (largest sample error {:e})",
        label(case),
        sample_error(chw, size, case)
    );
}

#[test]
fn cmmd_recipe_matches_cmmd_pytorch() {
    let p = Paintings::load();
    for case in p.cases("cmmd") {
        let img = p.image(case["image"].as_str().unwrap());
        let out = prepare(Recipe::Cmmd, img);
        check_exact(
            case,
            "resized_u8_blake3",
            blake3_u8(cmmd_resize(img).as_raw()),
            &out,
            336,
        );
        check_exact(case, "output_blake3", blake3_f32(&out), &out, 336);
    }
}

#[test]
fn csd_recipe_matches_torchvision() {
    let p = Paintings::load();
    for case in p.cases("csd") {
        let img = p.image(case["image"].as_str().unwrap());
        let out = prepare(Recipe::Csd, img);
        check_exact(
            case,
            "resized_u8_blake3",
            blake3_u8(csd_resize(img).as_raw()),
            &out,
            224,
        );
        check_exact(case, "output_blake3", blake3_f32(&out), &out, 224);
    }
}

#[test]
fn clean_fid_recipe_matches_clean_fid() {
    let p = Paintings::load();
    for case in p.cases("clean_fid") {
        let img = p.image(case["image"].as_str().unwrap());
        let out = prepare(Recipe::CleanFid, img);
        check_exact(
            case,
            "resized_f32_blake3",
            blake3_f32(&clean_fid_resize(img)),
            &out,
            299,
        );
        check_exact(case, "output_blake3", blake3_f32(&out), &out, 299);
    }
}

/// The signed checksum of `shared/docs/metrics.md`'s LCG: signs from the top bit.
fn signed_checksum(values: &[f32], seed: u64) -> f64 {
    let mut s = seed;
    let mut sum = 0.0f64;
    for &v in values {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        sum += if s >> 63 == 1 { -(v as f64) } else { v as f64 };
    }
    sum
}

#[test]
fn pytorch_fid_recipe_matches_torch_to_1e_6() {
    let p = Paintings::load();
    let (mut worst, mut exact): (f64, usize) = (0.0, 0);
    let plane = 299 * 299;
    // Bound on a sum of 299² values each within 1e-6.
    let sum_tol = 1e-6 * plane as f64;
    for case in p.cases("pytorch_fid") {
        let img = p.image(case["image"].as_str().unwrap());
        let out = prepare(Recipe::PytorchFid, img);
        assert_eq!(
            out,
            prepare(Recipe::TorchvisionInception, img),
            "same pixels"
        );
        let err = sample_error(&out, 299, case);
        assert!(err <= 1e-6, "{}: sample error {err:e}", label(case));
        worst = worst.max(err);
        exact += usize::from(blake3_f32(&out) == case["output_blake3"].as_str().unwrap());
        for (c, want) in case["channel_sums"].as_array().unwrap().iter().enumerate() {
            let got: f64 = out[c * plane..(c + 1) * plane]
                .iter()
                .map(|&v| v as f64)
                .sum();
            let d = (got - want.as_f64().unwrap()).abs();
            assert!(
                d <= sum_tol,
                "{}: channel {c} sum off by {d:e}",
                label(case)
            );
        }
        let seed = case["checksum_seed"].as_u64().unwrap();
        let d = (signed_checksum(&out, seed) - case["signed_checksum"].as_f64().unwrap()).abs();
        assert!(
            d <= sum_tol,
            "{}: signed checksum off by {d:e}",
            label(case)
        );
    }
    let n = p.cases("pytorch_fid").len();
    eprintln!("pytorch-fid: largest sample error {worst:e}; {exact} of {n} bit-exact");
}

fn filter(name: &str) -> PilFilter {
    match name {
        "box" => PilFilter::Box,
        "bilinear" => PilFilter::Bilinear,
        "hamming" => PilFilter::Hamming,
        "bicubic" => PilFilter::Bicubic,
        "lanczos" => PilFilter::Lanczos,
        other => panic!("unknown filter {other}"),
    }
}

#[test]
fn pil_resize_matches_pillow_on_paintings() {
    let p = Paintings::load();
    let mut checked = 0;
    for kind in ["pil_u8", "pil_f32"] {
        for case in p.cases(kind) {
            let img = p.image(case["image"].as_str().unwrap());
            let (w, h) = (img.width() as usize, img.height() as usize);
            let [ow, oh] = size_of(&case["size"]).map(|v| v as usize);
            let f = filter(case["filter"].as_str().unwrap());
            let what = format!("{} {kind} {:?} → {ow}×{oh}", label(case), f);
            let got = if kind == "pil_u8" {
                blake3_u8(&resize_u8(img.as_raw(), w, h, 3, ow, oh, f).unwrap())
            } else {
                let mut hwc = vec![0.0f32; ow * oh * 3];
                for c in 0..3 {
                    let plane: Vec<f32> = img
                        .as_raw()
                        .iter()
                        .skip(c)
                        .step_by(3)
                        .map(|&v| v as f32)
                        .collect();
                    for (i, v) in resize_f32(&plane, w, h, ow, oh, f)
                        .unwrap()
                        .into_iter()
                        .enumerate()
                    {
                        hwc[i * 3 + c] = v;
                    }
                }
                blake3_f32(&hwc)
            };
            assert_eq!(got, case["blake3"].as_str().unwrap(), "{what}");
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked} cases");
}

/// Timing of the recipes on a 1024×768 image (meaningful in release:
/// `cargo test --release -p nsync-nodes --test resize_parity -- --ignored --nocapture`).
#[test]
#[ignore]
fn recipe_speed() {
    let img = RgbImage::from_fn(1024, 768, |x, y| {
        Rgb([(x ^ y) as u8, (x * 3) as u8, (y * 7) as u8])
    });
    for r in Recipe::ALL {
        let _ = prepare(r, &img);
        let start = Instant::now();
        let n = 20;
        for _ in 0..n {
            std::hint::black_box(prepare(r, &img));
        }
        eprintln!(
            "{:<45} {:>8.2?} per 1024×768 image",
            r.id(),
            start.elapsed() / n
        );
    }
}
