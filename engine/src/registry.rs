//! The node kinds and artifact types a binary knows about.
//!
//! The engine starts empty; the `nodes` crate registers its kinds. Validation looks kinds
//! up here (with a "did you mean" for typos) and `nsync schema` walks it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::artifact::{ArtifactType, BUILTIN_TYPES};
use crate::node::NodeKind;

#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn NodeKind>>,
    types: BTreeMap<&'static str, ArtifactType>,
}

impl Registry {
    pub fn new() -> Self {
        let mut r = Registry::default();
        for t in BUILTIN_TYPES {
            r.types.insert(t.name, *t);
        }
        r
    }

    pub fn register(&mut self, kind: impl NodeKind + 'static) {
        let k = kind.kind();
        assert!(
            self.kinds.insert(k, Arc::new(kind)).is_none(),
            "node kind `{k}` registered twice"
        );
    }

    pub fn register_type(&mut self, ty: ArtifactType) {
        self.types.insert(ty.name, ty);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn NodeKind>> {
        self.kinds.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn NodeKind>> {
        self.kinds.values()
    }

    pub fn kind_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn artifact_type(&self, name: &str) -> Option<&ArtifactType> {
        self.types.get(name)
    }
}
