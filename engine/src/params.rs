//! Typed node parameters: deserialisation with exact error paths, and the build error type.
//!
//! Node kinds declare a `serde` struct with `deny_unknown_fields`; [`typed_params`] reads
//! it and, on failure, reports the path of the offending field so that validation can
//! point at the right line and column, with a "did you mean" for misspelt fields.

use serde::de::DeserializeOwned;

/// Why a node could not be built from its table.
#[derive(Debug, Clone)]
pub struct BuildError {
    /// Path below the node's table (`["template"]`, `["vars", "generic"]`); empty for the
    /// node as a whole.
    pub path: Vec<String>,
    pub message: String,
    pub help: Option<String>,
}

impl BuildError {
    pub fn at(path: &[&str], message: impl Into<String>) -> Self {
        BuildError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
}

/// Deserialise `P` from a node's parameter table.
pub fn typed_params<P: DeserializeOwned>(params: serde_json::Value) -> Result<P, BuildError> {
    serde_path_to_error::deserialize::<_, P>(params).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let msg = e.inner().to_string();
        let mut help = None;
        if let Some(field) = between(&msg, "unknown field `", "`") {
            if path.last().map(String::as_str) != Some(field) {
                path.push(field.to_string());
            }
            let expected = backticked_after(&msg, "expected");
            help = crate::spec::diagnostic::did_you_mean(field, expected.iter().copied()).or_else(
                || {
                    (!expected.is_empty())
                        .then(|| format!("known parameters: {}", expected.join(", ")))
                },
            );
        } else if let Some(field) = between(&msg, "missing field `", "`") {
            help = Some(format!("add `{field} = ...`"));
        } else if let Some(variant) = between(&msg, "unknown variant `", "`") {
            let expected = backticked_after(&msg, "expected");
            help = crate::spec::diagnostic::did_you_mean(variant, expected.iter().copied());
        }
        BuildError {
            path,
            message: msg,
            help,
        }
    })
}

/// The `quoted` words after `marker` in a serde message ("expected `a`, `b` or `c`").
fn backticked_after<'a>(msg: &'a str, marker: &str) -> Vec<&'a str> {
    let Some(i) = msg.find(marker) else {
        return Vec::new();
    };
    msg[i..].split('`').skip(1).step_by(2).collect()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        template: String,
        #[serde(default)]
        lr: f64,
    }

    #[test]
    fn unknown_field_has_path_and_hint() {
        let e = typed_params::<P>(serde_json::json!({"template": "x", "templte": 1})).unwrap_err();
        assert_eq!(e.path, vec!["templte"]);
        assert_eq!(e.help.as_deref(), Some("did you mean `template`?"));
    }

    #[test]
    fn type_error_has_path() {
        let e = typed_params::<P>(serde_json::json!({"template": "x", "lr": "fast"})).unwrap_err();
        assert_eq!(e.path, vec!["lr"]);
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }
}
