//! The CLIP image feature extractors of the evaluator against their Python references, on
//! tiny random models and three real paintings.
//!
//! The fixtures under `tests/fixtures/eval/clip/` are written by the dev-only script
//! `tools/make_clip_fixtures.py`: a tiny transformers `CLIPModel` (CMMD's
//! `CLIPVisionModelWithProjection` reads its image tower) and a tiny CSD (open_clip's
//! OpenAI-style `VisionTransformer` + style head, saved like the authors' checkpoint), the
//! preprocessed paintings as PNG, and the reference embeddings. Set `NSYNC_CLIP_FIXTURES`
//! to a folder written by `make_clip_fixtures.py --full DIR` to run every test here on
//! full-size (ViT-L/14) random models instead.
//!
//! The throughput benchmark is ignored by default:
//! `cargo test --release -p nsync-nodes --test clip_vision_parity -- --ignored --nocapture`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::weights::Weights;
use nsync_nodes::evaluation::clip_vision::{ClipVision, ClipVisionConfig};
use nsync_nodes::evaluation::csd::{Csd, CsdConfig};
use serde_json::Value;

use common::rel_err;

// As Python floats (f64), rounded to f32 like `torch.tensor(CLIP_MEAN)`.
const MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const TOL: f32 = 1e-4;

struct Fixture {
    dir: PathBuf,
    json: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let dir = std::env::var_os("NSYNC_CLIP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/eval/clip")
        });
    let json = serde_json::from_slice(&std::fs::read(dir.join("fixtures.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("fixtures.safetensors"), &Device::Cpu).unwrap();
    Fixture { dir, json, tensors }
}

impl Fixture {
    fn tensor(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    /// The stored 8-bit images `inputs/<stem>_<i>.png`, as torchvision's `ToTensor` +
    /// `Normalize(CLIP mean, std)` make them: `[n, 3, s, s]`.
    fn images(&self, stem: &str) -> Tensor {
        let mut rows = Vec::new();
        for i in 0.. {
            let path = self.dir.join(format!("inputs/{stem}_{i}.png"));
            if !path.exists() {
                break;
            }
            let img = image::open(&path).unwrap().to_rgb8();
            let (w, h) = img.dimensions();
            let mut v = vec![0f32; 3 * (w * h) as usize];
            for (x, y, p) in img.enumerate_pixels() {
                for c in 0..3 {
                    let idx = c * (w * h) as usize + (y * w + x) as usize;
                    v[idx] = (p[c] as f32 / 255.0 - MEAN[c] as f32) / STD[c] as f32;
                }
            }
            rows.push(Tensor::from_vec(v, (3, h as usize, w as usize), &Device::Cpu).unwrap());
        }
        assert!(
            rows.len() >= 3,
            "{}: expected 3 `{stem}` images",
            self.dir.display()
        );
        Tensor::stack(&rows, 0).unwrap()
    }

    fn clip_config(&self) -> ClipVisionConfig {
        serde_json::from_value(self.json["clip_vision"]["config"].clone()).unwrap()
    }
}

fn err_text<T>(r: Result<T, impl std::fmt::Display>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Copy `src` (safetensors) to `dst`, changing its tensors with `edit`.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let mut t = candle_core::safetensors::load(src, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, dst).unwrap();
}

// ---------------------------------------------------------------- CLIP (CMMD)

#[test]
fn clip_vision_matches_transformers() {
    let f = fixture();
    let model = ClipVision::from_dir(&f.dir.join("clip_vision"), &Device::Cpu).unwrap();
    let cfg = f.clip_config();
    assert_eq!(model.config(), &cfg);
    assert_eq!(model.image_size(), 336);
    assert_eq!(model.dim(), cfg.projection_dim);
    let out = model.embed(&f.images("clip336")).unwrap();
    let err = rel_err(&out, f.tensor("clip_embeds"));
    eprintln!("CLIP vision (quick_gelu) relative error: {err:.3e}");
    assert!(err <= TOL, "CLIP vision relative error {err}");
    // Unit rows.
    let norms: Vec<f32> = out.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
}

#[test]
fn clip_vision_gelu_follows_the_config() {
    let f = fixture();
    let cfg = ClipVisionConfig {
        hidden_act: "gelu".into(),
        ..f.clip_config()
    };
    let w = Weights::load(
        &f.dir.join("clip_vision/model.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let model = ClipVision::from_weights(cfg, &w).unwrap();
    let out = model.embed(&f.images("clip336")).unwrap();
    let err = rel_err(&out, f.tensor("clip_embeds_gelu"));
    eprintln!("CLIP vision (gelu) relative error: {err:.3e}");
    assert!(err <= TOL, "CLIP vision (gelu) relative error {err}");
    // The two activations give measurably different embeddings (the test can tell them apart).
    assert!(rel_err(f.tensor("clip_embeds"), f.tensor("clip_embeds_gelu")) > 10.0 * TOL);
}

#[test]
fn clip_vision_loads_a_vision_only_folder() {
    // What `CLIPVisionModelWithProjection.save_pretrained` writes: a CLIPVisionConfig and no
    // text tower.
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = serde_json::to_value(f.clip_config()).unwrap();
    cfg["model_type"] = "clip_vision_model".into();
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    rewrite(
        &f.dir.join("clip_vision/model.safetensors"),
        &tmp.path().join("model.safetensors"),
        |t| t.retain(|k, _| k.starts_with("vision_model.") || k.starts_with("visual_projection.")),
    );
    let model = ClipVision::from_dir(tmp.path(), &Device::Cpu).unwrap();
    let out = model.embed(&f.images("clip336")).unwrap();
    assert!(rel_err(&out, f.tensor("clip_embeds")) <= TOL);
}

#[test]
fn clip_vision_reports_missing_and_unexpected_tensors() {
    let f = fixture();
    let src = f.dir.join("clip_vision");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let file = tmp.path().join("model.safetensors");

    rewrite(&src.join("model.safetensors"), &file, |t| {
        t.remove("vision_model.post_layernorm.weight").unwrap();
    });
    let e = err_text(ClipVision::from_dir(tmp.path(), &Device::Cpu));
    assert!(e.contains("`vision_model.post_layernorm.weight`"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");

    rewrite(&src.join("model.safetensors"), &file, |t| {
        let extra = t["visual_projection.weight"].clone();
        t.insert("vision_model.head.weight".into(), extra);
    });
    let e = err_text(ClipVision::from_dir(tmp.path(), &Device::Cpu));
    assert!(e.contains("`vision_model.head.weight`"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");

    // A layer more in the file than in config.json is unexpected, not silently dropped.
    let extra_layer = format!(
        "vision_model.encoder.layers.{}.mlp.fc1.weight",
        f.clip_config().num_hidden_layers
    );
    rewrite(&src.join("model.safetensors"), &file, |t| {
        let extra = t["vision_model.encoder.layers.0.mlp.fc1.weight"].clone();
        t.insert(extra_layer.clone(), extra);
    });
    let e = err_text(ClipVision::from_dir(tmp.path(), &Device::Cpu));
    assert!(e.contains(&format!("`{extra_layer}`")), "{e}");

    // Wrong image size: an error, not a silent interpolation.
    let model = ClipVision::from_dir(&src, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 224, 224), DType::F32, &Device::Cpu).unwrap();
    let e = err_text(model.embed(&x));
    assert!(e.contains("336"), "{e}");
}

#[test]
fn clip_vision_config_reads_both_layouts() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    // A full CLIPConfig whose vision_config lacks projection_dim takes the top-level one.
    std::fs::write(
        &path,
        r#"{"model_type": "clip", "projection_dim": 768,
            "vision_config": {"hidden_size": 1024, "intermediate_size": 4096,
              "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336,
              "patch_size": 14}}"#,
    )
    .unwrap();
    let cfg = ClipVisionConfig::from_file(&path).unwrap();
    assert_eq!(cfg, ClipVisionConfig::vit_large_patch14_336());
    // The committed fixture is a full CLIPConfig.
    let cfg = ClipVisionConfig::from_file(&f.dir.join("clip_vision/config.json")).unwrap();
    assert_eq!(cfg, f.clip_config());
    // Unsupported activation: an error naming the file.
    std::fs::write(&path, r#"{"hidden_act": "gelu_new"}"#).unwrap();
    let e = err_text(ClipVisionConfig::from_file(&path));
    assert!(e.contains("gelu_new") && e.contains("config.json"), "{e}");
}

#[test]
fn clip_vision_random_folder_round_trips() {
    let cfg = ClipVisionConfig {
        hidden_size: 64,
        intermediate_size: 128,
        projection_dim: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        image_size: 28,
        patch_size: 14,
        ..ClipVisionConfig::vit_large_patch14_336()
    };
    let tmp = tempfile::tempdir().unwrap();
    ClipVision::write_random(tmp.path(), &cfg, 7).unwrap();
    let loaded = ClipVision::from_dir(tmp.path(), &Device::Cpu).unwrap();
    let fresh = ClipVision::random_weights(cfg, 7).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 28, 28), &Device::Cpu).unwrap();
    let (a, b) = (loaded.embed(&x).unwrap(), fresh.embed(&x).unwrap());
    assert_eq!(rel_err(&a, &b), 0.0);
}

// ---------------------------------------------------------------- CSD

fn csd_config(f: &Fixture) -> CsdConfig {
    let c = &f.json["csd"]["config"];
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    CsdConfig {
        image_size: u("image_size"),
        patch_size: u("patch_size"),
        width: u("width"),
        layers: u("layers"),
        mlp_width: 4 * u("width"),
        style_dim: u("style_dim"),
    }
}

fn check_csd(f: &Fixture, model: &Csd, what: &str) {
    assert_eq!(model.config(), &csd_config(f), "{what}");
    assert_eq!(model.image_size(), 224);
    let x = f.images("csd224");
    let feat = model.features(&x).unwrap();
    let err_f = rel_err(&feat, f.tensor("csd_feature"));
    let out = model.embed(&x).unwrap();
    let err = rel_err(&out, f.tensor("csd_style"));
    eprintln!("CSD ({what}): style relative error {err:.3e}, backbone feature {err_f:.3e}");
    assert!(err_f <= TOL, "CSD ({what}) feature relative error {err_f}");
    assert!(err <= TOL, "CSD ({what}) style relative error {err}");
}

#[test]
fn csd_pth_matches_reference() {
    let f = fixture();
    let model = Csd::load(&f.dir.join("csd/checkpoint.pth"), &Device::Cpu).unwrap();
    check_csd(&f, &model, "authors' .pth layout");
    assert_eq!(model.config().heads(), model.config().width / 64);
}

#[test]
fn csd_safetensors_matches_reference() {
    let f = fixture();
    let file = f.dir.join("csd/model.safetensors");
    let model = Csd::load(&file, &Device::Cpu).unwrap();
    check_csd(&f, &model, "safetensors, module. prefix");
    // The Hugging Face copy's naming: no `module.`.
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("model.safetensors");
    rewrite(&file, &hub, |t| {
        *t = t
            .drain()
            .map(|(k, v)| (k.strip_prefix("module.").unwrap().to_string(), v))
            .collect();
    });
    let model = Csd::load(&hub, &Device::Cpu).unwrap();
    check_csd(&f, &model, "safetensors, hub naming");
}

#[test]
fn csd_reports_missing_and_unexpected_tensors() {
    let f = fixture();
    let src = f.dir.join("csd/model.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("csd.safetensors");

    rewrite(&src, &file, |t| {
        t.remove("module.backbone.ln_post.bias").unwrap();
    });
    let e = err_text(Csd::load(&file, &Device::Cpu));
    assert!(e.contains("`module.backbone.ln_post.bias`"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");

    // CLIP's projection left in the backbone is not CSD's layout.
    rewrite(&src, &file, |t| {
        let proj = t["module.last_layer_style"].clone();
        t.insert("module.backbone.proj".into(), proj);
    });
    let e = err_text(Csd::load(&file, &Device::Cpu));
    assert!(e.contains("`module.backbone.proj`"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");

    // Without the style head there is no descriptor.
    rewrite(&src, &file, |t| {
        t.remove("module.last_layer_style").unwrap();
    });
    let e = err_text(Csd::load(&file, &Device::Cpu));
    assert!(e.contains("`module.last_layer_style`"), "{e}");

    // The unused content head is optional.
    rewrite(&src, &file, |t| {
        t.remove("module.last_layer_content").unwrap();
    });
    Csd::load(&file, &Device::Cpu).unwrap();
}

#[test]
fn csd_random_file_round_trips() {
    let cfg = CsdConfig {
        image_size: 28,
        patch_size: 14,
        width: 128,
        layers: 2,
        mlp_width: 512,
        style_dim: 8,
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("csd.safetensors");
    Csd::write_random(&file, &cfg, 3).unwrap();
    let loaded = Csd::load(&file, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), &cfg);
    assert_eq!(cfg.heads(), 2);
    let fresh = Csd::random_weights(cfg, 3).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 28, 28), &Device::Cpu).unwrap();
    assert_eq!(
        rel_err(&loaded.embed(&x).unwrap(), &fresh.embed(&x).unwrap()),
        0.0
    );
}

// ---------------------------------------------------------------- throughput

/// CPU time of this process, all threads (user + system, from `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Full-size random models, images per second at the thread count of `RAYON_NUM_THREADS`
/// (default: the physical cores). `NSYNC_BENCH_BATCH` (default 4) images per call,
/// `NSYNC_BENCH_REPS` (default 2) timed calls after a warm-up. Also prints CPU seconds per
/// image, which other load on the machine disturbs less than wall-clock time.
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_full_size_throughput() {
    let batch: usize = std::env::var("NSYNC_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let reps: usize = std::env::var("NSYNC_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let time = |name: &str, size: usize, embed: &dyn Fn(&Tensor) -> Tensor| {
        let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &Device::Cpu).unwrap();
        embed(&x); // warm-up
        let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
        for _ in 0..reps {
            embed(&x);
        }
        let s = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        let n = (batch * reps) as f64;
        println!(
            "{{\"model\": \"{name}\", \"batch\": {batch}, \"threads\": {}, \"images_per_s\": {:.4}, \"cpu_s_per_image\": {:.2}}}",
            candle_core::utils::get_num_threads(),
            n / s,
            cpu / n
        );
    };
    let clip = ClipVision::random_weights(ClipVisionConfig::vit_large_patch14_336(), 0).unwrap();
    time("clip-vit-l14-336", 336, &|x| clip.embed(x).unwrap());
    drop(clip);
    let csd = Csd::random_weights(CsdConfig::vit_large_patch14(), 0).unwrap();
    time("csd-vit-l14-224", 224, &|x| csd.embed(x).unwrap());
}
