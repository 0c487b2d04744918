//! Parity of Inception v3 (both variants) with pytorch-fid / torchvision on reproducible
//! random weights, strict loading, and PyTorch checkpoint reading.
//!
//! The fixtures in `tests/fixtures/eval/inception/` come from the dev-only
//! `tools/make_inception_fixtures.py`: three paintings (RGB8), pytorch-fid's
//! `InceptionV3(output_blocks=[0, 1, 2, 3])` outputs for the FID network and for torchvision's
//! (its weights drawn by the generator that `InceptionV3::random` shares), every
//! state-dict tensor's shape and sum, and tiny `.pth` files in each PyTorch format.
//!
//! `NSYNC_INCEPTION_CHECKPOINTS=DIR` (a folder written by the script's `--write-pth DIR`)
//! also loads the full random checkpoints as `.pth` (legacy and zip) and `.safetensors`.
//! `cargo test --release -p nsync-nodes --test inception_parity -- --ignored --nocapture`
//! prints the throughput (compare `bench/inception_reference.py`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::weights::Weights;
use nsync_nodes::evaluation::inception::{random_weights, InceptionV3, InceptionVariant};
use serde_json::Value;

use common::rel_err;

const TOL: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval/inception")
}

struct Fixture {
    json: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let dir = fixture_dir();
    let json = serde_json::from_slice(&std::fs::read(dir.join("fixtures.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("fixtures.safetensors"), &Device::Cpu).unwrap();
    Fixture { json, tensors }
}

impl Fixture {
    fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor `{name}`"))
    }

    fn seed(&self) -> u64 {
        self.json["seed"].as_u64().unwrap()
    }

    /// pytorch-fid's preprocessing of the stored RGB8 pixels: /255, bilinear to 299×299
    /// (`align_corners=False`, no antialias), 2x − 1.
    fn network_input(&self) -> Tensor {
        let x = (self.t("images_u8").to_dtype(DType::F32).unwrap() / 255.0).unwrap();
        let x = x.upsample_bilinear2d(299, 299, false).unwrap();
        x.affine(2.0, -1.0).unwrap()
    }
}

fn key(variant: InceptionVariant) -> &'static str {
    match variant {
        InceptionVariant::FidTf2015 => "fid",
        InceptionVariant::Torchvision => "torchvision",
    }
}

/// The resized input equals torch's (row/column sums in f64 and a corner crop), so the
/// network comparisons below start from the same numbers.
#[test]
fn preprocessing_matches_torch() {
    let f = fixture();
    let x = f.network_input();
    let x64 = x.to_dtype(DType::F64).unwrap();
    let rows = x64.sum(3).unwrap();
    let cols = x64.sum(2).unwrap();
    let crop = x.narrow(2, 0, 24).unwrap().narrow(3, 0, 24).unwrap();
    for (what, ours, theirs) in [
        ("row sums", rows, f.t("input299_rowsum")),
        ("column sums", cols, f.t("input299_colsum")),
        ("crop", crop, f.t("input299_crop")),
    ] {
        let err = rel_err(&ours, theirs);
        eprintln!("input {what}: relative error {err:e}");
        assert!(err <= 1e-5, "{what}: {err}");
    }
}

fn matches_reference(variant: InceptionVariant) {
    let f = fixture();
    let v = key(variant);
    let net = InceptionV3::random(variant, f.seed(), &Device::Cpu).unwrap();
    let x = f.network_input();
    let start = Instant::now();
    let features = net.forward_features(&x).unwrap();
    eprintln!(
        "{v}: features of {} images took {:?}",
        x.dim(0).unwrap(),
        start.elapsed()
    );
    assert_eq!(features.dims(), [3, 2048]);
    let err = rel_err(&features, f.t(&format!("{v}.features")));
    eprintln!("{v}: 2048-d features relative error {err:e}");
    assert!(err <= TOL, "{v} features: {err}");

    // pytorch-fid's intermediate blocks, for the first image (to locate a regression).
    let blocks = net.forward_blocks(&x.narrow(0, 0, 1).unwrap(), 3).unwrap();
    let shapes: Vec<Vec<usize>> = blocks.iter().map(|b| b.dims()[1..].to_vec()).collect();
    let expected: Vec<Vec<usize>> =
        serde_json::from_value(f.json["variants"][v]["block_shapes"].clone()).unwrap();
    let expected: Vec<Vec<usize>> = expected.iter().map(|s| s[1..].to_vec()).collect();
    assert_eq!(shapes, expected);
    for (k, b) in blocks.iter().enumerate().take(3) {
        let ours = b.mean((2, 3)).unwrap();
        let theirs = f.t(&format!("{v}.block{k}_mean")).narrow(0, 0, 1).unwrap();
        let err = rel_err(&ours, &theirs);
        eprintln!("{v}: block {k} spatial means relative error {err:e}");
        assert!(err <= TOL, "{v} block {k}: {err}");
    }
    let alone = blocks[3].flatten_from(1).unwrap();
    let err = rel_err(&alone, &features.narrow(0, 0, 1).unwrap());
    assert!(err <= 1e-6, "{v}: an image alone vs in a batch: {err}");
}

#[test]
fn fid_variant_matches_pytorch_fid() {
    matches_reference(InceptionVariant::FidTf2015);
}

#[test]
fn torchvision_variant_matches_torchvision() {
    matches_reference(InceptionVariant::Torchvision);
}

/// The generator reproduces the Python state dicts: the same names (so the same
/// architecture, heads and buffers included), shapes and values.
#[test]
fn random_weights_match_the_python_state_dicts() {
    let f = fixture();
    for variant in [InceptionVariant::FidTf2015, InceptionVariant::Torchvision] {
        let v = key(variant);
        let ours = random_weights(variant, f.seed()).unwrap();
        let theirs = f.json["variants"][v]["tensors"].as_object().unwrap();
        let mut a: Vec<&String> = ours.keys().collect();
        let mut b: Vec<&String> = theirs.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{v}: tensor names");
        for (name, t) in &ours {
            let want = &theirs[name];
            let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
            assert_eq!(t.dims(), shape.as_slice(), "{v}: {name}");
            let sum = t
                .to_dtype(DType::F64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let expected = want["sum"].as_f64().unwrap();
            assert!(
                (sum - expected).abs() <= 1e-9 * (1.0 + expected.abs()),
                "{v}: {name}: sum {sum} vs {expected}"
            );
        }
        eprintln!("{v}: {} tensors match", ours.len());
    }
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn load_err(path: &Path, variant: InceptionVariant) -> String {
    match InceptionV3::load(path, variant, &Device::Cpu) {
        Ok(_) => panic!("{} loaded as {variant:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A small input (the smallest Inception v3 accepts) for cheap equality checks.
fn small_input() -> Tensor {
    let v: Vec<f32> = (0..3 * 75 * 75)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (1, 3, 75, 75), &Device::Cpu).unwrap()
}

#[test]
fn strict_loading_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("inception.safetensors");
    let fid = InceptionVariant::FidTf2015;
    let full = random_weights(fid, 3).unwrap();

    // The complete file (with num_batches_tracked buffers) loads and equals the direct build.
    save(&full, &path);
    let loaded = InceptionV3::load(&path, fid, &Device::Cpu).unwrap();
    let direct = InceptionV3::random(fid, 3, &Device::Cpu).unwrap();
    let x = small_input();
    let diff = (loaded.forward_features(&x).unwrap() - direct.forward_features(&x).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);

    let mut cases: Vec<(&str, HashMap<String, Tensor>, Vec<&str>)> = Vec::new();
    let mut missing = full.clone();
    missing.remove("Mixed_6c.branch7x7_2.bn.running_var");
    cases.push((
        "missing",
        missing,
        vec!["missing tensor", "Mixed_6c.branch7x7_2.bn.running_var"],
    ));
    let mut shape = full.clone();
    shape.insert(
        "Mixed_5b.branch_pool.conv.weight".into(),
        Tensor::zeros((32, 192, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    cases.push((
        "shape",
        shape,
        vec![
            "Mixed_5b.branch_pool.conv.weight",
            "[32, 192, 3, 3]",
            "[32, 192, 1, 1]",
        ],
    ));
    let mut extra = full.clone();
    extra.insert(
        "Mixed_5b.branch9x9.conv.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    cases.push((
        "extra",
        extra,
        vec!["unexpected", "Mixed_5b.branch9x9.conv.weight"],
    ));
    let mut no_fc = full.clone();
    no_fc.remove("fc.bias");
    cases.push(("no fc", no_fc, vec!["fc.bias"]));
    for (what, tensors, needles) in cases {
        save(&tensors, &path);
        let e = load_err(&path, fid);
        eprintln!("{what}: {e}");
        assert!(e.contains("inception.safetensors"), "{what}: {e}");
        for n in needles {
            assert!(e.contains(n), "{what}: `{n}` not in: {e}");
        }
    }

    // The two published files differ only in their heads: the wrong variant is refused.
    save(&full, &path);
    let e = load_err(&path, InceptionVariant::Torchvision);
    assert!(e.contains("fc.weight") && e.contains("1008"), "{e}");
    let tv = random_weights(InceptionVariant::Torchvision, 3).unwrap();
    save(&tv, &path);
    let e = load_err(&path, fid);
    assert!(e.contains("fc.weight") && e.contains("variant"), "{e}");
    InceptionV3::load(&path, InceptionVariant::Torchvision, &Device::Cpu).unwrap();
    // torchvision's AuxLogits head: all of it or none of it.
    let no_aux: HashMap<String, Tensor> = tv
        .iter()
        .filter(|(k, _)| !k.starts_with("AuxLogits."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    save(&no_aux, &path);
    InceptionV3::load(&path, InceptionVariant::Torchvision, &Device::Cpu).unwrap();
    let mut partial = tv;
    partial.remove("AuxLogits.conv1.bn.running_mean");
    save(&partial, &path);
    let e = load_err(&path, InceptionVariant::Torchvision);
    assert!(e.contains("AuxLogits.conv1.bn.running_mean"), "{e}");

    let e = load_err(&tmp.path().join("absent.pth"), fid);
    assert!(e.contains("pytorch-fid/releases"), "{e}");
}

/// Tiny checkpoints written by `torch.save` in each format read back exactly: f32, f16, f64
/// and int64 tensors, a transposed (non-contiguous) one, a view at a storage offset, a
/// scalar, an `OrderedDict` state dict, a nested checkpoint under a key, and a 2017-style
/// legacy file (`_rebuild_tensor`, Python 2 string opcodes).
#[test]
fn pytorch_checkpoints_read_exactly() {
    let dir = fixture_dir().join("pth");
    let expected =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let check = |w: &Weights, file: &str| {
        for (name, want) in &expected {
            let got = w.get(name, want.dims()).unwrap();
            let want = want.to_dtype(DType::F64).unwrap();
            let diff = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap_or(0.0);
            assert_eq!(diff, 0.0, "{file}: {name}");
        }
        w.finish(&[]).unwrap();
    };
    for file in ["tiny_zip.pth", "tiny_legacy.pth", "tiny_legacy_2017.pth"] {
        let w = Weights::load_pth(&dir.join(file), None, DType::F64, &Device::Cpu).unwrap();
        check(&w, file);
        // `load` dispatches on the extension.
        let w = Weights::load(&dir.join(file), DType::F64, &Device::Cpu).unwrap();
        check(&w, file);
    }
    for file in ["tiny_nested_zip.pth", "tiny_nested_legacy.pth"] {
        let path = dir.join(file);
        let w =
            Weights::load_pth(&path, Some("model_state_dict"), DType::F64, &Device::Cpu).unwrap();
        check(&w, file);
        let e = Weights::load_pth(&path, None, DType::F64, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(file) && e.contains("no tensors"), "{e}");
    }
    let e = Weights::load_pth(
        &dir.join("tiny_nested_legacy.pth"),
        Some("state_dict"),
        DType::F64,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("state_dict") && e.contains("model_state_dict"),
        "{e}"
    );
    let e = Weights::load_pth(
        &dir.join("expected.safetensors"),
        None,
        DType::F64,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("not a PyTorch checkpoint"), "{e}");
}

/// The full random checkpoints as pytorch-fid / torchvision would ship them, when
/// `NSYNC_INCEPTION_CHECKPOINTS` points at the script's `--write-pth` folder.
#[test]
fn full_checkpoints_from_python() {
    let Some(dir) = std::env::var_os("NSYNC_INCEPTION_CHECKPOINTS") else {
        eprintln!("NSYNC_INCEPTION_CHECKPOINTS not set: skipped");
        return;
    };
    let dir = PathBuf::from(dir);
    let f = fixture();
    let x = f.network_input();
    for variant in [InceptionVariant::FidTf2015, InceptionVariant::Torchvision] {
        let v = key(variant);
        for file in [
            format!("{v}_legacy.pth"),
            format!("{v}_zip.pth"),
            format!("{v}.safetensors"),
        ] {
            let start = Instant::now();
            let net = InceptionV3::load(&dir.join(&file), variant, &Device::Cpu).unwrap();
            let loaded = start.elapsed();
            let err = rel_err(
                &net.forward_features(&x).unwrap(),
                f.t(&format!("{v}.features")),
            );
            eprintln!("{file}: loaded in {loaded:?}, features relative error {err:e}");
            assert!(err <= TOL, "{file}: {err}");
        }
    }
}

/// CPU seconds used by this process so far (Linux; `None` elsewhere): a throughput
/// measure that a busy machine disturbs less than wall time.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Images per second at batch 8 and 16 (run in release mode; threads: RAYON_NUM_THREADS).
#[test]
#[ignore]
fn throughput() {
    let net = InceptionV3::random(InceptionVariant::FidTf2015, 0, &Device::Cpu).unwrap();
    for batch in [8usize, 16] {
        let x = Tensor::rand(-1f32, 1f32, (batch, 3, 299, 299), &Device::Cpu).unwrap();
        net.forward_features(&x).unwrap(); // warm-up
        let repeats = 3;
        let cpu = process_cpu_seconds();
        let start = Instant::now();
        for _ in 0..repeats {
            net.forward_features(&x).unwrap();
        }
        let secs = start.elapsed().as_secs_f64() / repeats as f64;
        let cpu = process_cpu_seconds()
            .zip(cpu)
            .map(|(b, a)| (batch * repeats) as f64 / (b - a))
            .unwrap_or(f64::NAN);
        eprintln!(
            "{{\"batch\": {batch}, \"images_per_s\": {:.2}, \"images_per_cpu_s\": {cpu:.2}, \"threads\": {}}}",
            batch as f64 / secs,
            rayon::current_num_threads()
        );
    }
}
