//! [`Pipeline`]: the validated, sealed form of a pipeline file. It is the only form the
//! planner and executor see; it cannot be built except by [`crate::spec::validate`].

use std::path::PathBuf;

use indexmap::IndexMap;

use crate::artifact::ArtifactType;
use crate::node::{Node, OutputSpec};
use crate::spec::diagnostic::{Loc, SourceMap};

pub struct Pipeline {
    pub name: String,
    pub seed: u64,
    pub salt: Option<String>,
    pub description: Option<String>,
    /// The file the user named.
    pub file: PathBuf,
    /// Its folder: relative paths in parameters resolve here.
    pub dir: PathBuf,
    pub models: IndexMap<String, PathBuf>,
    /// In topological order (declaration order among independent nodes).
    pub nodes: Vec<PipelineNode>,
    /// The merged pipeline as JSON, recorded in run records.
    pub resolved: serde_json::Value,
    pub sources: SourceMap,
}

pub struct PipelineNode {
    pub name: String,
    pub kind: String,
    pub node: Box<dyn Node>,
    pub inputs: Vec<Edge>,
    pub outputs: Vec<OutputSpec>,
    pub salt: Option<String>,
    pub loc: Loc,
}

/// An input port fed by another node's output port.
#[derive(Clone, Debug)]
pub struct Edge {
    pub port: String,
    /// Index of the producing node in [`Pipeline::nodes`].
    pub from: usize,
    pub from_port: String,
    pub ty: ArtifactType,
}

impl Pipeline {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// `name` and everything it depends on, as a mask over `nodes`.
    pub fn ancestors(&self, idx: usize) -> Vec<bool> {
        let mut mask = vec![false; self.nodes.len()];
        let mut stack = vec![idx];
        while let Some(i) = stack.pop() {
            if !mask[i] {
                mask[i] = true;
                stack.extend(self.nodes[i].inputs.iter().map(|e| e.from));
            }
        }
        mask
    }
}
