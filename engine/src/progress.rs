//! Progress and warnings, reported through a trait: the engine never prints. The binary
//! renders events as progress bars on a terminal, plain lines in logs, or JSON Lines.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        pipeline: String,
        nodes: usize,
    },
    NodeStarted {
        node: String,
        kind: String,
        mode: &'static str,
        items_total: usize,
        items_cached: usize,
        items_to_compute: usize,
    },
    NodeProgress {
        node: String,
        items_done: usize,
        items_to_compute: usize,
    },
    /// What a node is doing inside a batch (`"step 12/50"`).
    Status { node: String, message: String },
    /// Another process holds the key this node needs; waiting for it.
    Waiting { node: String, message: String },
    Warning {
        node: Option<String>,
        message: String,
    },
    NodeFinished {
        node: String,
        status: NodeStatus,
        items_total: usize,
        items_computed: usize,
        items_cached: usize,
        items_rejected: usize,
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Executed,
    Cached,
    Failed,
    Skipped,
    /// `plan` only: would compute.
    WillRun,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Executed => "executed",
            NodeStatus::Cached => "cached",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
            NodeStatus::WillRun => "will_run",
        }
    }
}

pub trait Progress: Send + Sync {
    fn event(&self, e: &Event);
}

/// Discards everything.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}
