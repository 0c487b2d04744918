//! Full training steps against a PyTorch re-implementation of `shared/docs/method.md`: the
//! real trainer (the `contrastive_train` node's configuration from [`prepare`], then
//! [`Trainer::run`]) trains the tiny SD 1.x fixture model for 5 steps, and its learned rows
//! must match, within a relative error of 1e-3, what `tools/make_train_fixtures.py` computes
//! with diffusers/transformers/torch from the same initial state and the very same draws.
//!
//! The draws are the trainer's own ([`Trainer::step_draws`], a pure function of the seed):
//! the ignored test `write_draws` exports them to `tests/fixtures/train/<case>/draws.*`, the
//! script replays them, and `trains_like_pytorch` first checks that the trainer still draws
//! exactly those (bit for bit), so a change of the random streams fails loudly here instead
//! of as a numeric mismatch. Cases (`tests/fixtures/train/cases.json`): `ti` (Adam, constant
//! learning rate), `ctoa` (NSYNC, two vectors per token, a cosine schedule) and
//! `ctoa_reference_code` (the authors' script replayed literally: accumulated gradients, the
//! anchor typo, AdamW over the whole table). Each case also holds *control* runs (the same
//! draws with another update rule) which must lie well outside the tolerance, so the
//! tolerance does tell the update rules apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::training::contrastive_train::{prepare, TrainParams};
use nsync_nodes::training::dataset::Example;
use nsync_nodes::training::trainer::{PassDraw, StepDraws, TrainConfig, TrainState, Trainer};
use serde_json::{json, Value};

/// The bound on the learned rows after the last step.
const TOL_PARAMS: f64 = 1e-3;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/train")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn cases() -> Value {
    read_json(&fixtures().join("cases.json"))
}

fn examples(cases: &Value) -> Vec<Example> {
    let load = |rel: &Value| {
        let path = fixtures().join(rel.as_str().unwrap());
        image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8()
    };
    cases["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Example {
            id: e["id"].as_str().unwrap().to_string(),
            caption: e["caption"].as_str().unwrap().to_string(),
            image: load(&e["image"]),
            negative: Some(load(&e["negative"])),
        })
        .collect()
}

/// The model with the token added, the trainer's configuration and its fresh state for one
/// case, as the node prepares them.
fn setup(cases: &Value, name: &str) -> (StableDiffusion, TrainParams, TrainConfig, TrainState) {
    let case = &cases["cases"][name];
    let p: TrainParams = serde_json::from_value(case["params"].clone()).unwrap();
    let mut sd = StableDiffusion::from_dir(
        &repo().join(cases["model"].as_str().unwrap()),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let (cfg, state) = prepare(&p, &mut sd, case["seed"].as_u64().unwrap()).unwrap();
    (sd, p, cfg, state)
}

fn case_names(cases: &Value) -> Vec<String> {
    let mut names: Vec<String> = cases["cases"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

const PASSES: [&str; 3] = ["positive", "negative", "anchor"];

fn passes(d: &StepDraws) -> Vec<(&'static str, &[PassDraw])> {
    let mut out = vec![(PASSES[0], d.positive.as_slice())];
    if let Some(n) = &d.negative {
        out.push((PASSES[1], n.as_slice()));
    }
    if let Some(a) = &d.anchor {
        out.push((PASSES[2], a.as_slice()));
    }
    out
}

fn stack(draws: &[PassDraw], f: impl Fn(&PassDraw) -> &Tensor) -> Tensor {
    Tensor::cat(&draws.iter().map(f).collect::<Vec<_>>(), 0).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Every step's draws of a trainer: the JSON part and the noise tensors
/// (`step{k}.{pass}.vae_noise` / `.noise`, `[batch, c, h, w]`).
fn draws_of(trainer: &Trainer, steps: usize) -> (Value, HashMap<String, Tensor>) {
    let mut json_steps = Vec::new();
    let mut tensors = HashMap::new();
    for step in 0..steps {
        let d = trainer.step_draws(step).unwrap();
        let mut entry = serde_json::Map::new();
        for (pass, draws) in passes(&d) {
            let list: Vec<Value> = draws
                .iter()
                .map(|x| {
                    json!({"example": x.example, "negative": x.negative, "flip": x.flip,
                           "timestep": x.timestep})
                })
                .collect();
            entry.insert(pass.to_string(), Value::Array(list));
            tensors.insert(
                format!("step{step}.{pass}.vae_noise"),
                stack(draws, |x| &x.vae_noise),
            );
            tensors.insert(
                format!("step{step}.{pass}.noise"),
                stack(draws, |x| &x.noise),
            );
        }
        json_steps.push(Value::Object(entry));
    }
    (json!({ "steps": json_steps }), tensors)
}

/// Writes each case's draws for `tools/make_train_fixtures.py` (which runs this) into
/// `$NSYNC_WRITE_TRAIN_DRAWS/<case>/draws.{json,safetensors}`; without that variable, into a
/// temporary folder (so `--include-ignored` runs touch no fixture).
#[test]
#[ignore = "writes fixtures; run by tools/make_train_fixtures.py"]
fn write_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("NSYNC_WRITE_TRAIN_DRAWS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let cases = cases();
    let ex = examples(&cases);
    for name in case_names(&cases) {
        let (mut sd, p, cfg, _) = setup(&cases, &name);
        let trainer = Trainer::new(&mut sd, &ex, cfg).unwrap();
        let (json, tensors) = draws_of(&trainer, p.steps);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("draws.json"),
            serde_json::to_string_pretty(&json).unwrap() + "\n",
        )
        .unwrap();
        candle_core::safetensors::save(&tensors, dir.join("draws.safetensors")).unwrap();
    }
}

/// max |a − b| / max |b|, in f64.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .fold(0.0, f64::max);
    let s = b.iter().map(|&y| f64::from(y).abs()).fold(1e-30, f64::max);
    d / s
}

fn scalar_rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn check_case(cases: &Value, name: &str, ex: &[Example]) {
    let dir = fixtures().join(name);
    let reference = read_json(&dir.join("reference.json"));
    let ref_t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let (mut sd, p, cfg, state) = setup(cases, name);
    let mut trainer = Trainer::new(&mut sd, ex, cfg).unwrap();

    // 1. The same draws as the ones the reference replayed, bit for bit.
    let (json, tensors) = draws_of(&trainer, p.steps);
    let saved = read_json(&dir.join("draws.json"));
    let saved_t =
        candle_core::safetensors::load(dir.join("draws.safetensors"), &Device::Cpu).unwrap();
    let regenerate = "the trainer's draws changed: regenerate the fixtures with \
                      tools/make_train_fixtures.py";
    assert_eq!(json, saved, "{name}: {regenerate}");
    assert_eq!(tensors.len(), saved_t.len(), "{name}: {regenerate}");
    for (k, t) in &tensors {
        assert_eq!(bits(t), bits(&saved_t[k]), "{name}: {k}: {regenerate}");
    }

    // 2. The same inputs: images at the training resolution, which the node's resize to
    // `resolution` (`dataset::load`) leaves as they are; initial state, tokens and prompts.
    let size = p.resolution as u32;
    for img in ex
        .iter()
        .flat_map(|e| [&e.image, e.negative.as_ref().unwrap()])
    {
        let resized = image::imageops::resize(img, size, size, FilterType::CatmullRom);
        assert_eq!(&resized, img, "{name}: images at {size} px");
    }
    let init = vec_f32(&ref_t["init"]);
    let expected_start: Vec<f32> = init
        .iter()
        .cycle()
        .take(state.params.len())
        .copied()
        .collect();
    assert_eq!(state.params, expected_start, "{name}: initial rows");
    let ref_ids: Vec<u32> = reference["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let style = &trainer.cfg.styles[0];
    assert_eq!(style.token_ids, ref_ids, "{name}: token ids");
    for e in ex {
        let text = style.positive_template.replace("{caption}", &e.caption);
        let ids = trainer.sd.token_ids(&text).unwrap();
        let want: Vec<u32> = reference["prompt_ids"][&e.id]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want, "{name}: prompt ids of {}", e.id);
        let neg = style.negative_template.replace("{caption}", &e.caption);
        assert_eq!(
            neg, text,
            "{name}: the negative is trained with the positive's text"
        );
    }

    // 3. Train, keeping the rows after every step.
    let mut per_step: Vec<Vec<f32>> = Vec::new();
    let done = trainer
        .run(
            state,
            1,
            &mut |s| {
                per_step.push(s.params.clone());
                Ok(())
            },
            &|_| {},
        )
        .unwrap();
    per_step.push(done.params.clone());
    assert_eq!(per_step.len(), p.steps);

    // 4. The per-step measurements: learning rate, losses, gradient norms.
    let curves: Vec<Value> = done
        .curves
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lrs = floats(&reference["lr"]);
    for (field, key, tol) in [
        ("loss_pos", "positive", 1e-4),
        ("loss_neg", "negative", 1e-4),
        ("loss_anc", "anchor", 1e-4),
    ] {
        let Some(want) = reference["losses"].get(key) else {
            assert!(curves.iter().all(|c| c.get(field).is_none()));
            continue;
        };
        let want = floats(want);
        let worst = curves
            .iter()
            .zip(&want)
            .map(|(c, &w)| scalar_rel(c[field].as_f64().unwrap(), w))
            .fold(0.0, f64::max);
        println!("{name}: {field}: max relative error over the steps {worst:.2e}");
        assert!(worst <= tol, "{name}: {field}: {worst:e} > {tol:e}");
    }
    for (field, tol) in [
        ("g_pos_norm", 1e-3),
        ("update_norm", 1e-3),
        ("removed_norm", 1e-3),
        ("added_norm", 1e-3),
    ] {
        let want = floats(&reference[field]);
        let worst = curves
            .iter()
            .zip(&want)
            .map(|(c, &w)| {
                let got = c[field].as_f64().unwrap();
                if w == 0.0 {
                    got.abs()
                } else {
                    scalar_rel(got, w)
                }
            })
            .fold(0.0, f64::max);
        println!("{name}: {field}: max relative error over the steps {worst:.2e}");
        assert!(worst <= tol, "{name}: {field}: {worst:e} > {tol:e}");
    }
    let cos = floats(&reference["cos_pos_neg"]);
    for (c, w) in curves.iter().zip(&cos) {
        let got = c["cos_pos_neg"].as_f64().unwrap();
        assert!(
            (got - w).abs() <= 1e-3,
            "{name}: cos(g_pos, g_neg) {got} vs {w}"
        );
    }
    for (c, &w) in curves.iter().zip(&lrs) {
        let got = c["lr"].as_f64().unwrap();
        assert!(scalar_rel(got, w) <= 1e-6, "{name}: lr {got} vs {w}");
    }

    // 5. The learned rows after every step; the bound is on the last.
    let moved = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .zip(init.iter().cycle())
            .map(|(a, b)| a - b)
            .collect()
    };
    for (k, got) in per_step.iter().enumerate() {
        let want = vec_f32(&ref_t[&format!("params.step{}", k + 1)]);
        println!(
            "{name}: step {}: learned rows: relative error {:.2e}; their change since the start: relative error {:.2e}",
            k + 1,
            rel(got, &want),
            rel(&moved(got), &moved(&want))
        );
    }
    let last = vec_f32(&ref_t[&format!("params.step{}", p.steps)]);
    let err = rel(&done.params, &last);
    assert!(
        err <= TOL_PARAMS,
        "{name}: the learned rows after {} steps: relative error {err:e} > {TOL_PARAMS:e}",
        p.steps
    );
    // Stricter: the same bound on what training changed (the rows minus their start), which
    // the start does not dilute.
    let change = rel(&moved(&done.params), &moved(&last));
    assert!(
        change <= TOL_PARAMS,
        "{name}: the change of the learned rows after {} steps: relative error {change:e} > {TOL_PARAMS:e}",
        p.steps
    );

    // 6. The controls (another update rule, same draws) lie well outside the tolerance.
    for c in reference["controls"].as_array().unwrap() {
        let c = c.as_str().unwrap();
        let control = vec_f32(&ref_t[&format!("control.{c}")]);
        let d = rel(&control, &last);
        println!("{name}: control `{c}`: relative distance to the reference {d:.2e}");
        assert!(
            d >= 10.0 * TOL_PARAMS,
            "{name}: the control `{c}` is within {d:e} of the reference: the test cannot tell the rules apart"
        );
    }

    // 7. Reference-code mode: the frozen table decayed as AdamW decays the whole table.
    if let Some(range) = reference["frozen_scale"].as_array() {
        let (lo, hi) = (range[0].as_f64().unwrap(), range[1].as_f64().unwrap());
        println!(
            "{name}: frozen table scale {} (PyTorch: {lo} ..= {hi})",
            done.frozen_scale
        );
        assert!(lo < 1.0 && done.frozen_scale < 1.0);
        assert!(
            done.frozen_scale >= lo - 1e-6 && done.frozen_scale <= hi + 1e-6,
            "{name}: frozen scale {} outside PyTorch's {lo} ..= {hi}",
            done.frozen_scale
        );
    }
}

#[test]
fn trains_like_pytorch() {
    let cases = cases();
    let ex = examples(&cases);
    let names = case_names(&cases);
    assert_eq!(names, ["ctoa", "ctoa_reference_code", "ti"]);
    for name in names {
        check_case(&cases, &name, &ex);
    }
}
