//! The contrastive training loop on the tiny SD 1.x fixture model: determinism, bit-identical
//! resume after an interruption, frozen embedding rows untouched, every variant runs.

use std::path::PathBuf;

use candle_core::{DType, Device};
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::training::dataset::Example;
use nsync_nodes::training::trainer::{StyleConfig, TrainConfig, TrainState, Trainer};
use nsync_nodes::training::{Adam, Adapter, Compat, LrSchedule, Variant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<Example> {
    let dir = repo().join("pipelines/data/monet/train");
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

fn setup(
    sd: &mut StableDiffusion,
    variant: Variant,
    compat: Compat,
    steps: usize,
) -> (TrainConfig, TrainState) {
    let id = sd.tokenizer.add_token("<monet>").unwrap();
    let init = sd
        .text_encoder
        .token_embedding
        .get(320)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let cfg = TrainConfig {
        variant,
        compat,
        steps,
        batch: 2,
        lr: 5e-3,
        schedule: LrSchedule::Constant,
        flip: true,
        table_decay: if compat == Compat::ReferenceCode {
            0.01
        } else {
            0.0
        },
        styles: vec![StyleConfig {
            name: "monet".into(),
            token_ids: vec![id],
            positive_template: "{caption} in the style of <monet>".into(),
            negative_template: variant.negative_caption("{caption}", "<monet>"),
            seed: 7,
        }],
        adapter: Adapter::Embedding,
    };
    let state = TrainState {
        step: 0,
        params: init,
        optimizer: if compat == Compat::ReferenceCode {
            Adam::adamw()
        } else {
            Adam::adam()
        },
        frozen_scale: 1.0,
        curves: Vec::new(),
    };
    (cfg, state)
}

fn train(
    variant: Variant,
    compat: Compat,
    steps: usize,
) -> (TrainState, candle_core::Tensor, candle_core::Tensor) {
    let mut sd = model();
    let before = sd.text_encoder.token_embedding.clone();
    let ex = examples();
    let (cfg, state) = setup(&mut sd, variant, compat, steps);
    let mut t = Trainer::new(&mut sd, &ex, cfg).unwrap();
    let done = t.run(state, 0, &mut |_| Ok(()), &|_| {}).unwrap();
    let after = sd.text_encoder.token_embedding.clone();
    (done, before, after)
}

#[test]
fn deterministic_and_frozen_rows_unchanged() {
    let (a, before, after) = train(Variant::Ctoa, Compat::Paper, 4);
    let (b, _, _) = train(Variant::Ctoa, Compat::Paper, 4);
    assert_eq!(a.params, b.params, "same seed, same bytes");
    assert_eq!(a.curves, b.curves);
    assert_eq!(a.curves.len(), 4);
    let init = before.get(320).unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(a.params, init, "the token moved");
    let diff = (before - after)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "frozen rows exactly unchanged");
}

#[test]
fn resuming_from_a_checkpoint_continues_bit_for_bit() {
    let (straight, _, _) = train(Variant::Ctoa, Compat::Paper, 6);
    // Interrupted right after the checkpoint at step 3 …
    let mut sd = model();
    let ex = examples();
    let (cfg, state) = setup(&mut sd, Variant::Ctoa, Compat::Paper, 6);
    let mut saved: Option<Vec<u8>> = None;
    let mut t = Trainer::new(&mut sd, &ex, cfg).unwrap();
    let interrupted = t.run(
        state,
        3,
        &mut |s| {
            saved = Some(serde_json::to_vec(s).unwrap());
            Err(nsync_nodes::diffusion::SdError::Input("killed".into()))
        },
        &|_| {},
    );
    assert!(interrupted.is_err());
    // … and resumed in a fresh process-like setup from the saved bytes.
    let mut sd = model();
    let (cfg, _) = setup(&mut sd, Variant::Ctoa, Compat::Paper, 6);
    let resumed: TrainState = serde_json::from_slice(&saved.unwrap()).unwrap();
    assert_eq!(resumed.step, 3);
    let mut t = Trainer::new(&mut sd, &ex, cfg).unwrap();
    let done = t.run(resumed, 3, &mut |_| Ok(()), &|_| {}).unwrap();
    assert_eq!(done.params, straight.params);
    assert_eq!(done.optimizer, straight.optimizer);
    assert_eq!(done.curves, straight.curves);
}

#[test]
fn every_variant_trains_and_reference_mode_decays_the_table() {
    for v in Variant::ALL {
        let (s, _, _) = train(v, Compat::Paper, 1);
        assert!(s.params.iter().all(|x| x.is_finite()), "{v}");
        assert_eq!(s.curves.len(), 1);
        let c: serde_json::Value = serde_json::from_str(&s.curves[0]).unwrap();
        assert_eq!(c["loss_neg"].is_number(), v.needs_negative(), "{v}: {c}");
        assert_eq!(c["loss_anc"].is_number(), v.needs_anchor(), "{v}: {c}");
    }
    let (s, before, after) = train(Variant::Ctoa, Compat::ReferenceCode, 2);
    assert!(s.frozen_scale < 1.0);
    let ratio = (after.sum_all().unwrap().to_scalar::<f32>().unwrap())
        / before.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        ratio < 1.0 && ratio > 0.99,
        "the whole table shrinks by AdamW's decay: {ratio}"
    );
}
