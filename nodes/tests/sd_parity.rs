//! Parity with diffusers/transformers on tiny random models.
//!
//! The fixtures (model folders and reference outputs) are written by the dev-only script
//! `tools/make_sd_fixtures.py` and committed under `tests/fixtures/sd/<variant>/`. Set
//! `NSYNC_SD_FIXTURES` to a folder with other variants' subfolders to re-run these tests on
//! fixtures made with another seed.

mod common;

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::clip_text::ClipTextModel;
use nsync_nodes::diffusion::ClipTokenizer;

use common::{ids, rel_err, Fixture};

fn tokenizer_matches_transformers(variant: &str) {
    let f = Fixture::load(variant);
    let t = &f.json["tokenizer"];
    let mut tok = ClipTokenizer::from_dir(&f.dir.join("model/tokenizer")).unwrap();
    assert_eq!(tok.pad, t["pad_token_id"].as_u64().unwrap() as u32);
    let corpus = t["corpus"].as_array().unwrap();
    assert!(corpus.len() >= 40);
    for c in corpus {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            tok.encode_full(text).unwrap(),
            ids(&c["ids"]),
            "{variant}: {text:?}"
        );
        assert_eq!(
            tok.encode_padded(text).unwrap(),
            ids(&c["ids_padded"]),
            "{variant}: {text:?} (padded)"
        );
    }
    let id = tok.add_token(t["placeholder"].as_str().unwrap()).unwrap();
    assert_eq!(id, t["placeholder_id"].as_u64().unwrap() as u32);
    for c in t["corpus_with_placeholder"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            tok.encode_padded(text).unwrap(),
            ids(&c["ids_padded"]),
            "{variant} with placeholder: {text:?}"
        );
    }
}

#[test]
fn tokenizer_sd15() {
    tokenizer_matches_transformers("sd15");
}

#[test]
fn tokenizer_sd2() {
    tokenizer_matches_transformers("sd2");
}

fn text_encoder_matches_transformers(variant: &str) {
    let f = Fixture::load(variant);
    let te = &f.json["text_encoder"];
    let model =
        ClipTextModel::from_dir(&f.dir.join("model/text_encoder"), DType::F32, &Device::Cpu)
            .unwrap();
    let rows: Vec<Vec<u32>> = te["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let flat: Vec<u32> = rows.concat();
    let input = Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap();
    let out = model.forward(&input).unwrap();
    let err = rel_err(&out, &f.tensors["te_last_hidden_state"]);
    assert!(err <= 1e-4, "{variant}: text encoder relative error {err}");
    // A learned token injected in place of the (resized) table's row.
    let inj = ids(&te["injected_input_ids"][0]);
    let placeholder = te["placeholder_id"].as_u64().unwrap() as u32;
    let learned = f.tensors["learned_embedding"].reshape(32).unwrap();
    let real_t = Tensor::from_vec(inj.clone(), (1, inj.len()), &Device::Cpu).unwrap();
    let embeds = model.embed(&real_t, &[(placeholder, learned)]).unwrap();
    let out = model.forward_embeds(&embeds).unwrap();
    let err = rel_err(&out, &f.tensors["te_injected_last_hidden_state"]);
    assert!(
        err <= 1e-4,
        "{variant}: injected-token relative error {err}"
    );
}

#[test]
fn text_encoder_sd15() {
    text_encoder_matches_transformers("sd15");
}

#[test]
fn text_encoder_sd2() {
    text_encoder_matches_transformers("sd2");
}

/// The gradient w.r.t. an injected token embedding is non-zero and matches central finite
/// differences (the stock candle CLIP cuts the graph at its fused layer norm).
#[test]
fn text_encoder_gradient_reaches_the_learned_embedding() {
    let f = Fixture::load("sd15");
    let te = &f.json["text_encoder"];
    // f64, so that finite differences are exact enough to judge the gradient.
    let model =
        ClipTextModel::from_dir(&f.dir.join("model/text_encoder"), DType::F64, &Device::Cpu)
            .unwrap();
    let inj = ids(&te["injected_input_ids"][0]);
    let placeholder = te["placeholder_id"].as_u64().unwrap() as u32;
    let ids_t = Tensor::from_vec(inj.clone(), (1, inj.len()), &Device::Cpu).unwrap();
    let start = f.tensors["learned_embedding"]
        .reshape(32)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let weight = Tensor::randn(0f64, 1.0, (1, inj.len(), 32), &Device::Cpu).unwrap();
    let loss_of = |row: &Tensor| -> Tensor {
        let out = model
            .forward_embeds(&model.embed(&ids_t, &[(placeholder, row.clone())]).unwrap())
            .unwrap();
        (out * &weight).unwrap().sum_all().unwrap()
    };
    let var = candle_core::Var::from_tensor(&start).unwrap();
    let grads = loss_of(var.as_tensor()).backward().unwrap();
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .expect("a gradient reaches the embedding")
        .to_vec1()
        .unwrap();
    assert!(g.iter().any(|v| v.abs() > 1e-6), "gradient is zero");
    let base: Vec<f64> = start.to_vec1().unwrap();
    let eps = 1e-4f64;
    for k in [0usize, 7, 19, 31] {
        let mut plus = base.clone();
        plus[k] += eps;
        let mut minus = base.clone();
        minus[k] -= eps;
        let lp = loss_of(&Tensor::new(plus, &Device::Cpu).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        let lm = loss_of(&Tensor::new(minus, &Device::Cpu).unwrap())
            .to_scalar::<f64>()
            .unwrap();
        let fd = (lp - lm) / (2.0 * eps);
        let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(
            (fd - g[k]).abs() <= 1e-4 * scale,
            "component {k}: autograd {} vs finite difference {fd}",
            g[k]
        );
    }
}
