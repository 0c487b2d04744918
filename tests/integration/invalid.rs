//! Invalid pipelines: exit code 2, the file, line and column, and a hint.

use super::util::*;

const GOOD: &str = r#"[pipeline]
name = "t"

[nodes.paintings]
kind = "images"
path = "data"

[nodes.captions]
kind = "captions"
inputs = { images = "paintings" }
dir = "data"

[nodes.negatives]
kind = "prompt_template"
inputs = { caption = "captions" }
template = "{caption} in the style of painting"
"#;

/// Check `text` and expect exit 2 with every `needle` on stderr.
fn rejects(text_: &str, needles: &[&str]) {
    let p = Project::empty();
    p.write("p.toml", text_);
    for cmd in ["check", "run", "plan"] {
        let out = p.nsync(&[cmd, "p.toml"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        for n in needles {
            assert!(err.contains(n), "{cmd}: expected `{n}` in:\n{err}");
        }
    }
}

#[test]
fn the_good_pipeline_is_valid() {
    let p = Project::empty();
    p.write("p.toml", GOOD);
    let out = p.nsync(&["check", "p.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn malformed_toml() {
    rejects(
        &GOOD.replace("name = \"t\"", "name = \"t"),
        &["p.toml:2:", "invalid TOML"],
    );
}

#[test]
fn unknown_field() {
    rejects(
        &GOOD.replace("dir = \"data\"", "dri = \"data\""),
        &["p.toml:11:1", "unknown field `dri`", "did you mean `dir`?"],
    );
}

#[test]
fn unknown_node_kind() {
    rejects(
        &GOOD.replace("kind = \"images\"", "kind = \"imagez\""),
        &[
            "p.toml:5:8",
            "unknown node kind `imagez`",
            "did you mean `images`?",
        ],
    );
}

#[test]
fn unknown_input_node() {
    let t = format!("{GOOD}\n[nodes.shout]\nkind = \"prompt_template\"\ninputs = {{ p = \"negativs\" }}\ntemplate = \"{{p}}!\"\n");
    rejects(
        &t,
        &[
            "p.toml:20:",
            "unknown node `negativs`",
            "did you mean `negatives`?",
        ],
    );
}

#[test]
fn unknown_input_port() {
    rejects(
        &GOOD.replace(
            "inputs = { images = \"paintings\" }",
            "inputs = { image = \"paintings\" }",
        ),
        &[
            "p.toml:10:",
            "has no input `image`",
            "did you mean `images`?",
        ],
    );
}

#[test]
fn unknown_output_port() {
    rejects(
        &GOOD.replace(
            "inputs = { caption = \"captions\" }",
            "inputs = { caption = \"captions.text\" }",
        ),
        &[
            "p.toml:15:",
            "has no output `text`",
            "did you mean `texts`?",
        ],
    );
}

#[test]
fn port_type_mismatch() {
    rejects(
        &GOOD.replace(
            "inputs = { caption = \"captions\" }",
            "inputs = { caption = \"paintings\" }",
        ),
        &[
            "p.toml:15:",
            "type mismatch",
            "takes texts",
            "produces images",
        ],
    );
}

#[test]
fn cycle_is_named() {
    let t = format!("{GOOD}\n[nodes.a]\nkind = \"prompt_template\"\ninputs = {{ x = \"b\" }}\ntemplate = \"{{x}}\"\n\n[nodes.b]\nkind = \"prompt_template\"\ninputs = {{ x = \"a\" }}\ntemplate = \"{{x}}\"\n");
    rejects(&t, &["cycle: a → b → a", "p.toml:25:"]);
}

#[test]
fn duplicate_node_name() {
    let t = format!("{GOOD}\n[nodes.captions]\nkind = \"captions\"\n");
    rejects(&t, &["p.toml:18:", "duplicate key"]);
}

#[test]
fn wrong_parameter_type() {
    rejects(
        &GOOD.replace("dir = \"data\"", "dir = 3"),
        &[
            "p.toml:11:7",
            "invalid type: integer `3`, expected a string",
        ],
    );
}

#[test]
fn missing_pipeline_name_and_unknown_top_level_table() {
    rejects(
        &GOOD
            .replace("name = \"t\"", "")
            .replace("[pipeline]", "[pipeline]\n[pipline]\nx = 1"),
        &[
            "[pipeline]: missing field `name`",
            "unknown field `pipline`",
            "did you mean `pipeline`?",
        ],
    );
}

#[test]
fn unknown_template_placeholder() {
    rejects(
        &GOOD.replace("{caption} in the style", "{captoin} in the style"),
        &[
            "p.toml:16:12",
            "unknown placeholder `{captoin}`",
            "did you mean `caption`?",
        ],
    );
}

#[test]
fn missing_required_input() {
    rejects(
        &GOOD.replace("inputs = { images = \"paintings\" }\n", ""),
        &["needs input `images`"],
    );
}

#[test]
fn extends_missing_file_and_unknown_variable() {
    rejects(
        &format!("extends = \"nope.toml\"\n{GOOD}"),
        &["p.toml:1:11", "cannot read pipeline file", "nope.toml"],
    );
    rejects(
        &GOOD.replace("path = \"data\"", "path = \"${dataset}\""),
        &["p.toml:6:8", "unknown variable `dataset`"],
    );
}

#[test]
fn a_missing_pipeline_file() {
    let p = Project::empty();
    let out = p.nsync(&["run", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read pipeline file nope.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn json_mode_reports_invalid_pipelines_on_stdout() {
    let p = Project::empty();
    p.write(
        "p.toml",
        &GOOD.replace("kind = \"images\"", "kind = \"imagez\""),
    );
    let out = p.nsync(&["run", "p.toml", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let s = summary(&out);
    assert_eq!(s["status"], "invalid");
    assert!(
        s["errors"][0].as_str().unwrap().contains("p.toml:5:8"),
        "{s}"
    );
}

#[test]
fn defaults_per_kind_are_checked_like_parameters() {
    let with_defaults = GOOD.replace(
        "name = \"t\"\n",
        "name = \"t\"\n[pipeline.defaults.imagez]\non_error = \"skip\"\n",
    );
    rejects(
        &with_defaults,
        &[
            "p.toml:3:",
            "unknown node kind `imagez`",
            "did you mean `images`?",
        ],
    );
    let bad_value = GOOD.replace(
        "name = \"t\"\n",
        "name = \"t\"\n[pipeline.defaults.images]\non_error = \"skipp\"\n",
    );
    rejects(
        &bad_value,
        &[
            "p.toml:4:12",
            "unknown variant `skipp`",
            "did you mean `skip`?",
        ],
    );
}
