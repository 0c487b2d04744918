//! Pipeline errors with the offending line and a caret (miette), on stderr.

use std::io::IsTerminal;

use miette::{GraphicalReportHandler, GraphicalTheme};
use nsync_engine::spec::PipelineError;

pub fn print(e: &PipelineError) {
    let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if tty {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let lines = e.plain_lines();
    for (report, line) in e.reports().iter().zip(&lines) {
        // The plain line first: file:line:col, greppable and stable for scripts and tests.
        eprintln!("error: {line}");
        let mut out = String::new();
        if handler.render_report(&mut out, report).is_ok() {
            eprintln!("{out}");
        }
    }
    if let Some(file) = e.sources.first_path() {
        eprintln!(
            "{} problem{} in {}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            file.display()
        );
    }
}
