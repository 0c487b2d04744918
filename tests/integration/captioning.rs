//! The captioning stage through the binary: the `caption` node with the tiny captioner,
//! human overrides that rerun exactly their item downstream, and `nsync caption`.

use super::util::*;

const PIPELINE: &str = r#"
[pipeline]
name = "captioning"

[nodes.pics]
kind = "images"
path = "data/pics"

[nodes.captioner]
kind = "tiny_captioner"
seed = 0

[nodes.captions]
kind = "caption"
inputs = { images = "pics", model = "captioner" }
max_new_tokens = 8
"#;

const DOWNSTREAM: &str = r#"
[nodes.prompts]
kind = "prompt_template"
inputs = { caption = "captions" }
template = "{caption} in the style of painting"
"#;

/// The stems of the three test paintings, copied into `data/pics`.
fn three_paintings(p: &Project) -> Vec<String> {
    let src = repo().join("pipelines/data/monet/test");
    let mut stems: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "jpg"))
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    stems.truncate(3);
    assert_eq!(stems.len(), 3);
    std::fs::create_dir_all(p.path("data/pics")).unwrap();
    for s in &stems {
        std::fs::copy(
            src.join(format!("{s}.jpg")),
            p.path(&format!("data/pics/{s}.jpg")),
        )
        .unwrap();
    }
    stems
}

fn exported(p: &Project, node: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let to = format!("out-{node}");
    let _ = std::fs::remove_dir_all(p.path(&to));
    let out = p.nsync(&["export", "c.toml", node, "--to", &to]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    read_tree(&p.path(&to))
}

#[test]
fn an_override_recomputes_exactly_its_item_downstream() {
    let p = Project::empty();
    let stems = three_paintings(&p);
    p.write("c.toml", &format!("{PIPELINE}{DOWNSTREAM}"));
    let s = p.run_ok("c.toml");
    assert_eq!(node(&s, "captions"), ("executed".into(), 3, 0));
    assert_eq!(node(&s, "prompts"), ("executed".into(), 3, 0));
    let before = exported(&p, "captions");
    assert!(
        !before[&format!("{}.txt", stems[0])].is_empty(),
        "the tiny model writes words"
    );

    // One caption fixed by hand: only that item reruns, here and downstream.
    let fixed = "a harbour at   dawn\n";
    let line = serde_json::json!({ "item": stems[1], "caption": fixed });
    p.write("fixes.jsonl", &format!("{line}\n"));
    p.write(
        "c.toml",
        &format!("{PIPELINE}overrides = \"fixes.jsonl\"\n{DOWNSTREAM}"),
    );
    let s = p.run_ok("c.toml");
    assert_eq!(node(&s, "captions"), ("executed".into(), 1, 2), "{s}");
    assert_eq!(node(&s, "prompts"), ("executed".into(), 1, 2), "{s}");
    let after = exported(&p, "captions");
    assert_eq!(after[&format!("{}.txt", stems[1])], b"a harbour at dawn");
    for s in [&stems[0], &stems[2]] {
        let f = format!("{s}.txt");
        assert_eq!(after[&f], before[&f], "{f} keeps the model's caption");
    }
    let prompts = exported(&p, "prompts");
    assert_eq!(
        prompts[&format!("{}.txt", stems[1])],
        b"a harbour at dawn in the style of painting"
    );

    // A no-op rerun computes nothing; an override folder with the same text neither.
    assert_eq!(node(&p.run_ok("c.toml"), "captions").0, "cached");
    p.write(&format!("fixes/{}.txt", stems[1]), "a harbour at dawn");
    p.write(
        "c.toml",
        &format!("{PIPELINE}overrides = \"fixes\"\n{DOWNSTREAM}"),
    );
    let s = p.run_ok("c.toml");
    assert_eq!(node(&s, "captions").0, "cached", "{s}");
    assert_eq!(node(&s, "prompts").0, "cached", "{s}");
}

fn tiny_model(p: &Project) {
    let out = p.nsync(&["model", "init-tiny", "blip", "--kind", "captioner"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ] {
        assert!(p.path("blip").join(f).is_file(), "{f}");
    }
}

#[test]
fn caption_command_writes_json_lines() {
    let p = Project::empty();
    tiny_model(&p);
    let stems = three_paintings(&p);
    let images: Vec<String> = stems.iter().map(|s| format!("data/pics/{s}.jpg")).collect();
    let mut args = vec![
        "caption",
        "--model",
        "blip",
        "--max-new-tokens",
        "6",
        "--json",
    ];
    args.extend(images.iter().map(String::as_str));
    let out = p.nsync(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, image) in lines.iter().zip(&images) {
        assert_eq!(line["image"], image.as_str());
        assert!(line["caption"].is_string(), "{line}");
        let ids = line["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 6, "{line}");
    }
    // Plain output: one caption per line, the same captions.
    let plain_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let plain = p.nsync(&plain_args);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let texts: Vec<String> = text(&plain.stdout).lines().map(String::from).collect();
    let json_texts: Vec<String> = lines
        .iter()
        .map(|l| l["caption"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, json_texts);
}

#[test]
fn caption_command_names_a_bad_image() {
    let p = Project::empty();
    tiny_model(&p);
    p.write("broken.png", "not an image");
    let out = p.nsync(&["caption", "--model", "blip", "broken.png"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("broken.png"), "{err}");
    assert!(err.contains("not a recognised image format"), "{err}");
}
