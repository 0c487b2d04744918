//! `write_tiny` produces a complete diffusers-layout model that our loaders read strictly
//! (every tensor expected, none extra), deterministically from its seed.

use candle_core::{DType, Device, Tensor};
use nsync_nodes::diffusion::clip_text::ClipTextModel;
use nsync_nodes::diffusion::tiny::{write_tiny, TinyVariant};
use nsync_nodes::diffusion::unet::UNet;
use nsync_nodes::diffusion::vae::AutoencoderKl;
use nsync_nodes::diffusion::ClipTokenizer;

fn finite(t: &Tensor) -> bool {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

#[test]
fn tiny_models_load_run_and_are_deterministic() {
    for variant in [TinyVariant::Sd15, TinyVariant::Sd2] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("m");
        write_tiny(&dir, 3, variant).unwrap();
        let tok = ClipTokenizer::from_dir(&dir.join("tokenizer")).unwrap();
        let ids = tok
            .encode_padded("a harbour at dawn, in the style of painting")
            .unwrap();
        assert_eq!(ids.len(), 77);
        // Words are whole tokens, as with the real vocabulary.
        let short = tok
            .encode("coastal cliffs in the style of painting")
            .unwrap();
        assert_eq!(short.len(), 2 + 7, "{short:?}");
        let dev = Device::Cpu;
        let te = ClipTextModel::from_dir(&dir.join("text_encoder"), DType::F32, &dev).unwrap();
        let ctx = te
            .forward(&Tensor::from_vec(ids, (1, 77), &dev).unwrap())
            .unwrap();
        let unet = UNet::from_dir(&dir.join("unet"), DType::F32, &dev).unwrap();
        let lat = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &dev).unwrap();
        let t = Tensor::new(&[500f32], &dev).unwrap();
        let eps = unet.forward(&lat, &t, &ctx).unwrap();
        let vae = AutoencoderKl::from_dir(&dir.join("vae"), DType::F32, &dev).unwrap();
        let img = vae.decode(&lat).unwrap();
        assert_eq!(img.dims(), &[1, 3, 64, 64]);
        assert!(finite(&ctx) && finite(&eps) && finite(&img), "{variant:?}");
        // Same seed, same bytes; another seed, other weights.
        let again = d.path().join("again");
        write_tiny(&again, 3, variant).unwrap();
        let other = d.path().join("other");
        write_tiny(&other, 4, variant).unwrap();
        let f = "unet/diffusion_pytorch_model.safetensors";
        for same in [
            f,
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "text_encoder/model.safetensors",
        ] {
            assert_eq!(
                std::fs::read(dir.join(same)).unwrap(),
                std::fs::read(again.join(same)).unwrap(),
                "{same}"
            );
        }
        assert_ne!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(other.join(f)).unwrap()
        );
        assert!(
            write_tiny(&dir, 3, variant).is_err(),
            "never overwrites a model"
        );
    }
}
