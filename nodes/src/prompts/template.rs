//! A tiny template language: `{name}` placeholders, `{{` and `}}` for literal braces.
//! Parsed once when the pipeline is validated, so a typo is reported before anything runs.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Var(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_alphanumeric() || c == '_' || c == '-' => name.push(c),
                            Some(c) => return Err(format!("unexpected `{c}` in placeholder `{{{name}`; placeholders look like {{caption}} (use {{{{ for a literal brace)")),
                            None => return Err(format!("unclosed placeholder `{{{name}`")),
                        }
                    }
                    if name.is_empty() {
                        return Err("empty placeholder `{}`".into());
                    }
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Var(name));
                }
                '}' => return Err("unmatched `}` (write `}}` for a literal brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Template { segments })
    }

    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(v) => Some(v.as_str()),
            Segment::Text(_) => None,
        })
    }

    pub fn render(&self, lookup: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(v) => out.push_str(&lookup(v)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("{caption} in the style of {generic} {{literal}}").unwrap();
        assert_eq!(t.vars().collect::<Vec<_>>(), vec!["caption", "generic"]);
        let out = t.render(|v| v.to_uppercase());
        assert_eq!(out, "CAPTION in the style of GENERIC {literal}");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(Template::parse("{caption").is_err());
        assert!(Template::parse("a } b").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("{a b}").is_err());
    }
}
