//! `nsync sample`: one image from a prompt, outside any pipeline (the same sampler as the
//! `sd_sample` node).

use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::DType;
use nsync_nodes::diffusion::lora::Lora;
use nsync_nodes::diffusion::pipeline::StableDiffusion;
use nsync_nodes::diffusion::precision::SampleDtype;
use nsync_nodes::diffusion::sampler::{
    decode, denoise, initial_latents, latent_shape, to_rgb8, SampleSettings,
};
use nsync_nodes::diffusion::schedulers::SchedulerKind;
use nsync_nodes::diffusion::sd_sample::device;
use nsync_nodes::sources::decode::encode_png;

use crate::cli::SampleArgs;

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .with_context(|| format!("--size {s}: expected WIDTHxHEIGHT, e.g. 512x512"))?;
    Ok((
        w.trim().parse().context("--size width")?,
        h.trim().parse().context("--size height")?,
    ))
}

pub fn sample(a: SampleArgs) -> anyhow::Result<ExitCode> {
    let device = device();
    let dtype = SampleDtype::parse(&a.dtype).map_err(anyhow::Error::msg)?;
    let mut sd = StableDiffusion::from_dir(&a.model, dtype.dtype(), &device)?;
    for e in &a.embedding {
        let tokens = sd.load_embeddings(e)?;
        eprintln!("loaded {} from {}", tokens.join(", "), e.display());
    }
    if let Some(f) = &a.lora {
        let lora = Lora::load(f, sd.unet.dtype(), &device)?;
        let n = lora.layers.len();
        sd.unet
            .set_lora(Some(lora))
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        eprintln!("loaded LoRA weights for {n} layers from {}", f.display());
    }
    let native = sd
        .unet
        .config
        .sample_size
        .map_or(512, |s| s * sd.vae_scale());
    let (width, height) = match &a.size {
        Some(s) => parse_size(s)?,
        None => (native, native),
    };
    let scheduler = match a.scheduler.as_deref() {
        Some(k) => Some(serde_json::from_value::<SchedulerKind>(
            serde_json::Value::String(k.into()),
        )?),
        None => None,
    };
    let settings = SampleSettings {
        scheduler,
        steps: a.steps,
        guidance: a.guidance,
        width,
        height,
        eta: a.eta,
    };
    let latents = match &a.init_latents {
        Some(f) => {
            let mut t = candle_core::safetensors::load(f, &device)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let lat = t
                .remove("latents")
                .with_context(|| format!("{} has no tensor named `latents`", f.display()))?;
            let expected = latent_shape(&sd, &settings)?;
            if lat.dims() != expected {
                bail!(
                    "{}: `latents` has shape {:?}; {}x{} needs {:?}",
                    f.display(),
                    lat.dims(),
                    width,
                    height,
                    expected
                );
            }
            lat.to_dtype(DType::F32)?
        }
        None => initial_latents(&sd, &settings, a.seed)?,
    };
    let pe = sd.encode_prompts(&[a.prompt.as_str()])?;
    let ne = sd.encode_prompts(&[a.negative_prompt.as_str()])?;
    let out = denoise(
        &sd,
        &settings,
        &pe,
        &ne,
        &latents,
        &[a.seed],
        &mut |i, n| {
            if i == n || i % 10 == 0 {
                eprintln!("step {i}/{n}");
            }
        },
    )?;
    let img = decode(&sd, &out)?.get(0)?;
    let png = encode_png(&to_rgb8(&img)?);
    let tmp = a.out.with_extension("png.tmp");
    std::fs::write(&tmp, png).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
