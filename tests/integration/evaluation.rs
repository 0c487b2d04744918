//! The evaluator through the real binary: the `evaluate` node (per-image feature caching,
//! the metrics table) and `nsync eval`, on random-weight extractors.

use serde_json::Value;

use super::util::{make_images, node, text, Project};

const PIPELINE: &str = r#"
[pipeline]
name = "eval"
seed = 3

[nodes.real]
kind = "images"
path = "real"

[nodes.fake]
kind = "images"
path = "fake"

[nodes.evaluators]
kind = "tiny_evaluators"

[nodes.metrics]
kind = "evaluate"
inputs = { real = "real", mine = "fake", copy = "real", models = "evaluators" }
bootstrap = 20
"#;

/// The `status` messages of `node` in a `--json` run's events.
fn statuses(stdout: &str, node: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "status" && e["node"] == node)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn run(p: &Project) -> (Value, String) {
    let out = p.nsync(&["run", "eval.toml", "--json"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (summary, stdout)
}

fn table(p: &Project) -> Value {
    let out = p.path("out");
    let _ = std::fs::remove_dir_all(&out);
    let o = p.nsync(&["export", "eval.toml", "metrics", "--to", "out"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(
        md.contains("| Method | Images | CSD ↑ | CMMD ↓ | KID ↓ | FID ↓ |"),
        "{md}"
    );
    serde_json::from_slice(&std::fs::read(out.join("metrics/metrics.json")).unwrap()).unwrap()
}

#[test]
fn evaluate_caches_features_per_image_and_fills_the_table() {
    let p = Project::empty();
    make_images(&p.path("real"), 3, 40, 0);
    make_images(&p.path("fake"), 3, 48, 10);
    p.write("eval.toml", PIPELINE);

    let (s, stdout) = run(&p);
    assert_eq!(node(&s, "metrics").0, "executed");
    // 6 distinct images (the `copy` set repeats `real`), each extracted once per network.
    let st = statuses(&stdout, "metrics");
    assert!(
        st.iter()
            .any(|m| m == "inception: loading weights (6 of 6 images to extract)"),
        "{st:?}"
    );
    let t = table(&p);
    assert_eq!(t["real"]["images"], 3);
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["set"].as_str(), rows[1]["set"].as_str()),
        (Some("mine"), Some("copy"))
    );
    for r in rows {
        for m in ["csd", "cmmd", "kid", "fid"] {
            let v = &r["values"][m];
            assert!(v["value"].as_f64().unwrap().is_finite(), "{m}: {v}");
            let ci = v["ci"].as_array().unwrap();
            assert!(
                ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap(),
                "{m}: {v}"
            );
        }
    }
    // A set against itself: FID ~0, CSD 1-ish (cosine of each image with the mean), CMMD 0.
    let copy = &rows[1]["values"];
    assert!(
        copy["fid"]["value"].as_f64().unwrap().abs() < 1e-6,
        "{copy}"
    );
    assert!(
        copy["cmmd"]["value"].as_f64().unwrap().abs() < 1e-6,
        "{copy}"
    );
    assert!(rows[0]["values"]["fid"]["value"].as_f64().unwrap() > 1e-3);
    assert_eq!(t["settings"]["kid"]["subset_size"], 3);
    assert!(
        t["notes"][0].as_str().unwrap().contains("reduced to 3"),
        "{t}"
    );

    // Unchanged: the whole node is cached.
    let (s, _) = run(&p);
    assert_eq!(node(&s, "metrics").0, "cached");

    // One generated image more: the table is recomputed, one image's features extracted.
    make_images(&p.path("fake"), 1, 48, 20);
    let (s, stdout) = run(&p);
    assert_eq!(node(&s, "fake").1, 1);
    assert_eq!(node(&s, "metrics").0, "executed");
    let st = statuses(&stdout, "metrics");
    assert!(
        st.iter()
            .any(|m| m == "inception: loading weights (1 of 7 images to extract)"),
        "{st:?}"
    );
    assert_eq!(table(&p)["rows"][0]["images"], 4);

    // The cached features survive `cache gc` (the memo is reachable from the run).
    let o = p.nsync(&["cache", "gc", "--grace", "0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    p.write(
        "eval.toml",
        &PIPELINE.replace("bootstrap = 20", "bootstrap = 10"),
    );
    let (_, stdout) = run(&p);
    let st = statuses(&stdout, "metrics");
    assert!(!st.iter().any(|m| m.contains("loading weights")), "{st:?}");
}

#[test]
fn evaluate_needs_weights_for_the_metrics_it_computes() {
    let p = Project::empty();
    make_images(&p.path("real"), 2, 32, 0);
    p.write(
        "eval.toml",
        "[pipeline]\nname = \"e\"\n[nodes.real]\nkind = \"images\"\npath = \"real\"\n[nodes.metrics]\nkind = \"evaluate\"\ninputs = { real = \"real\", g = \"real\" }\nmetrics = [\"fid\"]\n",
    );
    let o = p.nsync(&["check", "eval.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("evaluate needs `inception` weights"), "{err}");
    assert!(err.contains("tiny_evaluators"), "{err}");
}

#[test]
fn eval_command_prints_one_json_table_and_explains_bad_input() {
    let p = Project::empty();
    make_images(&p.path("real"), 3, 40, 0);
    make_images(&p.path("fake"), 4, 40, 7);
    let o = p.nsync(&["model", "init-tiny", "ev", "--kind", "evaluators"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let weights = [
        "--inception",
        "ev/inception.safetensors",
        "--clip",
        "ev/clip",
        "--csd",
        "ev/csd.safetensors",
    ];
    let mut args = vec!["eval", "--real", "real", "--fake", "gen=fake", "--json"];
    args.extend(weights);
    let o = p.nsync(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let t: Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(t["rows"][0]["set"], "gen");
    assert_eq!(t["rows"][0]["images"], 4);
    for m in ["csd", "cmmd", "kid", "fid"] {
        assert!(t["rows"][0]["values"][m]["value"]
            .as_f64()
            .unwrap()
            .is_finite());
        assert!(t["settings"][m]["network_id"].is_string(), "{t}");
    }

    // Only FID: no other weights needed.
    let o = p.nsync(&[
        "eval",
        "--real",
        "real",
        "--fake",
        "fake",
        "--metrics",
        "fid",
        "--inception",
        "ev/inception.safetensors",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // Missing weights name the flag.
    let o = p.nsync(&[
        "eval",
        "--real",
        "real",
        "--fake",
        "fake",
        "--metrics",
        "cmmd",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("--clip"), "{}", text(&o.stderr));

    // An empty folder, a single image, a truncated file: clear errors, no panic.
    std::fs::create_dir_all(p.path("empty")).unwrap();
    let o = p.nsync(&[
        "eval",
        "--real",
        "real",
        "--fake",
        "empty",
        "--metrics",
        "fid",
        "--inception",
        "ev/inception.safetensors",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("no images"), "{}", text(&o.stderr));

    make_images(&p.path("one"), 1, 40, 30);
    let o = p.nsync(&[
        "eval",
        "--real",
        "real",
        "--fake",
        "one",
        "--metrics",
        "fid",
        "--inception",
        "ev/inception.safetensors",
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(err.contains("at least 2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let png = std::fs::read(p.path("fake/img00007.png")).unwrap();
    std::fs::write(p.path("fake/img00007.png"), &png[..png.len() / 2]).unwrap();
    let o = p.nsync(&[
        "eval",
        "--real",
        "real",
        "--fake",
        "fake",
        "--metrics",
        "fid",
        "--inception",
        "ev/inception.safetensors",
    ]);
    assert_ne!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    assert!(err.contains("img00007.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
