//! Rendering engine events: progress bars on a terminal, plain lines otherwise (stderr),
//! or JSON Lines (stdout) with `--json`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nsync_engine::progress::{Event, NodeStatus, Progress};

pub fn for_output(json: bool) -> Box<dyn Progress> {
    if json {
        Box::new(JsonLines)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::default())
    }
}

/// `--json`: one event per line on stdout.
pub struct JsonLines;

impl Progress for JsonLines {
    fn event(&self, e: &Event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(e).expect("events serialise")
        );
        let _ = out.flush();
    }
}

/// One line for a finished node (`Event::NodeFinished`).
fn finished_line(e: &Event) -> String {
    let Event::NodeFinished {
        node,
        status,
        items_total: total,
        items_computed: computed,
        items_cached: cached,
        items_rejected: rejected,
        seconds: secs,
        error,
    } = e
    else {
        return String::new();
    };
    let (total, computed, cached, rejected, secs) = (*total, *computed, *cached, *rejected, *secs);
    let mut s = match status {
        NodeStatus::Cached => format!(
            "✓ {node}: cached ({total} item{})",
            if total == 1 { "" } else { "s" }
        ),
        NodeStatus::Executed => {
            format!("✓ {node}: computed {computed}, cached {cached} of {total} in {secs:.1}s")
        }
        NodeStatus::Failed => format!("✗ {node}: failed after {secs:.1}s"),
        NodeStatus::Skipped => format!("- {node}: skipped"),
        NodeStatus::WillRun => format!("… {node}"),
    };
    if rejected > 0 {
        s.push_str(&format!(", {rejected} skipped"));
    }
    if let Some(e) = error {
        s.push_str(&format!("\n    {}", e.replace('\n', "\n    ")));
    }
    s
}

/// Plain lines on stderr (logs, CI): start, every 10% or 5 s, end.
#[derive(Default)]
pub struct Lines {
    last: Mutex<HashMap<String, (Instant, usize)>>,
}

impl Progress for Lines {
    fn event(&self, e: &Event) {
        match e {
            Event::RunStarted {
                run_id,
                pipeline,
                nodes,
            } => eprintln!("run {run_id}: pipeline `{pipeline}`, {nodes} nodes"),
            Event::NodeStarted {
                node,
                items_to_compute,
                items_cached,
                items_total,
                ..
            } if *items_to_compute > 0 => {
                eprintln!("▶ {node}: {items_to_compute} to compute, {items_cached} of {items_total} cached");
            }
            Event::NodeStarted { .. } => {}
            Event::NodeProgress {
                node,
                items_done,
                items_to_compute,
            } => {
                let mut last = self.last.lock().unwrap();
                let (t, n) = last.entry(node.clone()).or_insert((Instant::now(), 0));
                let step = (*items_to_compute / 10).max(1);
                if items_done >= items_to_compute
                    || *items_done >= *n + step
                    || t.elapsed() > Duration::from_secs(5)
                {
                    eprintln!("  {node}: {items_done}/{items_to_compute}");
                    *t = Instant::now();
                    *n = *items_done;
                }
            }
            Event::Waiting { node, message } => eprintln!("  {node}: {message}"),
            Event::Status { node, message } => {
                // Throttled like item progress: at most one line per node every 5 s.
                let mut last = self.last.lock().unwrap();
                let (t, _) = last
                    .entry(format!("{node}/status"))
                    .or_insert((Instant::now() - Duration::from_secs(10), 0));
                if t.elapsed() > Duration::from_secs(5) {
                    eprintln!("  {node}: {message}");
                    *t = Instant::now();
                }
            }
            Event::Warning { node, message } => match node {
                Some(n) => eprintln!("warning: {n}: {message}"),
                None => eprintln!("warning: {message}"),
            },
            Event::NodeFinished { .. } => eprintln!("{}", finished_line(e)),
        }
    }
}

/// A progress bar per active node on a terminal.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Bars {
    fn event(&self, e: &Event) {
        match e {
            Event::RunStarted {
                run_id,
                pipeline,
                nodes,
            } => {
                let _ = self.multi.println(format!(
                    "run {run_id}: pipeline `{pipeline}`, {nodes} nodes"
                ));
            }
            Event::NodeStarted {
                node,
                items_to_compute,
                items_cached,
                ..
            } if *items_to_compute > 0 => {
                let bar = self.multi.add(ProgressBar::new(*items_to_compute as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>18.bold} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(node.clone());
                bar.set_message(format!("+{items_cached} cached"));
                bar.enable_steady_tick(Duration::from_millis(200));
                self.bars.lock().unwrap().insert(node.clone(), bar);
            }
            Event::NodeStarted { .. } => {}
            Event::NodeProgress {
                node, items_done, ..
            } => {
                if let Some(b) = self.bars.lock().unwrap().get(node) {
                    b.set_position(*items_done as u64);
                }
            }
            Event::Status { node, message } => {
                if let Some(b) = self.bars.lock().unwrap().get(node) {
                    b.set_message(message.clone());
                }
            }
            Event::Waiting { node, message }
            | Event::Warning {
                node: Some(node),
                message,
            } => {
                let _ = self.multi.println(format!("{node}: {message}"));
            }
            Event::Warning {
                node: None,
                message,
            } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
            Event::NodeFinished { node, .. } => {
                if let Some(b) = self.bars.lock().unwrap().remove(node) {
                    b.finish_and_clear();
                    self.multi.remove(&b);
                }
                let _ = self.multi.println(finished_line(e));
            }
        }
    }
}
