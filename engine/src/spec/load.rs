//! Reading a pipeline file: `extends` chains, merging, and `${var}` substitution.
//!
//! A file may start with `extends = "base.toml"` (relative to the file). The base is loaded
//! first, then the child is merged over it: tables merge key by key, any other value
//! replaces; a node whose `kind` the child changes is replaced whole. After merging, every
//! string may refer to `[vars]` as `${name}` (`$${` writes a literal `${`); a string that is
//! exactly `${name}` takes the variable's type, so numbers can be variables too.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::diagnostic::{did_you_mean, Diag, Loc, PipelineError, SourceMap};
use super::svalue::{SKind, SValue};

/// A pipeline file with everything it extends, merged.
pub struct Loaded {
    pub sources: SourceMap,
    pub root: SValue,
    /// The file given by the user.
    pub path: PathBuf,
}

const MAX_DEPTH: usize = 16;

pub fn load(path: &Path) -> Result<Loaded, PipelineError> {
    let mut sources = SourceMap::default();
    let mut chain = Vec::new();
    let mut root = load_file(path, None, &mut sources, &mut chain)?;
    let vars = match root.as_table().and_then(|t| t.get("vars")) {
        Some(v) => v.clone(),
        None => SValue {
            kind: SKind::Table(IndexMap::new()),
            loc: root.loc.clone(),
            key_loc: None,
        },
    };
    let mut diags = Vec::new();
    if let SKind::Table(t) = &mut root.kind {
        for (k, v) in t.iter_mut() {
            if k != "vars" {
                interpolate(v, &vars, &mut diags);
            }
        }
    }
    if !diags.is_empty() {
        return Err(PipelineError { sources, diags });
    }
    Ok(Loaded {
        sources,
        root,
        path: path.to_path_buf(),
    })
}

fn load_file(
    path: &Path,
    from: Option<Loc>,
    sources: &mut SourceMap,
    chain: &mut Vec<PathBuf>,
) -> Result<SValue, PipelineError> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        let names: Vec<String> = chain
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        return Err(PipelineError::single(
            sources,
            Diag::new(
                format!("`extends` forms a cycle: {}", names.join(" → ")),
                from,
            )
            .help("a pipeline may extend a base, but never (indirectly) itself"),
        ));
    }
    if chain.len() >= MAX_DEPTH {
        return Err(PipelineError::single(
            sources,
            Diag::new(
                format!("`extends` nests deeper than {MAX_DEPTH} files"),
                from,
            ),
        ));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let help = if from.is_some() {
                "`extends` paths are relative to the file that contains them"
            } else {
                "check the path; pipelines usually live in `pipelines/`"
            };
            return Err(PipelineError::single(
                sources,
                Diag::new(
                    format!("cannot read pipeline file {}: {e}", path.display()),
                    from,
                )
                .help(help),
            ));
        }
    };
    let file = sources.add(path, text.clone());
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let loc = e.span().map(|span| Loc { file, span });
            return Err(PipelineError::single(
                sources,
                Diag::new(format!("invalid TOML: {}", e.message().trim_end()), loc)
                    .help("see https://toml.io for the syntax"),
            ));
        }
    };
    let mut tree = SValue::from_document(doc.as_table(), file);
    let extends = match &mut tree.kind {
        SKind::Table(t) => t.shift_remove("extends"),
        _ => None,
    };
    let Some(ext) = extends else {
        return Ok(tree);
    };
    let Some(rel) = ext.as_str() else {
        return Err(PipelineError::single(
            sources,
            Diag::new(
                format!("`extends` must be a string path, not a {}", ext.type_name()),
                Some(ext.loc.clone()),
            ),
        ));
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(rel);
    chain.push(canonical);
    let mut base = load_file(&base_path, Some(ext.loc.clone()), sources, chain)?;
    chain.pop();
    merge(&mut base, tree, 0);
    Ok(base)
}

/// Merge `over` into `base` table by table (`over` wins), as for parameters.
pub(crate) fn deep_merge(base: &mut SValue, over: SValue) {
    merge(base, over, 2)
}

/// Merge `over` into `base`. `depth` 1 inside `nodes` is a node table.
fn merge(base: &mut SValue, over: SValue, depth: usize) {
    match (&mut base.kind, over.kind) {
        (SKind::Table(b), SKind::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => {
                        let replace_node = depth == 1 && is_node_kind_change(existing, &v);
                        if replace_node {
                            *existing = v;
                        } else {
                            merge(
                                existing,
                                v,
                                if k == "nodes" && depth == 0 {
                                    1
                                } else {
                                    depth + 1
                                },
                            );
                        }
                    }
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, kind) => {
            base.kind = kind;
            base.loc = over.loc;
            if over.key_loc.is_some() {
                base.key_loc = over.key_loc;
            }
        }
    }
}

fn is_node_kind_change(base: &SValue, over: &SValue) -> bool {
    let kind = |v: &SValue| {
        v.as_table()
            .and_then(|t| t.get("kind"))
            .and_then(|k| k.as_str().map(str::to_string))
    };
    matches!((kind(base), kind(over)), (Some(a), Some(b)) if a != b)
}

fn interpolate(v: &mut SValue, vars: &SValue, diags: &mut Vec<Diag>) {
    match &mut v.kind {
        SKind::String(s) => {
            if !s.contains('$') {
                return;
            }
            let table = vars.as_table();
            let lookup = |name: &str| table.and_then(|t| t.get(name));
            // A string that is exactly one reference takes the variable's type.
            if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                if !name.contains(['{', '}', '$']) {
                    if let Some(var) = lookup(name) {
                        v.kind = var.kind.clone();
                        return;
                    }
                }
            }
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                let after = &rest[i + 1..];
                if let Some(lit) = after.strip_prefix("${") {
                    out.push_str("${");
                    rest = lit;
                } else if let Some(body) = after.strip_prefix('{') {
                    let Some(end) = body.find('}') else {
                        diags.push(
                            Diag::new("unterminated `${` in string", Some(v.loc.clone())).help(
                                "write `${name}` to use a variable, or `$${` for a literal `${`",
                            ),
                        );
                        return;
                    };
                    let name = &body[..end];
                    match lookup(name) {
                        Some(var) => out.push_str(&scalar_text(var)),
                        None => {
                            let names = table
                                .map(|t| t.keys().map(String::as_str).collect::<Vec<_>>())
                                .unwrap_or_default();
                            diags.push(
                                Diag::new(
                                    format!("unknown variable `{name}`"),
                                    Some(v.loc.clone()),
                                )
                                .help_opt(
                                    did_you_mean(name, names.iter().copied()).or_else(|| {
                                        Some(format!(
                                            "define it under [vars], e.g. `{name} = \"...\"`"
                                        ))
                                    }),
                                ),
                            );
                            return;
                        }
                    }
                    rest = &body[end + 1..];
                } else {
                    out.push('$');
                    rest = after;
                }
            }
            out.push_str(rest);
            *s = out;
        }
        SKind::Array(a) => a.iter_mut().for_each(|x| interpolate(x, vars, diags)),
        SKind::Table(t) => t.values_mut().for_each(|x| interpolate(x, vars, diags)),
        _ => {}
    }
}

fn scalar_text(v: &SValue) -> String {
    match &v.kind {
        SKind::String(s) | SKind::Datetime(s) => s.clone(),
        SKind::Integer(i) => i.to_string(),
        SKind::Float(f) => f.to_string(),
        SKind::Bool(b) => b.to_string(),
        _ => v.to_json().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn extends_merges_and_interpolates() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "[pipeline]\nname = \"base\"\n[vars]\nstyle = \"monet\"\nsteps = 5\n[nodes.a]\nkind = \"images\"\npath = \"data/${style}\"\nn = \"${steps}\"\n");
        let child = write(d.path(), "child.toml", "extends = \"base.toml\"\n[pipeline]\nname = \"child\"\n[vars]\nstyle = \"vangogh\"\n[nodes.a]\nextra = 1\n");
        let l = load(&child).unwrap();
        let j = l.root.to_json();
        assert_eq!(j["pipeline"]["name"], "child");
        assert_eq!(j["nodes"]["a"]["path"], "data/vangogh");
        assert_eq!(j["nodes"]["a"]["n"], 5);
        assert_eq!(j["nodes"]["a"]["extra"], 1);
        assert_eq!(j["nodes"]["a"]["kind"], "images");
    }

    #[test]
    fn extends_cycle_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.toml", "extends = \"b.toml\"\n");
        let a = d.path().join("a.toml");
        write(d.path(), "b.toml", "extends = \"a.toml\"\n");
        let e = load(&a).err().unwrap().to_string();
        assert!(e.contains("cycle"), "{e}");
        assert!(e.contains("b.toml:1:11"), "{e}");
    }

    #[test]
    fn unknown_variable_has_position_and_hint() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.toml",
            "[vars]\nstyle = \"x\"\n[nodes.a]\npath = \"${styel}\"\n",
        );
        let e = load(&p).err().unwrap().to_string();
        assert!(e.contains("p.toml:4:8"), "{e}");
        assert!(e.contains("did you mean `style`"), "{e}");
    }
}
