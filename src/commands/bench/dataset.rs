//! The generated data set: small image + caption items, and the pipeline that reads them.
//!
//! Every item is an 8×8 RGB PNG plus a one-line caption, named by a zero-padded index so
//! that nsync and DVC see the same files in the same order. The bytes are deterministic
//! (blake3's extendable output, seeded by the item's index), so two runs of the benchmark
//! hash and process exactly the same data.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use rayon::prelude::*;

/// Width and height of the generated images, in pixels.
const SIDE: u32 = 8;

/// The pipeline timed by the benchmark: images → captions → prompt_template, per item.
pub(super) const PIPELINE: &str = r#"# Written by `nsync bench engine`.
[pipeline]
name = "bench-engine"

[nodes.images]
kind = "images"
path = "data/img"

[nodes.captions]
kind = "captions"
dir = "data/img"
inputs = { images = "images" }

[nodes.prompt_template]
kind = "prompt_template"
template = "{caption} in the style of painting"
inputs = { caption = "captions" }
"#;

const ADJECTIVES: &[&str] = &[
    "quiet", "sunlit", "misty", "stormy", "golden", "pale", "crowded", "lonely", "frozen",
    "blooming", "ancient", "windy",
];
const SUBJECTS: &[&str] = &[
    "harbour",
    "garden",
    "cathedral",
    "haystack",
    "bridge",
    "orchard",
    "river bank",
    "street",
    "cliff",
    "field of poppies",
    "water lily pond",
    "village",
];

/// Fill `buf` with pseudo-random bytes: blake3's extendable output for `domain` and `index`.
/// The same arguments always give the same bytes.
pub(super) fn pseudo_random(domain: &str, index: u64, buf: &mut [u8]) {
    blake3::Hasher::new()
        .update(domain.as_bytes())
        .update(&index.to_le_bytes())
        .finalize_xof()
        .fill(buf);
}

/// The image and caption of item `i`: an 8×8 RGB PNG whose first pixel encodes `i` (so
/// every image differs) and a one-line caption.
fn item_files(i: usize) -> anyhow::Result<(Vec<u8>, String)> {
    let mut rgb = vec![0u8; (SIDE * SIDE * 3) as usize];
    pseudo_random("nsync bench image", i as u64, &mut rgb);
    rgb[0] = (i >> 16) as u8;
    rgb[1] = (i >> 8) as u8;
    rgb[2] = i as u8;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&rgb, SIDE, SIDE, ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot encode the image of item {i}"))?;
    let caption = format!(
        "a {} {} at dusk, study number {i}\n",
        ADJECTIVES[i % ADJECTIVES.len()],
        SUBJECTS[(i / ADJECTIVES.len()) % SUBJECTS.len()]
    );
    Ok((png, caption))
}

/// The file stem of item `i`.
pub(super) fn item_id(i: usize) -> String {
    format!("{i:05}")
}

/// Write items `range` into each of `dirs`; with `settled`, date them an hour back, like a
/// data set that has been lying there (a file younger than 2 s is never memoised).
pub(super) fn write_items(
    dirs: &[PathBuf],
    range: std::ops::Range<usize>,
    settled: bool,
) -> anyhow::Result<()> {
    for d in dirs {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let past = SystemTime::now() - Duration::from_secs(3600);
    range.into_par_iter().try_for_each(|i| {
        let (png, caption) = item_files(i)?;
        let id = item_id(i);
        for d in dirs {
            for (name, bytes) in [
                (format!("{id}.png"), png.as_slice()),
                (format!("{id}.txt"), caption.as_bytes()),
            ] {
                let p = d.join(name);
                let f = std::fs::File::create(&p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                (&f).write_all(bytes)
                    .with_context(|| format!("cannot write {}", p.display()))?;
                if settled {
                    f.set_modified(past)
                        .with_context(|| format!("cannot set the time of {}", p.display()))?;
                }
            }
        }
        anyhow::Ok(())
    })
}
