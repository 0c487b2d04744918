//! The other commands: plan, explain, export, dag, runs, cache, schema, --only/--until.

use super::util::*;

#[test]
fn plan_shows_what_would_run_without_running() {
    let p = Project::demo();
    let out = p.nsync(&["plan", "pipelines/demo.toml", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"]["paintings"]["action"], "run");
    assert_eq!(v["nodes"]["paintings"]["items_to_compute"], 8);
    assert_eq!(v["nodes"]["captions"]["detail"], "run (after upstream)");
    let runs = p.nsync(&["runs", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&runs.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0,
        "plan records no run"
    );
    p.run_ok("pipelines/demo.toml");
    let out = p.nsync(&["plan", "pipelines/demo.toml"]);
    let table = text(&out.stdout);
    assert!(
        table.lines().skip(1).all(|l| l.contains("cached")),
        "{table}"
    );
}

#[test]
fn explain_gives_value_level_differences() {
    let p = Project::demo();
    let out = p.nsync(&["explain", "pipelines/demo.toml", "negative_prompts"]);
    assert!(
        text(&out.stdout).contains("upstream node `captions` will run first"),
        "{}",
        text(&out.stdout)
    );
    p.run_ok("pipelines/demo.toml");
    let out = p.nsync(&["explain", "pipelines/demo.toml", "negative_prompts"]);
    assert!(
        text(&out.stdout).contains("up to date"),
        "{}",
        text(&out.stdout)
    );
    // Change a parameter and one caption.
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &format!("{demo}\n[vars]\ngeneric = \"artwork\"\n"),
    );
    p.write(
        "pipelines/data/monet/train/011835cfbf.txt",
        "a changed caption",
    );
    // The caption node reruns one item; explain it and its downstream node.
    let out = p.nsync(&["explain", "pipelines/demo.toml", "captions"]);
    assert!(
        text(&out.stdout).contains("items: 1 of 8 changed, 0 added, 0 removed"),
        "{}",
        text(&out.stdout)
    );
    let out = p.nsync(&["explain", "pipelines/demo.toml", "negative_prompts"]);
    // captions is not cached in its new state, so the input is not known yet ...
    assert!(
        text(&out.stdout).contains("upstream node `captions` will run first"),
        "{}",
        text(&out.stdout)
    );
    p.run_json("pipelines/demo.toml", &["--until", "captions"], 0);
    // ... and once it is, the differences are by value and by item.
    let out = p.nsync(&[
        "explain",
        "pipelines/demo.toml",
        "negative_prompts",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"params.values.generic: \"painting\" → \"artwork\""),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"input caption: 1 of 8 items changed"),
        "{reasons:?}"
    );
    assert_eq!(v["status"], "will_run");
}

#[test]
fn export_writes_ordinary_files() {
    let p = Project::demo();
    let out = p.nsync(&["export", "pipelines/demo.toml", "paintings", "--to", "out"]);
    assert_eq!(out.status.code(), Some(1), "nothing to export before a run");
    assert!(
        text(&out.stderr).contains("nsync run"),
        "{}",
        text(&out.stderr)
    );
    p.run_ok("pipelines/demo.toml");
    let out = p.nsync(&["export", "pipelines/demo.toml", "paintings", "--to", "out"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("exported 8 file(s)"),
        "{}",
        text(&out.stdout)
    );
    let img = image::open(p.path("out/000c1e3bff.png")).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
    let out = p.nsync(&["export", "pipelines/demo.toml", "captions", "--to", "caps"]);
    assert!(out.status.success());
    let cap = std::fs::read_to_string(p.path("caps/000c1e3bff.txt")).unwrap();
    assert_eq!(
        cap,
        std::fs::read_to_string(p.path("pipelines/data/monet/train/000c1e3bff.txt"))
            .unwrap()
            .trim()
    );
    let out = p.nsync(&["export", "pipelines/demo.toml", "nodez", "--to", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dag_in_three_formats() {
    let p = Project::demo();
    let dot = text(
        &p.nsync(&["dag", "pipelines/demo.toml", "--format", "dot"])
            .stdout,
    );
    assert!(
        dot.contains("\"captions\" -> \"negative_prompts\""),
        "{dot}"
    );
    let mermaid = text(
        &p.nsync(&["dag", "pipelines/demo.toml", "--format", "mermaid"])
            .stdout,
    );
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("paintings -->|images| captions"),
        "{mermaid}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &p.nsync(&["dag", "pipelines/demo.toml", "--format", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 16);
    assert_eq!(json["edges"].as_array().unwrap().len(), 22);
}

#[test]
fn runs_are_recorded_and_shown() {
    let p = Project::demo();
    let s = p.run_ok("pipelines/demo.toml");
    let id = s["run_id"].as_str().unwrap();
    let list = text(&p.nsync(&["runs", "list"]).stdout);
    assert!(list.contains(id) && list.contains("demo"), "{list}");
    let show = p.nsync(&["runs", "show", "latest", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(r["run_id"], id);
    assert_eq!(r["status"], "ok");
    assert_eq!(r["nodes"]["captions"]["fingerprint"]["kind"], "captions");
    assert!(r["hardware"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(r["resolved"]["pipeline"]["name"], "demo");
    assert!(!p.nsync(&["runs", "show", "nope"]).status.success());
}

#[test]
fn gc_keeps_what_the_latest_run_needs() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    let demo = std::fs::read_to_string(p.path("pipelines/demo.toml")).unwrap();
    p.write(
        "pipelines/demo.toml",
        &format!("{demo}\n[vars]\ngeneric = \"artwork\"\n"),
    );
    p.run_ok("pipelines/demo.toml");
    let dry = p.nsync(&["cache", "gc", "--dry-run", "--grace", "0s", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert!(
        d["blobs_removed"].as_u64().unwrap() >= 8,
        "the old prompts are unreachable: {d}"
    );
    assert_eq!(d["runs_removed"], 1);
    let out = p.nsync(&["cache", "gc", "--grace", "0s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = p.run_ok("pipelines/demo.toml");
    for n in [
        "paintings",
        "captions",
        "negative_prompts",
        "test_paintings",
        "test_captions",
        "tiny_model",
        "negatives",
    ] {
        assert_eq!(node(&s, n).0, "cached", "{n} survived gc: {s}");
    }
    assert!(p.nsync(&["cache", "verify"]).status.success());
    let stats = text(&p.nsync(&["cache", "stats"]).stdout);
    assert!(stats.contains("runs       2"), "{stats}");
}

#[test]
fn gc_spares_recent_work_by_default() {
    let p = Project::demo();
    p.run_ok("pipelines/demo.toml");
    std::fs::remove_dir_all(p.cache().join("v1/runs")).unwrap();
    std::fs::create_dir(p.cache().join("v1/runs")).unwrap();
    let out = p.nsync(&["cache", "gc", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs_removed"], 0, "{v}");
    let s = p.run_ok("pipelines/demo.toml");
    assert_eq!(node(&s, "negative_prompts").0, "cached");
}

#[test]
fn only_and_until_select_nodes() {
    let p = Project::demo();
    let s = p.run_json("pipelines/demo.toml", &["--until", "captions"], 0);
    assert_eq!(node(&s, "captions").0, "executed");
    assert_eq!(node(&s, "paintings").0, "executed");
    assert_eq!(node(&s, "negative_prompts").0, "skipped");
    assert_eq!(node(&s, "test_paintings").0, "skipped");
    let s = p.run_json("pipelines/demo.toml", &["--only", "negative_prompts"], 0);
    assert_eq!(node(&s, "negative_prompts"), ("executed".into(), 8, 0));
    assert_eq!(node(&s, "captions").0, "skipped");
    let s = p.run_json("pipelines/demo.toml", &["--only", "test_captions"], 1);
    assert!(
        s["nodes"]["test_captions"]["error"]
            .as_str()
            .unwrap()
            .contains("not computed yet"),
        "{s}"
    );
    let out = p.nsync(&["run", "pipelines/demo.toml", "--only", "captons"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean `captions`?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_style_is_a_few_lines_on_a_shared_base() {
    let p = Project::demo();
    let s = p.run_ok("pipelines/vangogh.toml");
    assert_eq!(node(&s, "paintings"), ("executed".into(), 6, 0));
    let out = p.nsync(&[
        "export",
        "pipelines/vangogh.toml",
        "negative_prompts",
        "--to",
        "vg",
    ]);
    assert!(out.status.success());
    assert!(std::fs::read_to_string(p.path("vg/00179.txt"))
        .unwrap()
        .ends_with("in the style of painting"));
}

#[test]
fn cache_dir_comes_from_the_environment() {
    let p = Project::demo();
    let env_cache = p.path("env-cache");
    let out = std::process::Command::new(bin())
        .current_dir(p.dir.path())
        .env("NSYNC_CACHE_DIR", &env_cache)
        .args(["run", "pipelines/demo.toml", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(env_cache.join("CACHEDIR.TAG").exists());
    assert!(env_cache.join("v1/runs").read_dir().unwrap().count() == 1);
}

#[test]
fn a_foreign_folder_is_never_used_as_a_cache() {
    let p = Project::demo();
    p.write("thesis/chapter1.tex", "precious");
    let out = std::process::Command::new(bin())
        .current_dir(p.dir.path())
        .args(["--cache-dir", "thesis", "run", "pipelines/demo.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not an nsync cache"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(p.path("thesis")).unwrap().count(), 1);
}

#[test]
fn the_committed_schema_matches_the_code() {
    let out = std::process::Command::new(bin())
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo().join("schema/pipeline.schema.json")).unwrap();
    assert_eq!(
        text(&out.stdout),
        committed,
        "schema/pipeline.schema.json is out of date: run `cargo run -- schema > schema/pipeline.schema.json`"
    );
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    for (name, prop) in v["properties"]["pipeline"]["properties"]
        .as_object()
        .unwrap()
    {
        assert!(
            prop.get("description").is_some() && prop.get("examples").is_some(),
            "pipeline.{name}"
        );
    }
    let kinds = v["properties"]["nodes"]["additionalProperties"]["oneOf"]
        .as_array()
        .unwrap();
    assert_eq!(kinds.len(), nsync_kinds().len());
    // Every parameter is documented and has an example.
    for k in kinds {
        for (name, prop) in k["properties"].as_object().unwrap() {
            assert!(
                prop.get("description").is_some(),
                "{} `{name}` has no description",
                k["title"]
            );
            if !["kind", "inputs"].contains(&name.as_str()) {
                assert!(
                    prop.get("examples").is_some(),
                    "{} `{name}` has no example",
                    k["title"]
                );
            }
        }
    }
}

/// Every node kind the binary registers.
fn nsync_kinds() -> Vec<&'static str> {
    vec![
        "images",
        "captions",
        "caption",
        "tiny_captioner",
        "prompt_template",
        "tiny_sd",
        "sd_sample",
        "contrastive_train",
        "evaluate",
        "tiny_evaluators",
    ]
}
