//! The nsync engine: declarative TOML pipelines run as a cached dataflow graph.
//!
//! It knows nothing of machine learning. A run goes: [`spec`] loads and validates a file
//! into a [`Pipeline`]; [`executor`] schedules its nodes, computes each node's
//! [`fingerprint`] keys, looks them up in the [`nsync_cache::Store`], and runs only what is
//! missing; [`run_record`] keeps what happened, which [`explain`] and `gc` read later.
//! Node implementations plug in through the traits in [`node`] and the [`Registry`].

pub mod artifact;
pub mod dag;
pub mod executor;
pub mod explain;
pub mod fingerprint;
pub mod gc;
pub mod memo;
pub mod model_digest;
pub mod node;
pub mod params;
pub mod pipeline;
pub mod progress;
pub mod registry;
pub mod run_record;
pub mod schema;
pub mod spec;

pub use executor::{execute, plan, EngineError, Mode, RunOptions, RunOutcome};
pub use pipeline::Pipeline;
pub use registry::Registry;
pub use spec::validate::load_pipeline;
