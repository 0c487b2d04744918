//! Odd and broken image files: converted explicitly to RGB8, or reported with their path.

use super::util::*;

fn fixtures_project() -> Project {
    let p = Project::empty();
    let src = repo().join("tests/fixtures/images");
    std::fs::create_dir_all(p.path("imgs")).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x != "json" && x != "py") {
            std::fs::copy(&path, p.path("imgs").join(path.file_name().unwrap())).unwrap();
        }
    }
    p
}

fn pipeline(on_error: &str, alpha: &str) -> String {
    format!("[pipeline]\nname = \"odd\"\n[nodes.imgs]\nkind = \"images\"\npath = \"imgs\"\non_error = \"{on_error}\"\nalpha = \"{alpha}\"\n")
}

#[test]
fn undecodable_files_fail_the_node_naming_each_file() {
    let p = fixtures_project();
    p.write("p.toml", &pipeline("fail", "drop"));
    let out = p.nsync(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for f in ["truncated.jpg", "not_an_image.jpg", "empty.png"] {
        assert!(err.contains(f), "{f} not named in:\n{err}");
    }
    assert!(err.contains("on_error = \"skip\""), "{err}");
    // The good images were committed: with `skip` only the bad ones are left out, and the
    // decodable ones come from the cache.
    p.write("p.toml", &pipeline("skip", "drop"));
    let out = p.nsync(&["run", "p.toml", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = summary(&out);
    let n = &s["nodes"]["imgs"];
    assert_eq!(n["items_rejected"], 3, "{s}");
    assert_eq!(n["items_computed"], 0, "rejections are cached too: {s}");
    assert!(
        text(&out.stdout).contains("skipped item `truncated`"),
        "{}",
        text(&out.stdout)
    );
    // Back to `fail`: the cached result that left items out is not accepted silently.
    p.write("p.toml", &pipeline("fail", "drop"));
    let out = p.nsync(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("empty.png"),
        "{}",
        text(&out.stderr)
    );
}

fn exported(p: &Project, alpha: &str) -> std::path::PathBuf {
    p.write("p.toml", &pipeline("skip", alpha));
    assert!(p.nsync(&["run", "p.toml"]).status.success());
    let dir = p.path(&format!("out-{alpha}"));
    let out = p.nsync(&["export", "p.toml", "imgs", "--to", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

fn rgb_sum(path: &std::path::Path) -> (image::RgbImage, u64) {
    let img = image::open(path).unwrap();
    assert!(
        matches!(img, image::DynamicImage::ImageRgb8(_)),
        "{} is stored as RGB8",
        path.display()
    );
    let img = img.to_rgb8();
    let sum = img.as_raw().iter().map(|&v| v as u64).sum();
    (img, sum)
}

#[test]
fn every_colour_model_becomes_the_rgb8_that_pillow_gives() {
    let p = fixtures_project();
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/images/expected_rgb.json")).unwrap(),
    )
    .unwrap();
    let out = exported(&p, "drop");
    // Lossless sources: exactly Pillow's `convert("RGB")` (16-bit: round(v / 257)).
    for (stem, key) in [
        ("gray", "sum"),
        ("la", "sum"),
        ("rgba", "sum"),
        ("palette", "sum"),
        ("gray16", "sum_scaled"),
        ("rgb16", "sum_scaled"),
    ] {
        let e = &expected[format!("{stem}.png")];
        let (img, sum) = rgb_sum(&out.join(format!("{stem}.png")));
        assert_eq!((img.width(), img.height()), (32, 32));
        assert_eq!(sum, e[key].as_u64().unwrap(), "{stem}");
    }
    let e = &expected["gray.png"];
    let (img, _) = rgb_sum(&out.join("gray.png"));
    assert_eq!(
        img.get_pixel(15, 20).0.to_vec(),
        serde_json::from_value::<Vec<u8>>(e["pixel_15_20"].clone()).unwrap()
    );
    // JPEG decoders may differ by rounding; CMYK must not come out inverted.
    for stem in ["rgb", "cmyk"] {
        let e = &expected[format!("{stem}.jpg")];
        let (img, sum) = rgb_sum(&out.join(format!("{stem}.png")));
        let want = e["sum"].as_u64().unwrap() as f64;
        assert!(
            (sum as f64 - want).abs() / want < 0.01,
            "{stem}: sum {sum} vs Pillow {want}"
        );
        let px = img.get_pixel(0, 0).0;
        let wpx: Vec<u8> = serde_json::from_value(e["pixel_0_0"].clone()).unwrap();
        for c in 0..3 {
            assert!(
                (px[c] as i32 - wpx[c] as i32).abs() <= 6,
                "{stem} pixel (0,0) {px:?} vs Pillow {wpx:?}"
            );
        }
    }
}

#[test]
fn alpha_can_be_composited_over_white() {
    let p = fixtures_project();
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/images/expected_rgb.json")).unwrap(),
    )
    .unwrap();
    let out = exported(&p, "white");
    for stem in ["rgba", "la"] {
        let (_, sum) = rgb_sum(&out.join(format!("{stem}.png")));
        assert_eq!(
            sum,
            expected[format!("{stem}.png")]["sum_over_white"]
                .as_u64()
                .unwrap(),
            "{stem}"
        );
    }
}

#[test]
fn a_missing_image_folder_is_a_clear_error() {
    let p = Project::empty();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"x\"\n[nodes.imgs]\nkind = \"images\"\npath = \"nowhere\"\n",
    );
    let out = p.nsync(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn pipeline_defaults_apply_to_every_node_of_a_kind() {
    let p = fixtures_project();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"odd\"\n[pipeline.defaults.images]\non_error = \"skip\"\n[nodes.imgs]\nkind = \"images\"\npath = \"imgs\"\n[nodes.strict]\nkind = \"images\"\npath = \"imgs\"\non_error = \"fail\"\n",
    );
    let s = p.run_json("p.toml", &[], 1);
    assert_eq!(s["nodes"]["imgs"]["status"], "executed", "{s}");
    assert_eq!(s["nodes"]["imgs"]["items_rejected"], 3, "{s}");
    assert_eq!(
        s["nodes"]["strict"]["status"], "failed",
        "the node's own value wins: {s}"
    );
}
