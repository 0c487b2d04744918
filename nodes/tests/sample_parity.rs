//! A full guided sample (prompt, negative prompt, given initial latents) against diffusers'
//! `StableDiffusionPipeline` on the tiny fixtures: the final image within 2e-3 in [0, 1]
//! pixels, and every intermediate latent.

mod common;

use candle_core::{DType, Device};
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::diffusion::sampler::{decode, denoise, SampleSettings};

use common::{max_abs, Fixture};

fn sample_matches_diffusers(variant: &str) {
    let f = Fixture::load(variant);
    let t = &f.tensors;
    let s = &f.json["sample"];
    let sd = StableDiffusion::from_dir(&f.dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    // Our own prompt encoding agrees with the pipeline's.
    let prompt = sd.encode_prompts(&[s["prompt"].as_str().unwrap()]).unwrap();
    let negative = sd
        .encode_prompts(&[s["negative_prompt"].as_str().unwrap()])
        .unwrap();
    assert!(max_abs(&prompt, &t["sample_prompt_embeds"]) < 1e-4);
    assert!(max_abs(&negative, &t["sample_negative_prompt_embeds"]) < 1e-4);
    let settings = SampleSettings {
        scheduler: None,
        steps: s["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: s["guidance_scale"].as_f64().unwrap(),
        width: 64,
        height: 64,
        eta: 0.0,
    };
    let mut calls = 0;
    let latents = denoise(
        &sd,
        &settings,
        &prompt,
        &negative,
        &t["sample_init_latents"],
        &[0],
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, s["num_unet_calls"].as_u64().unwrap() as usize);
    let err = max_abs(&latents, &t["sample_final_latents"]);
    assert!(err < 1e-3, "{variant}: final latents differ by {err}");
    let image = decode(&sd, &latents)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let err = max_abs(&image, &t["sample_image"]);
    assert!(
        err <= 2e-3,
        "{variant}: image differs by {err} (max, in [0,1] pixels)"
    );
}

#[test]
fn guided_sample_sd15_pndm() {
    sample_matches_diffusers("sd15");
}

#[test]
fn guided_sample_sd2_ddim_v_prediction() {
    sample_matches_diffusers("sd2");
}
