//! Errors in pipeline files, with the file, line, column and a hint.
//!
//! [`PipelineError`] holds every problem found (validation does not stop at the first one)
//! and renders through miette, which shows the offending line with a caret.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// The text of every file read for one pipeline, so that errors can quote it.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<(PathBuf, Arc<String>)>,
}

impl SourceMap {
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        self.files.push((path.to_path_buf(), Arc::new(text)));
        self.files.len() - 1
    }

    /// The file the user named, once it has been read.
    pub fn first_path(&self) -> Option<&Path> {
        self.files.first().map(|(p, _)| p.as_path())
    }

    pub fn path(&self, id: FileId) -> &Path {
        &self.files[id].0
    }

    pub fn text(&self, id: FileId) -> &Arc<String> {
        &self.files[id].1
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, id: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(id);
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// Where something was written: a file and a byte range in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub span: Range<usize>,
}

/// One problem in a pipeline file.
#[derive(Clone, Debug)]
pub struct Diag {
    pub message: String,
    pub loc: Option<Loc>,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diag {
    pub fn new(message: impl Into<String>, loc: Option<Loc>) -> Self {
        Diag {
            message: message.into(),
            loc,
            label: None,
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// "did you mean `x`?" for the closest candidate, if any is close enough: an edit distance
/// (with transpositions) of at most a third of the word, or a high Jaro-Winkler similarity.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (given.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        let d = strsim::damerau_levenshtein(given, c);
        let jw = strsim::jaro_winkler(given, c);
        if (d <= limit || jw > 0.85) && best.is_none_or(|(bd, bjw, _)| (d, -jw) < (bd, -bjw)) {
            best = Some((d, jw, c));
        }
    }
    best.map(|(_, _, c)| format!("did you mean `{c}`?"))
}

/// All problems found in a pipeline, renderable with their source lines.
#[derive(Debug)]
pub struct PipelineError {
    pub sources: SourceMap,
    pub diags: Vec<Diag>,
}

impl PipelineError {
    pub fn single(sources: &SourceMap, diag: Diag) -> Self {
        PipelineError {
            sources: sources.clone(),
            diags: vec![diag],
        }
    }

    /// One line per problem: `file:line:col: message (help)`. Used for logs and JSON output.
    pub fn plain_lines(&self) -> Vec<String> {
        self.diags
            .iter()
            .map(|d| {
                let mut s = String::new();
                if let Some(loc) = &d.loc {
                    let (l, c) = self.sources.line_col(loc.file, loc.span.start);
                    s.push_str(&format!(
                        "{}:{l}:{c}: ",
                        self.sources.path(loc.file).display()
                    ));
                }
                s.push_str(&d.message);
                if let Some(h) = &d.help {
                    s.push_str(&format!(" (help: {h})"));
                }
                s
            })
            .collect()
    }

    /// miette diagnostics, one per problem.
    pub fn reports(&self) -> Vec<DiagReport> {
        self.diags
            .iter()
            .map(|d| DiagReport {
                diag: d.clone(),
                source: d.loc.as_ref().map(|l| {
                    let name = self.sources.path(l.file).display().to_string();
                    NamedSource::new(name, self.sources.text(l.file).as_str().to_string())
                }),
            })
            .collect()
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.plain_lines().join("\n"))
    }
}

impl std::error::Error for PipelineError {}

/// One problem as a miette diagnostic.
#[derive(Debug)]
pub struct DiagReport {
    diag: Diag,
    source: Option<NamedSource<String>>,
}

impl fmt::Display for DiagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for DiagReport {}

impl Diagnostic for DiagReport {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let loc = self.diag.loc.as_ref()?;
        let len = loc.span.end.saturating_sub(loc.span.start).max(1);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.diag.label.clone().unwrap_or_else(|| "here".into())),
            loc.span.start,
            len,
        ))))
    }
}
