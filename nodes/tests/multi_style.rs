//! Several styles in one `contrastive_train` run (the paper's Monet + Van Gogh experiment) on
//! the tiny SD 1.x fixture model, configured exactly as the node configures it
//! ([`prepare`] with `styles`): both tokens learn, frozen rows stay untouched, each style's
//! rows evolve bit for bit as in a run of that style alone (its own draws, its own
//! projection), runs are deterministic, and an interrupted run resumes bit for bit.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::training::contrastive_train::{prepare, TrainParams};
use nsync_nodes::training::dataset::Example;
use nsync_nodes::training::trainer::{TrainConfig, TrainState, Trainer};
use nsync_nodes::training::Adapter;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first three training paintings of `style` at 64 px, short captions, and a mirrored
/// copy standing in for each negative.
fn examples(style: &str) -> Vec<Example> {
    let dir = repo().join("pipelines/data").join(style).join("train");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    names.sort();
    names
        .iter()
        .take(3)
        .map(|p| {
            let img = image::open(p).unwrap().to_rgb8();
            let small =
                image::imageops::resize(&img, 64, 64, image::imageops::FilterType::CatmullRom);
            Example {
                id: p.file_stem().unwrap().to_string_lossy().into_owned(),
                caption: std::fs::read_to_string(p.with_extension("txt"))
                    .unwrap()
                    .split_whitespace()
                    .take(12)
                    .collect::<Vec<_>>()
                    .join(" "),
                negative: Some(image::imageops::flip_vertical(&small)),
                image: small,
            }
        })
        .collect()
}

fn model() -> StableDiffusion {
    StableDiffusion::from_dir(
        &repo().join("tests/fixtures/sd/sd15/model"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn params(steps: usize) -> TrainParams {
    let mut p: TrainParams = serde_json::from_value(serde_json::json!({
        "styles": [
            {"token": "<monet>"},
            {"token": "<vangogh>", "initializer": "art", "num_vectors": 2}
        ],
        "variant": "ctoa",
        "steps": steps,
        "batch_size": 1,
        "lr": 0.005,
        "resolution": 64
    }))
    .unwrap();
    p.validate().unwrap();
    p
}

const SEED: u64 = 11;

/// Train both styles from scratch; also returns the token table before and after.
fn train(steps: usize) -> (TrainState, TrainConfig, Tensor, Tensor) {
    let (monet, vangogh) = (examples("monet"), examples("vangogh"));
    let mut sd = model();
    let before = sd.text_encoder.token_embedding.clone();
    let (cfg, state) = prepare(&params(steps), &mut sd, SEED).unwrap();
    let kept = cfg.clone();
    let mut t = Trainer::with_styles(&mut sd, vec![&monet, &vangogh], cfg).unwrap();
    let done = t.run(state, 0, &mut |_| Ok(()), &|_| {}).unwrap();
    let after = sd.text_encoder.token_embedding.clone();
    (done, kept, before, after)
}

fn row(sd: &StableDiffusion, word: &str) -> Vec<f32> {
    let id = sd.tokenizer.encode(word).unwrap()[1];
    sd.text_encoder
        .token_embedding
        .get(id as usize)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn both_tokens_learn_each_as_if_trained_alone() {
    let steps = 3;
    let (done, cfg, before, after) = train(steps);
    let hidden = 32;
    assert_eq!(
        done.params.len(),
        3 * hidden,
        "<monet> + 2 vectors of <vangogh>"
    );
    assert_eq!(cfg.styles[0].name, "monet");
    assert_eq!(cfg.styles[1].name, "vangogh");
    assert_ne!(
        cfg.styles[0].seed, cfg.styles[1].seed,
        "each style draws its own"
    );
    assert_eq!(
        cfg.styles[1].positive_template,
        "{caption} in the style of <vangogh> <vangogh>_1"
    );

    // Both tokens moved away from their initializers; the frozen table did not move.
    let sd = model();
    let (painting, art) = (row(&sd, "painting"), row(&sd, "art"));
    assert_ne!(done.params[..hidden], painting[..]);
    assert_ne!(done.params[hidden..2 * hidden], art[..]);
    assert_ne!(done.params[2 * hidden..], art[..]);
    let diff = (before - after)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "frozen rows exactly unchanged");

    // Curves: one line per step and style, named.
    assert_eq!(done.curves.len(), 2 * steps);
    let c: Vec<serde_json::Value> = done
        .curves
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(c[0]["style"], "monet");
    assert_eq!(c[1]["style"], "vangogh");
    assert_eq!(c[5]["step"], 3);
    assert!(c
        .iter()
        .all(|p| p["cos_pos_neg"].is_number() && p["g_pos_norm"].as_f64().unwrap() > 0.0));

    // Each style alone, with its own seed and examples: the very same rows and curves.
    for (s, (range, ex)) in [
        (0..hidden, examples("monet")),
        (hidden..3 * hidden, examples("vangogh")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sd = model();
        let mut alone = cfg.clone();
        let style = alone.styles[s].clone();
        let mut ids = Vec::new();
        for (i, _) in style.token_ids.iter().enumerate() {
            let name = if i == 0 {
                format!("<{}>", style.name)
            } else {
                format!("<{}>_{i}", style.name)
            };
            ids.push(sd.tokenizer.add_token(&name).unwrap());
        }
        alone.styles = vec![nsync_nodes::training::trainer::StyleConfig {
            token_ids: ids,
            ..style
        }];
        assert!(matches!(alone.adapter, Adapter::Embedding));
        let fresh = TrainState {
            step: 0,
            params: {
                let mut sd0 = model();
                let (_, st) = prepare(&params(steps), &mut sd0, SEED).unwrap();
                st.params[range.clone()].to_vec()
            },
            optimizer: nsync_nodes::training::Adam::adam(),
            frozen_scale: 1.0,
            curves: Vec::new(),
        };
        let mut t = Trainer::new(&mut sd, &ex, alone).unwrap();
        let single = t.run(fresh, 0, &mut |_| Ok(()), &|_| {}).unwrap();
        assert_eq!(
            single.params,
            done.params[range.clone()],
            "style {s}: trained with the other style, bit for bit as alone"
        );
        for k in 0..steps {
            let mut multi: serde_json::Value =
                serde_json::from_str(&done.curves[2 * k + s]).unwrap();
            multi.as_object_mut().unwrap().remove("style");
            let one: serde_json::Value = serde_json::from_str(&single.curves[k]).unwrap();
            assert_eq!(multi, one, "style {s}, step {}", k + 1);
        }
    }
}

#[test]
fn deterministic_and_resumes_bit_for_bit() {
    let steps = 3;
    let (a, _, _, _) = train(steps);
    let (b, _, _, _) = train(steps);
    assert_eq!(a.params, b.params, "same seed, same bytes");
    assert_eq!(a.curves, b.curves);

    // Interrupted right after the checkpoint at step 2, resumed from the saved bytes.
    let (monet, vangogh) = (examples("monet"), examples("vangogh"));
    let mut sd = model();
    let (cfg, state) = prepare(&params(steps), &mut sd, SEED).unwrap();
    let mut saved: Option<Vec<u8>> = None;
    let mut t = Trainer::with_styles(&mut sd, vec![&monet, &vangogh], cfg).unwrap();
    let interrupted = t.run(
        state,
        2,
        &mut |s| {
            saved = Some(serde_json::to_vec(s).unwrap());
            Err(nsync_nodes::diffusion::SdError::Input("killed".into()))
        },
        &|_| {},
    );
    assert!(interrupted.is_err());
    let mut sd = model();
    let (cfg, _) = prepare(&params(steps), &mut sd, SEED).unwrap();
    let resumed: TrainState = serde_json::from_slice(&saved.unwrap()).unwrap();
    assert_eq!(resumed.step, 2);
    let mut t = Trainer::with_styles(&mut sd, vec![&monet, &vangogh], cfg).unwrap();
    let done = t.run(resumed, 2, &mut |_| Ok(()), &|_| {}).unwrap();
    assert_eq!(done.params, a.params);
    assert_eq!(done.optimizer, a.optimizer);
    assert_eq!(done.curves, a.curves);
}

/// The embedding file of a multi-style run (diffusers' layout, one tensor per token) loads
/// into a model, and a prompt can use both tokens.
#[test]
fn the_embedding_file_holds_every_token_and_samples_with_both() {
    let (done, _, _, _) = train(1);
    let hidden = 32;
    let tensors = std::collections::HashMap::from([
        (
            "<monet>".to_string(),
            Tensor::from_vec(done.params[..hidden].to_vec(), (1, hidden), &Device::Cpu).unwrap(),
        ),
        (
            "<vangogh>".to_string(),
            Tensor::from_vec(done.params[hidden..].to_vec(), (2, hidden), &Device::Cpu).unwrap(),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("learned_embeds.safetensors");
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let mut sd = model();
    let mut added = sd.load_embeddings(&file).unwrap();
    added.sort();
    assert_eq!(added, ["<monet>", "<vangogh>"]);
    let both = sd
        .encode_prompts(&["a bridge in the style of <monet> and <vangogh>"])
        .unwrap();
    let monet_only = sd
        .encode_prompts(&["a bridge in the style of <monet>"])
        .unwrap();
    assert_eq!(both.dims(), [1, 77, 32]);
    let ids = sd
        .token_ids("a bridge in the style of <monet> and <vangogh>")
        .unwrap();
    let v1 = sd.tokenizer.token_to_id("<vangogh>_1").unwrap();
    assert!(ids.contains(&v1), "the two-vector token expands");
    let d = (both - monet_only)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 0.0);
}
