//! The Stable Diffusion stages through the binary: tiny models, the demo's negative images,
//! determinism.

use super::util::*;

#[test]
fn init_tiny_writes_a_model_and_never_overwrites_one() {
    let p = Project::empty();
    let out = p.nsync(&["model", "init-tiny", "m", "--seed", "3", "--variant", "sd2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ] {
        assert!(p.path("m").join(f).is_file(), "{f}");
    }
    let again = p.nsync(&["model", "init-tiny", "m"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already holds a model"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn negative_images_are_deterministic_whatever_the_batch() {
    let a = Project::demo();
    a.run_ok("pipelines/demo.toml");
    let b = Project::demo();
    let demo = std::fs::read_to_string(b.path("pipelines/demo.toml")).unwrap();
    b.write(
        "pipelines/demo.toml",
        &demo.replace("batch_size = 4", "batch_size = 3"),
    );
    let s = b.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "negatives"), ("executed".into(), 8, 0));
    for (proj, dir) in [(&a, "out"), (&b, "out")] {
        let out = proj.nsync(&["export", "pipelines/demo.toml", "negatives", "--to", dir]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (ta, tb) = (read_tree(&a.path("out")), read_tree(&b.path("out")));
    assert_eq!(ta.len(), 9, "8 images and a manifest");
    assert_eq!(ta, tb, "same bytes with batches of 4 and of 3");
    let img = image::open(a.path("out/000c1e3bff.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    // batch_size is not part of the key: changing it reuses every image.
    a.write(
        "pipelines/demo.toml",
        &demo.replace("batch_size = 4", "batch_size = 2"),
    );
    assert_eq!(
        node(&a.run_ok("pipelines/demo.toml"), "negatives").0,
        "cached"
    );
    // A new seed changes every image.
    a.write(
        "pipelines/demo.toml",
        &demo.replace("name = \"demo\"", "name = \"demo\"\nseed = 1"),
    );
    assert_eq!(
        node(&a.run_ok("pipelines/demo.toml"), "negatives"),
        ("executed".into(), 8, 0)
    );
}

#[test]
fn sd_sample_needs_exactly_one_model() {
    let p = Project::demo();
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &demo.replace(
            "inputs = { prompts = \"negative_prompts\", model = \"tiny_model\" }",
            "inputs = { prompts = \"negative_prompts\" }",
        ),
    );
    let out = p.nsync(&["check", "pipelines/demo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sd_sample needs a model"),
        "{}",
        text(&out.stderr)
    );
    p.write(
        "pipelines/demo.toml",
        &demo.replace("steps = 10", "steps = 10\nmodel = \"sd15\""),
    );
    let out = p.nsync(&["check", "pipelines/demo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not both"),
        "{}",
        text(&out.stderr)
    );
}

/// `nsync sample` with diffusers' initial latents reproduces diffusers' image: every pixel
/// equals round(255 · reference).
#[test]
fn sample_command_reproduces_diffusers() {
    let p = Project::empty();
    for variant in ["sd15", "sd2"] {
        let fx = repo().join("tests/fixtures/sd").join(variant);
        let out = p.path(&format!("{variant}.png"));
        let run = p.nsync(&[
            "sample",
            "--model",
            fx.join("model").to_str().unwrap(),
            "--prompt",
            "a harbour at dawn in the style of painting",
            "--negative-prompt",
            "blurry",
            "--steps",
            "5",
            "--guidance",
            "7.5",
            "--size",
            "64x64",
            "--init-latents",
            fx.join("init_latents.safetensors").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let reference = candle_core::safetensors::load(
            fx.join("fixtures.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let want: Vec<f32> = reference["sample_image"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = image::open(&out).unwrap().to_rgb8().into_raw();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (*g as f32 / 255.0 - w).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 2e-3 + 0.5 / 255.0,
            "{variant}: worst pixel error {worst}"
        );
    }
    let bad = p.nsync(&[
        "sample", "--model", "nowhere", "--prompt", "x", "--out", "x.png",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("model_index.json") && text(&bad.stderr).contains("init-tiny"),
        "{}",
        text(&bad.stderr)
    );
}

/// Editing only the trainer's learning rate retrains and regenerates, and reuses every
/// cached caption, negative prompt and negative image.
#[test]
fn changing_the_learning_rate_retrains_but_reuses_negatives() {
    let p = Project::demo();
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "style"), ("executed".into(), 1, 0));
    assert_eq!(node(&s, "generated"), ("executed".into(), 3, 0));
    let out = p.nsync(&["export", "pipelines/demo.toml", "style", "--to", "style"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let curves = std::fs::read_to_string(p.path("style/curves/curves.jsonl")).unwrap();
    assert_eq!(curves.lines().count(), 10);
    let first: serde_json::Value = serde_json::from_str(curves.lines().next().unwrap()).unwrap();
    assert!(
        first["g_pos_norm"].as_f64().unwrap() > 0.0,
        "a gradient reaches the token: {first}"
    );
    assert!(
        first["cos_pos_neg"].is_number() && first["loss_anc"].is_number(),
        "{first}"
    );
    let emb = candle_core::safetensors::load(
        p.path("style/embedding/embedding.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        emb["<monet>"].dims(),
        &[1, 32],
        "diffusers' learned_embeds layout"
    );
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &demo.replace("lr = 0.005", "lr = 0.002"),
    );
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "style"), ("executed".into(), 1, 0), "{s}");
    assert_eq!(node(&s, "generated"), ("executed".into(), 3, 0), "{s}");
    for n in [
        "paintings",
        "captions",
        "negative_prompts",
        "negatives",
        "tiny_model",
        "test_prompts",
    ] {
        assert_eq!(node(&s, n).0, "cached", "{n}: {s}");
    }
    let out = p.nsync(&["explain", "pipelines/demo.toml", "style"]);
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
}
