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

/// The Van Gogh half of a two-style pipeline on top of the demo (paintings, captions,
/// negatives made by the demo's tiny model).
const VANGOGH_NODES: &str = r#"
[nodes.vangogh_paintings]
kind = "images"
path = "data/vangogh/train"

[nodes.vangogh_captions]
kind = "captions"
inputs = { images = "vangogh_paintings" }
dir = "data/vangogh/train"

[nodes.vangogh_negative_prompts]
kind = "prompt_template"
inputs = { caption = "vangogh_captions" }
template = "{caption} in the style of painting"

[nodes.vangogh_negatives]
kind = "sd_sample"
inputs = { prompts = "vangogh_negative_prompts", model = "tiny_model" }
steps = 10
batch_size = 4
"#;

const TWO_STYLES: &str = r#"
[nodes.styles]
kind = "contrastive_train"
inputs = { images_monet = "paintings", captions_monet = "captions", negatives_monet = "negatives", images_vangogh = "vangogh_paintings", captions_vangogh = "vangogh_captions", negatives_vangogh = "vangogh_negatives", model = "tiny_model" }
styles = [{ token = "<monet>" }, { token = "<vangogh>", num_vectors = 2 }]
steps = 3
batch_size = 1
lr = 0.005
resolution = 64
checkpoint_every = 2

[nodes.both_prompts]
kind = "prompt_template"
inputs = { caption = "test_captions" }
template = "{caption} in the style of <monet> and <vangogh>"

[nodes.generated_both]
kind = "sd_sample"
inputs = { prompts = "both_prompts", model = "tiny_model", embedding = "styles" }
steps = 10
"#;

/// Two styles (Monet and Van Gogh, each with its own paintings, captions and negatives)
/// learned by one `contrastive_train` node: one embedding file with both tokens in diffusers'
/// layout, curves per style, prompts using both tokens in `sd_sample` and `nsync sample`;
/// wiring mistakes are reported at the port.
#[test]
fn two_styles_train_in_one_node_and_sample_together() {
    let p = Project::demo();
    let file = format!(
        "extends = \"demo.toml\"\n[pipeline]\nname = \"two_styles\"\n{VANGOGH_NODES}{TWO_STYLES}"
    );
    p.write("pipelines/two.toml", &file);
    let s = p.run_json("pipelines/two.toml", &["--until", "generated_both"], 0);
    assert_eq!(node(&s, "styles"), ("executed".into(), 1, 0), "{s}");
    assert_eq!(node(&s, "generated_both"), ("executed".into(), 3, 0), "{s}");
    let out = p.nsync(&["export", "pipelines/two.toml", "styles", "--to", "styles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let emb_path = p.path("styles/embedding/embedding.safetensors");
    let emb = candle_core::safetensors::load(&emb_path, &candle_core::Device::Cpu).unwrap();
    assert_eq!(emb.len(), 2);
    assert_eq!(emb["<monet>"].dims(), &[1, 32]);
    assert_eq!(emb["<vangogh>"].dims(), &[2, 32]);
    let curves = std::fs::read_to_string(p.path("styles/curves/curves.jsonl")).unwrap();
    let styles: Vec<String> = curves
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["style"].to_string())
        .collect();
    assert_eq!(
        styles,
        [
            "\"monet\"",
            "\"vangogh\"",
            "\"monet\"",
            "\"vangogh\"",
            "\"monet\"",
            "\"vangogh\""
        ]
    );
    // A rerun finds it all cached.
    let s = p.run_json("pipelines/two.toml", &["--until", "generated_both"], 0);
    assert_eq!(node(&s, "styles").0, "cached");

    // The file outside the pipeline: both tokens in one prompt.
    let model = repo().join("tests/fixtures/sd/sd15/model");
    let run = p.nsync(&[
        "sample",
        "--model",
        model.to_str().unwrap(),
        "--embedding",
        emb_path.to_str().unwrap(),
        "--prompt",
        "a bridge in the style of <monet> and <vangogh>",
        "--steps",
        "2",
        "--size",
        "64x64",
        "--out",
        p.path("both.png").to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("<monet>, <vangogh>"),
        "{}",
        text(&run.stderr)
    );

    // A style without its negatives, and a misspelt port.
    p.write(
        "pipelines/two.toml",
        &file.replace(" negatives_vangogh = \"vangogh_negatives\",", ""),
    );
    let out = p.nsync(&["check", "pipelines/two.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("needs `inputs.negatives_vangogh`"),
        "{}",
        text(&out.stderr)
    );
    p.write(
        "pipelines/two.toml",
        &file.replace("images_vangogh =", "images_vangoh ="),
    );
    let out = p.nsync(&["check", "pipelines/two.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("has no input `images_vangoh`") && err.contains("images_vangogh"),
        "{err}"
    );
}

const LORA_NODES: &str = r#"
[nodes.lora_style]
kind = "contrastive_train"
inputs = { images = "paintings", captions = "captions", negatives = "negatives", model = "tiny_model" }
token = "sks"
adapter = "lora"
lora = { rank = 2, targets = ["to_q", "to_k", "to_v", "to_out.0"] }
steps = 3
batch_size = 1
lr = 0.01
resolution = 64

[nodes.lora_prompts]
kind = "prompt_template"
inputs = { caption = "test_captions" }
template = "{caption} in the style of sks"

[nodes.generated_lora]
kind = "sd_sample"
inputs = { prompts = "lora_prompts", model = "tiny_model", lora = "lora_style" }
steps = 10

[nodes.generated_plain]
kind = "sd_sample"
inputs = { prompts = "lora_prompts", model = "tiny_model" }
steps = 10
"#;

/// `adapter = "lora"`: the node writes LoRA weights in diffusers' layout, `sd_sample` takes
/// them on its `lora` input (and changes the images), `nsync sample --lora` too; a LoRA
/// cannot feed an `embedding` input.
#[test]
fn lora_training_feeds_sd_sample_and_the_sample_command() {
    let p = Project::demo();
    let file = format!("extends = \"demo.toml\"\n[pipeline]\nname = \"lora\"\n{LORA_NODES}");
    p.write("pipelines/lora.toml", &file);
    let s = p.run_json("pipelines/lora.toml", &["--until", "generated_lora"], 0);
    assert_eq!(node(&s, "lora_style"), ("executed".into(), 1, 0), "{s}");
    assert_eq!(node(&s, "generated_lora"), ("executed".into(), 3, 0), "{s}");
    p.run_json("pipelines/lora.toml", &["--until", "generated_plain"], 0);
    for n in ["lora_style", "generated_lora", "generated_plain"] {
        let out = p.nsync(&["export", "pipelines/lora.toml", n, "--to", n]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let lora = candle_core::safetensors::load(
        p.path("lora_style/lora/lora.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(lora.len(), 2 * 32, "A and B of 32 attention projections");
    let key = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v";
    assert_eq!(lora[&format!("{key}.lora_A.weight")].dims(), &[2, 32]);
    let curves = std::fs::read_to_string(p.path("lora_style/curves/curves.jsonl")).unwrap();
    assert_eq!(curves.lines().count(), 3);
    let (with, without) = (
        read_tree(&p.path("generated_lora")),
        read_tree(&p.path("generated_plain")),
    );
    assert_eq!(with.len(), 4, "3 images and a manifest");
    let differing = with
        .iter()
        .filter(|(k, v)| k.ends_with(".png") && without[*k] != **v)
        .count();
    assert_eq!(differing, 3, "the LoRA changes every image");

    // `nsync sample --lora` with a LoRA made for the fixture model (tests/fixtures/lora).
    let model = repo().join("tests/fixtures/sd/sd15/model");
    let sample = |extra: &[&str], out: &str| {
        let mut args = vec![
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a harbour at dawn",
            "--steps",
            "2",
            "--size",
            "64x64",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        p.nsync(&args)
    };
    let fx = repo().join("tests/fixtures/lora/ours.safetensors");
    let a = sample(&["--lora", fx.to_str().unwrap()], "a.png");
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(
        text(&a.stderr).contains("LoRA weights for 32 layers"),
        "{}",
        text(&a.stderr)
    );
    let b = sample(&[], "b.png");
    assert!(b.status.success(), "{}", text(&b.stderr));
    assert_ne!(
        std::fs::read(p.path("a.png")).unwrap(),
        std::fs::read(p.path("b.png")).unwrap()
    );
    let emb = repo().join("tests/fixtures/lora/inputs.safetensors");
    let bad = sample(&["--lora", emb.to_str().unwrap()], "c.png");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("unexpected tensor"),
        "{}",
        text(&bad.stderr)
    );

    // A LoRA is not an embedding.
    p.write(
        "pipelines/lora.toml",
        &file.replace("lora = \"lora_style\" }", "embedding = \"lora_style\" }"),
    );
    let out = p.nsync(&["check", "pipelines/lora.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("type mismatch"),
        "{}",
        text(&out.stderr)
    );
}

/// The reproduction pipeline: the base's negative prompts through the committed fixture
/// model, each item starting from the latents in `latents.safetensors`.
fn init_latents_pipeline(model: &std::path::Path, init: &str) -> String {
    format!(
        r#"extends = "base.toml"
[pipeline]
name = "reproduce"
[models.fixture]
path = "{}"
[nodes.reproduced]
kind = "sd_sample"
inputs = {{ prompts = "negative_prompts" }}
model = "fixture"
steps = 5
guidance = 7.5
width = 64
height = 64
negative_prompt = "blurry"
{init}
"#,
        model.display()
    )
}

/// `init_latents` in a pipeline: each item starts from its own tensor of a safetensors file
/// and gives exactly the image of `nsync sample --init-latents` with the same latents and
/// prompts; the tensor's digest (not the path) keys the item, so editing one item's latents
/// recomputes that image alone; an item without latents is an error naming it.
#[test]
fn init_latents_reproduce_the_sample_command_in_a_pipeline() {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    let p = Project::demo();
    let fx = repo().join("tests/fixtures/sd/sd15");
    let model = fx.join("model");
    let base = candle_core::safetensors::load(fx.join("init_latents.safetensors"), &Device::Cpu)
        .unwrap()
        .remove("latents")
        .unwrap();
    let ids: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(p.path("pipelines/data/monet/train"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|e| e == "jpg"))
            .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids.len(), 8);
    let latents_of = |i: usize| (&base * (1.0 - 0.05 * i as f64)).unwrap();
    let write_latents = |path: &str, tensors: HashMap<String, Tensor>| {
        candle_core::safetensors::save(&tensors, p.path(path)).unwrap();
    };
    let all: HashMap<String, Tensor> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), latents_of(i)))
        .collect();
    write_latents("pipelines/latents.safetensors", all.clone());
    let file = init_latents_pipeline(&model, "init_latents = \"latents.safetensors\"");
    p.write("pipelines/reproduce.toml", &file);
    let s = p.run_ok("pipelines/reproduce.toml");
    assert_eq!(node(&s, "reproduced"), ("executed".into(), 8, 0), "{s}");
    for n in ["reproduced", "negative_prompts"] {
        let out = p.nsync(&["export", "pipelines/reproduce.toml", n, "--to", n]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    // The same image from the sample command, for two items.
    for i in [0, 5] {
        let id = &ids[i];
        write_latents(
            "one.safetensors",
            HashMap::from([("latents".to_string(), latents_of(i))]),
        );
        let prompt =
            std::fs::read_to_string(p.path(&format!("negative_prompts/{id}.txt"))).unwrap();
        let run = p.nsync(&[
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            &prompt,
            "--negative-prompt",
            "blurry",
            "--steps",
            "5",
            "--guidance",
            "7.5",
            "--size",
            "64x64",
            "--init-latents",
            p.path("one.safetensors").to_str().unwrap(),
            "--out",
            p.path("one.png").to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert_eq!(
            std::fs::read(p.path("one.png")).unwrap(),
            std::fs::read(p.path(&format!("reproduced/{id}.png"))).unwrap(),
            "item {id}: the pipeline's image is the sample command's"
        );
    }

    // Without the latents the items start from seeded noise: other images, other keys.
    p.write(
        "pipelines/seeded.toml",
        &init_latents_pipeline(&model, "").replace("\"reproduce\"", "\"seeded\""),
    );
    let s = p.run_ok("pipelines/seeded.toml");
    assert_eq!(node(&s, "reproduced"), ("executed".into(), 8, 0), "{s}");
    let out = p.nsync(&[
        "export",
        "pipelines/seeded.toml",
        "reproduced",
        "--to",
        "seeded",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(
        std::fs::read(p.path(&format!("seeded/{}.png", ids[0]))).unwrap(),
        std::fs::read(p.path(&format!("reproduced/{}.png", ids[0]))).unwrap()
    );

    // The path is not in the key; one item's new latents recompute that item only.
    let mut edited = all.clone();
    edited.insert(ids[3].clone(), latents_of(7));
    write_latents("pipelines/moved.safetensors", edited);
    p.write(
        "pipelines/reproduce.toml",
        &file.replace("latents.safetensors", "moved.safetensors"),
    );
    let s = p.run_ok("pipelines/reproduce.toml");
    assert_eq!(node(&s, "reproduced"), ("executed".into(), 1, 7), "{s}");

    // An item without latents is an error naming it.
    let mut partial = all;
    partial.remove(&ids[2]);
    write_latents("pipelines/moved.safetensors", partial);
    let out = p.nsync(&["run", "pipelines/reproduce.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("no initial latents for 1 item(s)") && err.contains(&ids[2]),
        "{err}"
    );
}
