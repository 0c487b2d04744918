//! `contrastive_train` with `adapter = "lora"` on the tiny SD 1.x fixture model, configured
//! exactly as the node configures it ([`prepare`]): training moves the UNet only through the
//! adapters (frozen weights and token table untouched), is deterministic and resumes bit for
//! bit; the flat and per-tensor projections differ; the LoRA file (diffusers' layout) round
//! trips; an all-zero `lora_B` samples the very bytes of no LoRA; and the UNet with a LoRA
//! matches diffusers' (`tests/fixtures/lora/`, written by `tools/check_lora_loads.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::lora::Lora;
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::diffusion::sampler::{decode, denoise, initial_latents, to_rgb8, SampleSettings};
use nsync_nodes::training::contrastive_train::{prepare, TrainParams};
use nsync_nodes::training::dataset::Example;
use nsync_nodes::training::trainer::{TrainState, Trainer};
use nsync_nodes::training::{Adapter, LoraLayout};

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

fn params(steps: usize, lora: serde_json::Value) -> TrainParams {
    let mut p: TrainParams = serde_json::from_value(serde_json::json!({
        "token": "sks",
        "adapter": "lora",
        "lora": lora,
        "variant": "ctoa",
        "steps": steps,
        "batch_size": 1,
        "lr": 0.01,
        "resolution": 64
    }))
    .unwrap();
    p.validate().unwrap();
    p
}

const SEED: u64 = 5;

fn layout_of(a: &Adapter) -> LoraLayout {
    match a {
        Adapter::Lora(l) => l.clone(),
        Adapter::Embedding => panic!("not a LoRA run"),
    }
}

/// Train from scratch on `sd`: the final state and the layout.
fn train_on(sd: &mut StableDiffusion, p: &TrainParams) -> (TrainState, LoraLayout) {
    let ex = examples();
    let (cfg, state) = prepare(p, sd, SEED).unwrap();
    let layout = layout_of(&cfg.adapter);
    let mut t = Trainer::new(sd, &ex, cfg).unwrap();
    let done = t.run(state, 0, &mut |_| Ok(()), &|_| {}).unwrap();
    (done, layout)
}

/// Fixed UNet inputs: two samples at different timesteps, random context.
fn inputs() -> (Tensor, Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = nsync_nodes::diffusion::noise::gaussian(1, &[2, 4, 8, 8], &dev).unwrap();
    let t = Tensor::new(&[10f32, 700.0], &dev).unwrap();
    let c = nsync_nodes::diffusion::noise::gaussian(2, &[2, 77, 32], &dev).unwrap();
    (x, t, c)
}

fn unet_out(sd: &StableDiffusion) -> Vec<f32> {
    let (x, t, c) = inputs();
    sd.unet
        .forward(&x, &t, &c)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

#[test]
fn training_changes_the_unet_only_through_the_adapters() {
    let mut sd = model();
    let base = unet_out(&sd);
    let table = sd.text_encoder.token_embedding.clone();
    let vocab = sd.tokenizer.vocab_size();
    let p = params(3, serde_json::json!({}));
    let (done, layout) = train_on(&mut sd, &p);

    // The default targets: q, k, v, out of self- and cross-attention in each of the tiny
    // UNet's four transformers (down 0, mid, up 1 ×2).
    assert_eq!(layout.sites.len(), 4 * 2 * 4);
    assert_eq!(
        layout.sites[0].name,
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    );
    assert_eq!((layout.rank, layout.scale), (4, 1.0));
    assert_eq!(done.curves.len(), 3);
    for line in &done.curves {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(c["g_pos_norm"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["removed_norm"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["loss_anc"].is_number(), "{c}");
    }

    // Frozen: without the adapters the UNet computes exactly what it did; no token was
    // added and the table is untouched; the trainer detached its LoRA.
    assert!(sd.unet.lora().is_none());
    assert_eq!(unet_out(&sd), base, "frozen UNet weights unchanged");
    assert_eq!(sd.tokenizer.vocab_size(), vocab, "LoRA adds no token");
    let d = (&table - &sd.text_encoder.token_embedding)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);

    // B left zero; with the trained adapters the UNet's output moves.
    let tensors = layout.tensors();
    let b_max = tensors
        .iter()
        .skip(1)
        .step_by(2)
        .flat_map(|(r, _)| done.params[r.clone()].iter())
        .fold(0f32, |m, x| m.max(x.abs()));
    assert!(b_max > 0.0, "lora_B learned");
    let (lora, _) = layout.build(&done.params, &Device::Cpu, false).unwrap();
    sd.unet.set_lora(Some(lora)).unwrap();
    let adapted = unet_out(&sd);
    let moved = max_abs_diff(&adapted, &base);
    println!(
        "UNet output moved by {moved:e} (max |base| {:e})",
        max_abs(&base)
    );
    assert!(moved > 1e-4, "{moved}");
}

#[test]
fn deterministic_and_resumes_bit_for_bit() {
    let p = params(3, serde_json::json!({"rank": 2, "alpha": 3.0}));
    let (a, _) = train_on(&mut model(), &p);
    let (b, _) = train_on(&mut model(), &p);
    assert_eq!(a.params, b.params);
    assert_eq!(a.curves, b.curves);

    let ex = examples();
    let mut sd = model();
    let (cfg, state) = prepare(&p, &mut sd, SEED).unwrap();
    let mut saved = None;
    let mut t = Trainer::new(&mut sd, &ex, cfg).unwrap();
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
    assert!(sd.unet.lora().is_none(), "detached after an error too");
    let mut sd = model();
    let (cfg, _) = prepare(&p, &mut sd, SEED).unwrap();
    let resumed: TrainState = serde_json::from_slice(&saved.unwrap()).unwrap();
    assert_eq!(resumed.step, 2);
    let mut t = Trainer::new(&mut sd, &ex, cfg).unwrap();
    let done = t.run(resumed, 2, &mut |_| Ok(()), &|_| {}).unwrap();
    assert_eq!(done.params, a.params);
    assert_eq!(done.optimizer, a.optimizer);
    assert_eq!(done.curves, a.curves);
}

#[test]
fn per_tensor_projection_is_another_update() {
    let flat = params(
        2,
        serde_json::json!({"targets": ["attn2.to_k", "attn2.to_v"]}),
    );
    let per = params(
        2,
        serde_json::json!({"targets": ["attn2.to_k", "attn2.to_v"], "projection": "per_tensor"}),
    );
    let (a, la) = train_on(&mut model(), &flat);
    let (b, lb) = train_on(&mut model(), &per);
    assert_eq!(
        la.sites.len(),
        4 * 2,
        "cross-attention keys and values only"
    );
    assert!(la
        .sites
        .iter()
        .all(|s| s.in_dim == 32 && s.name.contains("attn2")));
    assert_eq!(la.sites, lb.sites);
    assert!(b.params.iter().all(|x| x.is_finite()));
    // The first step starts from the same adapters with the same draws, so its gradients
    // are the same; the projections (one over everything, one per tensor) are not.
    assert_ne!(a.params, b.params, "per tensor projects differently");
    let first =
        |s: &TrainState| -> serde_json::Value { serde_json::from_str(&s.curves[0]).unwrap() };
    assert_eq!(
        first(&a)["g_pos_norm"],
        first(&b)["g_pos_norm"],
        "same first gradient"
    );
}

/// Sample one 64 px image the way `sd_sample` does.
fn sample_png(sd: &StableDiffusion) -> Vec<u8> {
    let settings = SampleSettings {
        scheduler: None,
        steps: 3,
        guidance: 7.5,
        width: 64,
        height: 64,
        eta: 0.0,
    };
    let seed = 42;
    let latents = initial_latents(sd, &settings, seed).unwrap();
    let pe = sd
        .encode_prompts(&["a harbour at dawn in the style of sks"])
        .unwrap();
    let ne = sd.encode_prompts(&[""]).unwrap();
    let out = denoise(sd, &settings, &pe, &ne, &latents, &[seed], &mut |_, _| {}).unwrap();
    let img = decode(sd, &out).unwrap().get(0).unwrap();
    nsync_nodes::sources::decode::encode_png(&to_rgb8(&img).unwrap())
}

#[test]
fn the_file_round_trips_and_a_zero_b_lora_samples_the_same_bytes() {
    let p = params(2, serde_json::json!({"rank": 4, "alpha": 8.0}));
    let mut sd = model();
    let plain = sample_png(&sd);
    let (done, layout) = train_on(&mut sd, &p);
    assert_eq!(layout.scale, 2.0);
    let dir = tempfile::tempdir().unwrap();

    // The trained adapters, written in diffusers' layout (scale baked into lora_B) and read
    // back: the same UNet output.
    let (trained, _) = layout.build(&done.params, &Device::Cpu, false).unwrap();
    let file = dir.path().join("pytorch_lora_weights.safetensors");
    trained.save(&file).unwrap();
    let raw = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    assert_eq!(raw.len(), 2 * layout.sites.len());
    let key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
    assert_eq!(
        raw[&format!("{key}.lora_A.weight")].dims(),
        [4, 32],
        "[r, in]"
    );
    assert_eq!(
        raw[&format!("{key}.lora_B.weight")].dims(),
        [32, 4],
        "[out, r]"
    );
    sd.unet.set_lora(Some(trained)).unwrap();
    let in_memory = unet_out(&sd);
    let loaded = Lora::load(&file, DType::F32, &Device::Cpu).unwrap();
    assert!(loaded.layers.values().all(|l| l.scale == 1.0));
    sd.unet.set_lora(Some(loaded)).unwrap();
    let from_file = unet_out(&sd);
    let err = max_abs_diff(&from_file, &in_memory) / max_abs(&in_memory);
    println!("round trip: relative error {err:e}");
    assert!(err <= 1e-6, "{err}");
    let trained_png = sample_png(&sd);

    // The initial adapters (random A, zero B) through the same file path: not one byte of
    // the image changes.
    let init = layout.init(SEED).unwrap();
    let (zero_b, _) = layout.build(&init, &Device::Cpu, false).unwrap();
    assert!(zero_b.layers.values().any(|l| l
        .a
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        > 0.0));
    let zfile = dir.path().join("zero.safetensors");
    zero_b.save(&zfile).unwrap();
    sd.unet
        .set_lora(Some(Lora::load(&zfile, DType::F32, &Device::Cpu).unwrap()))
        .unwrap();
    assert_eq!(sample_png(&sd), plain, "a zero lora_B changes nothing");
    assert_ne!(trained_png, plain, "the trained LoRA changes the image");

    // A mis-shaped or misnamed layer is refused with its name.
    let mut bad = Lora::load(&file, DType::F32, &Device::Cpu).unwrap();
    let (name, layer) = bad.layers.pop_first().unwrap();
    bad.layers.insert(format!("{name}x"), layer);
    let e = sd.unet.set_lora(Some(bad)).unwrap_err();
    assert!(
        e.contains("to_kx") || e.contains("to_qx") || e.contains("to_vx") || e.contains(".0x"),
        "{e}"
    );
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Our UNet with a LoRA against diffusers' `UNet2DConditionModel` after
/// `pipe.load_lora_weights(file)`, on fixed inputs: for a LoRA this trainer wrote
/// (`ours.safetensors`, alpha ≠ rank, so the baked scale is exercised) and for one diffusers
/// saved from a PEFT-adapted UNet with `lora_adapter_metadata` (`peft.safetensors`, alpha ≠
/// rank in the metadata). Fixtures from `tools/check_lora_loads.py`.
#[test]
fn the_unet_with_a_lora_matches_diffusers() {
    let fx = repo().join("tests/fixtures/lora");
    let inputs = load(&fx.join("inputs.safetensors"));
    let reference = load(&fx.join("reference.safetensors"));
    let mut sd = model();
    let run = |sd: &StableDiffusion| -> Vec<f32> {
        sd.unet
            .forward(&inputs["sample"], &inputs["timesteps"], &inputs["context"])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let vec = |k: &str| -> Vec<f32> { reference[k].flatten_all().unwrap().to_vec1().unwrap() };
    let base = run(&sd);
    let base_err = max_abs_diff(&base, &vec("base"));
    println!("no LoRA: max abs error {base_err:e}");
    for (file, key) in [("ours.safetensors", "ours"), ("peft.safetensors", "peft")] {
        let lora = Lora::load(&fx.join(file), DType::F32, &Device::Cpu).unwrap();
        sd.unet.set_lora(Some(lora)).unwrap();
        let got = run(&sd);
        let want = vec(key);
        let err = max_abs_diff(&got, &want);
        let effect = max_abs_diff(&want, &vec("base"));
        println!("{file}: max abs error {err:e} (the LoRA moves the output by {effect:e})");
        assert!(err <= 1e-4, "{file}: {err}");
        assert!(
            effect > 100.0 * 1e-4,
            "{file}: the LoRA must matter: {effect}"
        );
    }
}

/// Writes a trained LoRA (`ours.safetensors`) and the fixed UNet inputs for
/// `tools/check_lora_loads.py` into `$NSYNC_WRITE_LORA` (else a temporary folder).
#[test]
#[ignore = "writes fixtures; run by tools/check_lora_loads.py"]
fn write_lora_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("NSYNC_WRITE_LORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let p = params(3, serde_json::json!({"rank": 4, "alpha": 6.0}));
    let mut sd = model();
    let (done, layout) = train_on(&mut sd, &p);
    let (lora, _) = layout.build(&done.params, &Device::Cpu, false).unwrap();
    let file = dir.join("ours.safetensors");
    lora.save(&file).unwrap();
    let (x, t, c) = inputs();
    let base = sd.unet.forward(&x, &t, &c).unwrap();
    sd.unet
        .set_lora(Some(Lora::load(&file, DType::F32, &Device::Cpu).unwrap()))
        .unwrap();
    let ours = sd.unet.forward(&x, &t, &c).unwrap();
    let tensors = HashMap::from([
        ("sample".to_string(), x),
        ("timesteps".to_string(), t),
        ("context".to_string(), c),
    ]);
    candle_core::safetensors::save(&tensors, dir.join("inputs.safetensors")).unwrap();
    let outputs = HashMap::from([("base".to_string(), base), ("ours".to_string(), ours)]);
    candle_core::safetensors::save(&outputs, dir.join("nsync_output.safetensors")).unwrap();
}
