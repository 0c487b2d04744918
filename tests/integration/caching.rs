//! Incremental behaviour: what reruns, what is reused, and damaged caches.

use super::util::*;

#[test]
fn first_run_computes_everything_then_a_rerun_is_a_no_op() {
    let p = Project::demo();
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "paintings"), ("executed".into(), 8, 0));
    assert_eq!(node(&s, "captions"), ("executed".into(), 8, 0));
    assert_eq!(node(&s, "negative_prompts"), ("executed".into(), 8, 0));
    assert_eq!(node(&s, "test_paintings"), ("executed".into(), 3, 0));
    assert_eq!(node(&s, "tiny_model"), ("executed".into(), 1, 0));
    assert_eq!(node(&s, "negatives"), ("executed".into(), 8, 0));
    let again = p.run_ok("pipelines/demo.toml");
    for n in [
        "paintings",
        "captions",
        "negative_prompts",
        "test_paintings",
        "test_captions",
        "tiny_model",
        "negatives",
    ] {
        let (status, computed, _) = node(&again, n);
        assert_eq!((status.as_str(), computed), ("cached", 0), "{n}: {again}");
    }
}

#[test]
fn a_changed_parameter_reruns_only_that_node_and_its_dependents() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &format!("{demo}\n[vars]\ngeneric = \"artwork\"\n"),
    );
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "negative_prompts"), ("executed".into(), 8, 0));
    assert_eq!(
        node(&s, "negatives"),
        ("executed".into(), 8, 0),
        "new prompts, new negative images"
    );
    for n in [
        "paintings",
        "captions",
        "test_paintings",
        "test_captions",
        "tiny_model",
    ] {
        assert_eq!(node(&s, n).0, "cached", "{n}");
    }
    let out = p.nsync(&[
        "export",
        "pipelines/demo.toml",
        "negative_prompts",
        "--to",
        "out",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = std::fs::read_to_string(p.path("out/000c1e3bff.txt")).unwrap();
    assert!(t.ends_with("in the style of artwork"), "{t}");
}

#[test]
fn adding_five_images_computes_only_five_items_per_node() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let from = p.path("pipelines/data/vangogh/train");
    let to = p.path("pipelines/data/monet/train");
    let mut added = 0;
    for e in std::fs::read_dir(&from).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "jpg") && added < 5 {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            std::fs::copy(&path, to.join(format!("{stem}.jpg"))).unwrap();
            std::fs::copy(
                from.join(format!("{stem}.txt")),
                to.join(format!("{stem}.txt")),
            )
            .unwrap();
            added += 1;
        }
    }
    assert_eq!(added, 5);
    let s = p.run_ok("pipelines/demo.toml");
    for n in ["paintings", "captions", "negative_prompts", "negatives"] {
        assert_eq!(node(&s, n), ("executed".into(), 5, 8), "{n}: {s}");
    }
    assert_eq!(node(&s, "test_paintings").0, "cached");
}

#[test]
fn identical_output_stops_the_cascade() {
    let p = Project::empty();
    make_images(&p.path("data"), 4, 8, 0);
    let pipeline = |template: &str| {
        format!(
            "{}\n[nodes.shout]\nkind = \"prompt_template\"\ninputs = {{ prompt = \"negatives\" }}\ntemplate = \"{{prompt}}!\"\n",
            three_node_pipeline("cutoff", "data").replace("{caption} in the style of painting", template)
        )
    };
    p.write("p.toml", &pipeline("{caption} in the style of painting"));
    p.run_ok("p.toml");
    // Different template, same text: `negatives` reruns, `shout` does not.
    p.write(
        "p.toml",
        &pipeline("{caption} in the style of {g}").replace(
            "template = \"{caption} in the style of {g}\"",
            "template = \"{caption} in the style of {g}\"\nvalues = { g = \"painting\" }",
        ),
    );
    let s = p.run_ok("p.toml");
    assert_eq!(node(&s, "negatives"), ("executed".into(), 4, 0), "{s}");
    assert_eq!(node(&s, "shout"), ("cached".into(), 0, 4), "{s}");
}

/// The blob of item `item` of `node`, found through `export`'s manifest.
fn blob_of(p: &Project, pipeline: &str, node_name: &str, item: &str) -> std::path::PathBuf {
    let dir = p.path(&format!("export-{node_name}"));
    let out = p.nsync(&["export", pipeline, node_name, "--to", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let digest = m
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["item"] == item)
        .unwrap()["blake3"]
        .as_str()
        .unwrap()
        .to_string();
    p.cache().join("v1/blobs").join(&digest[..2]).join(&digest)
}

fn corrupt(path: &std::path::Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_corrupt_blob_is_detected_by_verify_and_recomputed() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let blob = blob_of(&p, "pipelines/demo.toml", "paintings", "000c1e3bff");
    let good = std::fs::read(&blob).unwrap();
    corrupt(&blob);
    let s = p.run_json("pipelines/demo.toml", &["--verify"], 0);
    assert_eq!(node(&s, "paintings"), ("executed".into(), 1, 7), "{s}");
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        good,
        "the blob was rewritten with the right content"
    );
    assert_eq!(node(&s, "captions").0, "cached");
}

#[test]
fn a_corrupt_input_read_by_a_node_is_quarantined_and_recomputed() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let blob = blob_of(&p, "pipelines/demo.toml", "captions", "000c1e3bff");
    corrupt(&blob);
    // Force negative_prompts to read every caption.
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &format!("{demo}\n[vars]\ngeneric = \"artwork\"\n"),
    );
    let out = p.nsync(&["run", "pipelines/demo.toml"]);
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("quarantined"),
        "{}",
        text(&out.stderr)
    );
    p.nsync(&[
        "export",
        "pipelines/demo.toml",
        "negative_prompts",
        "--to",
        "neg",
    ]);
    let caption =
        std::fs::read_to_string(p.path("pipelines/data/monet/train/000c1e3bff.txt")).unwrap();
    let neg = std::fs::read_to_string(p.path("neg/000c1e3bff.txt")).unwrap();
    assert_eq!(neg, format!("{} in the style of artwork", caption.trim()));
}

#[test]
fn cache_verify_reports_corruption_and_the_next_run_repairs_it() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let blob = blob_of(&p, "pipelines/demo.toml", "negative_prompts", "000c1e3bff");
    let good = std::fs::read(&blob).unwrap();
    corrupt(&blob);
    let out = p.nsync(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let hex = blob.file_name().unwrap().to_str().unwrap();
    assert!(text(&out.stdout).contains(hex), "{}", text(&out.stdout));
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(
        node(&s, "negative_prompts"),
        ("executed".into(), 1, 7),
        "{s}"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), good);
    assert!(p.nsync(&["cache", "verify"]).status.success());
}
