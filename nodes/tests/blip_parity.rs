//! BLIP captioning parity with transformers 5.24 on a tiny random model.
//!
//! The fixtures (`tests/fixtures/caption/`: the model folder, three PNG crops of demo
//! paintings, reference tensors and ids) are written by the dev-only script
//! `tools/make_blip_fixtures.py`: a random `BlipForConditionalGeneration` (2-layer ViT at
//! 96 px, 2-layer decoder, 841-token WordPiece vocabulary), preprocessed by
//! `BlipImageProcessorPil`, captioned by `model.generate(..., do_sample=False,
//! max_new_tokens=20)` with and without the prompt "a painting of". The script checks that
//! every greedy step wins by a clear margin, so exact ids are a fair test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nsync_nodes::captioning::bert_tokenizer::BlipTokenizer;
use nsync_nodes::captioning::pil_resize::resize_bicubic;
use nsync_nodes::captioning::tiny_blip::tiny_vocab;
use nsync_nodes::captioning::{write_tiny_blip, BlipCaptioner};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/caption")
}

struct Fixture {
    json: Value,
    tensors: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let json =
        serde_json::from_slice(&std::fs::read(root().join("fixtures.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(root().join("fixtures.safetensors"), &Device::Cpu).unwrap();
    Fixture { json, tensors }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn abs_max(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    abs_max(&(&a - b).unwrap()) / abs_max(b).max(1e-12)
}

fn model() -> BlipCaptioner {
    BlipCaptioner::from_dir(&root().join("tiny_blip"), &Device::Cpu).unwrap()
}

fn images(f: &Fixture) -> Vec<image::RgbImage> {
    f.json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let p = root().join("images").join(i["file"].as_str().unwrap());
            image::open(p).unwrap().to_rgb8()
        })
        .collect()
}

#[test]
fn preprocessing_matches_blip_image_processor_pil() {
    let f = fixture();
    let m = model();
    let ours = m.pixel_values(&images(&f)).unwrap();
    let theirs = &f.tensors["pixel_values"];
    let diff = abs_max(&(&ours - theirs).unwrap());
    assert_eq!(diff, 0.0, "pixel_values differ by up to {diff}");
}

#[test]
fn bicubic_resize_matches_pillow_byte_for_byte() {
    let f = fixture();
    let src = &images(&f)[0];
    for wh in f.json["resizes"].as_array().unwrap() {
        let (w, h) = (
            wh[0].as_u64().unwrap() as u32,
            wh[1].as_u64().unwrap() as u32,
        );
        let ours = resize_bicubic(src, w, h);
        let theirs: Vec<u8> = f.tensors[&format!("resize_{w}x{h}")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = ours
            .as_raw()
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(ours.as_raw().len(), theirs.len(), "{w}×{h}");
        assert_eq!(diff, 0, "{w}×{h}: {diff} bytes differ from Pillow");
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let f = fixture();
    let tok = BlipTokenizer::from_dir(&root().join("tiny_blip")).unwrap();
    let special = &f.json["special_ids"];
    assert_eq!(
        tok.vocab_size(),
        f.json["vocab_size"].as_u64().unwrap() as usize
    );
    assert_eq!(
        tok.token_to_id("[DEC]"),
        special["bos"].as_u64().map(|x| x as u32)
    );
    let corpus = f.json["tokenizer"]["corpus"].as_array().unwrap();
    assert!(corpus.len() >= 10);
    for c in corpus {
        let text = c["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&c["ids"]), "{text:?}");
    }
    for c in f.json["tokenizer"]["decode"].as_array().unwrap() {
        assert_eq!(
            tok.decode(&ids(&c["ids"]), true).unwrap(),
            c["text"].as_str().unwrap()
        );
    }
}

#[test]
fn tiny_vocabulary_is_the_fixtures() {
    let json: Value =
        serde_json::from_slice(&std::fs::read(root().join("tiny_blip/tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tiny_vocab();
    let theirs = json["model"]["vocab"].as_object().unwrap();
    assert_eq!(theirs.len(), vocab.len());
    for (i, t) in vocab.iter().enumerate() {
        assert_eq!(theirs[t].as_u64(), Some(i as u64), "{t}");
    }
    // The file nsync writes is the one transformers writes.
    let ours: Value = serde_json::from_str(&BlipTokenizer::bert_json(&vocab).unwrap()).unwrap();
    assert_eq!(ours, json);
}

#[test]
fn vision_encoder_matches_transformers() {
    let f = fixture();
    let out = model().encode_images(&f.tensors["pixel_values"]).unwrap();
    let err = rel_err(&out, &f.tensors["vision_last_hidden_state"]);
    eprintln!("vision last_hidden_state: relative error {err:.2e}");
    assert!(err <= 1e-5, "relative error {err}");
}

fn greedy_matches(case: &str) {
    let f = fixture();
    let m = model();
    let g = &f.json["generation"][case];
    let prompt = g["prompt"].as_str();
    let max_new = g["max_new_tokens"].as_u64().unwrap() as usize;
    let (prefix, out) = m
        .generate(&f.tensors["pixel_values"], prompt, max_new, true)
        .unwrap();
    assert_eq!(prefix, ids(&g["prefix_ids"]), "{case}: prefix");
    let logits = &f.tensors[&format!("logits_{case}")]; // [step, image, vocab]
    let step_logits = out.step_logits.unwrap();
    let mut worst = 0f32;
    for (b, c) in g["captions"].as_array().unwrap().iter().enumerate() {
        let expected = ids(&c["token_ids"]);
        let full: Vec<u32> = prefix.iter().chain(&out.tokens[b]).copied().collect();
        assert_eq!(full, expected, "{case}: image {b} token ids");
        for (s, ours) in step_logits[b].iter().enumerate() {
            let theirs = logits.get(s).unwrap().get(b).unwrap();
            let err = rel_err(ours, &theirs);
            worst = worst.max(err);
            assert!(
                err <= 1e-4,
                "{case}: image {b} step {s}: relative error {err}"
            );
        }
        let text = m.tokenizer.caption_text(&prefix, &out.tokens[b]).unwrap();
        assert_eq!(
            text,
            c["caption"].as_str().unwrap(),
            "{case}: image {b} text"
        );
    }
    eprintln!("{case}: worst per-step logits relative error {worst:.2e}");
}

#[test]
fn greedy_captions_match_transformers_without_prompt() {
    greedy_matches("no_prompt");
}

#[test]
fn greedy_captions_match_transformers_with_prompt() {
    greedy_matches("prompt");
}

#[test]
fn captions_from_image_files_match_and_do_not_depend_on_the_batch() {
    let f = fixture();
    let m = model();
    let imgs = images(&f);
    for case in ["no_prompt", "prompt"] {
        let g = &f.json["generation"][case];
        let prompt = g["prompt"].as_str();
        let prefix = ids(&g["prefix_ids"]);
        let batch = m.caption(&imgs, prompt, 20).unwrap();
        for (b, c) in g["captions"].as_array().unwrap().iter().enumerate() {
            let expected = ids(&c["token_ids"]);
            assert_eq!(
                &expected[prefix.len()..],
                &batch[b].token_ids[..],
                "{case} {b}"
            );
            assert_eq!(batch[b].text, c["caption"].as_str().unwrap());
            let alone = m.caption(&imgs[b..b + 1], prompt, 20).unwrap();
            assert_eq!(alone[0], batch[b], "{case} {b}: alone vs in a batch");
        }
    }
    // Fewer new tokens: a prefix of the same captions.
    let short = m.caption(&imgs, None, 3).unwrap();
    let long = m.caption(&imgs, None, 20).unwrap();
    for (s, l) in short.iter().zip(&long) {
        assert_eq!(s.token_ids[..], l.token_ids[..s.token_ids.len()]);
        assert!(s.token_ids.len() <= 3);
    }
    assert!(m
        .caption(&imgs, None, 0)
        .unwrap()
        .iter()
        .all(|c| c.token_ids.is_empty()));
    assert!(
        m.caption(&imgs, None, 64).is_err(),
        "beyond max_position_embeddings"
    );
}

/// A copy of the fixture model whose weights are `edit`ed.
fn edited_model(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let src = root().join("tiny_blip");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    match BlipCaptioner::from_dir(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn strict_loading_names_the_file_and_tensor() {
    let name = "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight";
    let dir = edited_model(|t| {
        t.remove(name);
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains(name) && e.contains("missing"),
        "{e}"
    );

    let dir = edited_model(|t| {
        let w = t["vision_model.post_layernorm.weight"].clone();
        t.insert("vision_model.extra_head.weight".into(), w);
    });
    let e = load_error(dir.path());
    assert!(
        e.contains("unexpected") && e.contains("vision_model.extra_head.weight"),
        "{e}"
    );

    let name = "vision_model.encoder.layers.0.mlp.fc1.weight";
    let dir = edited_model(|t| {
        let w = t[name].narrow(0, 0, 90).unwrap();
        t.insert(name.into(), w);
    });
    let e = load_error(dir.path());
    assert!(
        e.contains(name) && e.contains("[90, 48]") && e.contains("[96, 48]"),
        "{e}"
    );

    // Checkpoints that keep the tied LM head and buffers still load.
    let dir = edited_model(|t| {
        let emb = t["text_decoder.bert.embeddings.word_embeddings.weight"].clone();
        let bias = t["text_decoder.cls.predictions.bias"].clone();
        t.insert("text_decoder.cls.predictions.decoder.weight".into(), emb);
        t.insert("text_decoder.cls.predictions.decoder.bias".into(), bias);
        let ids = Tensor::arange(0i64, 64, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        t.insert("text_decoder.bert.embeddings.position_ids".into(), ids);
    });
    BlipCaptioner::from_dir(dir.path(), &Device::Cpu).unwrap();

    // Missing files and mismatched configs are named.
    let dir = edited_model(|_| {});
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(load_error(dir.path()).contains("tokenizer.json"));
    let dir = edited_model(|_| {});
    let p = dir.path().join("preprocessor_config.json");
    let text = std::fs::read_to_string(&p).unwrap().replace("96", "128");
    std::fs::write(&p, text).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("preprocessor_config.json") && e.contains("96"),
        "{e}"
    );
}

#[test]
fn write_tiny_blip_loads_and_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_tiny_blip(a.path(), 7).unwrap();
    write_tiny_blip(b.path(), 7).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(
        write_tiny_blip(a.path(), 7).is_err(),
        "refuses to overwrite"
    );
    let m = BlipCaptioner::from_dir(a.path(), &Device::Cpu).unwrap();
    let f = fixture();
    let imgs = images(&f);
    let caps = m.caption(&imgs, Some("a painting of"), 20).unwrap();
    for c in &caps {
        eprintln!("tiny caption: {:?} {:?}", c.text, c.token_ids);
        assert!(c.token_ids.len() <= 20);
    }
    // For tools/check_tiny_blip_loads.py: the model and nsync's captions, kept.
    if let Some(out) = std::env::var_os("NSYNC_TINY_BLIP_OUT") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        for e in std::fs::read_dir(a.path()).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
        }
        let no_prompt = m.caption(&imgs, None, 20).unwrap();
        let cases: Vec<Value> = f.json["images"]
            .as_array()
            .unwrap()
            .iter()
            .zip(caps.iter().zip(&no_prompt))
            .flat_map(|(i, (c, n))| {
                let image = i["file"].clone();
                [
                    serde_json::json!({"image": image, "prompt": "a painting of", "max_new_tokens": 20, "token_ids": c.token_ids}),
                    serde_json::json!({"image": image, "prompt": null, "max_new_tokens": 20, "token_ids": n.token_ids}),
                ]
            })
            .collect();
        let doc = serde_json::json!({ "cases": cases });
        std::fs::write(out.join("captions.json"), doc.to_string()).unwrap();
    }
    // Its tokenizer is the fixtures' (transformers') one.
    let fixture_tok = BlipTokenizer::from_dir(&root().join("tiny_blip")).unwrap();
    for c in f.json["tokenizer"]["corpus"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            m.tokenizer.encode(text).unwrap(),
            fixture_tok.encode(text).unwrap()
        );
    }
}

/// CPU seconds (user + system) this process has used so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Throughput of a BLIP-large-size model with random weights (not a parity test): run with
/// `RAYON_NUM_THREADS=2 cargo test --release -p nsync-nodes --test blip_parity blip_large_throughput -- --ignored --nocapture`
/// (`NSYNC_BENCH_BATCH`, default 4, sets the batch). `bench/blip_reference.py` measures
/// transformers on the same images. Reports wall-clock and CPU seconds per image: on a
/// shared machine the CPU seconds are the steadier measure of the work done.
#[test]
#[ignore]
fn blip_large_throughput() {
    let batch: usize = std::env::var("NSYNC_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let t0 = std::time::Instant::now();
    let m = BlipCaptioner::random_large(0).unwrap();
    eprintln!(
        "random BLIP-large built in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipelines/data/monet/train");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    let imgs: Vec<image::RgbImage> = files[..batch]
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect();
    // Warm-up on one image, then timed runs of the whole batch.
    m.caption(&imgs[..1], None, 2).unwrap();
    let reps = 2;
    let mut tokens = 0;
    let (t, c) = (std::time::Instant::now(), cpu_seconds());
    for _ in 0..reps {
        let caps = m.caption(&imgs, None, 20).unwrap();
        tokens += caps.iter().map(|c| c.token_ids.len()).sum::<usize>();
    }
    let (s, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    let n = (reps * batch) as f64;
    eprintln!(
        "BLIP-large random, batch {batch}: {:.3} images/s ({:.2} s/image wall, {:.2} CPU s/image), {:.1} new tokens/image",
        n / s,
        s / n,
        cpu / n,
        tokens as f64 / n
    );
    let px = m.pixel_values(&imgs).unwrap();
    let (t, c) = (std::time::Instant::now(), cpu_seconds());
    m.encode_images(&px).unwrap();
    eprintln!(
        "  vision encoder alone: {:.2} s/image wall, {:.2} CPU s/image",
        t.elapsed().as_secs_f64() / batch as f64,
        (cpu_seconds() - c) / batch as f64
    );
}
