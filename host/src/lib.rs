//! Warden's node runtime: runs untrusted agent components (WASI components
//! of the `warden:agent/agent` world) under hard budgets, with only the
//! capabilities they were granted.
//!
//! - [`engine::AgentEngine`]: the wasmtime engine, linker and compile cache;
//!   loads components into [`engine::AgentComponent`]s.
//! - [`run::Sandbox`]: runs a component once per [`run::RunRequest`] and
//!   returns a [`run::RunOutcome`] with the result, usage and logs.
//! - [`budget`]: budgets and usage; [`capability`]: grants and the host side
//!   of every WIT import; [`failure`]: the failure kinds.

pub mod bindings;
pub mod budget;
pub mod cache;
pub mod capability;
pub mod cli;
pub mod config;
pub mod engine;
pub mod failure;
pub mod node;
pub mod run;
mod store;

pub use budget::{RunBudget, Usage};
pub use capability::Grant;
pub use engine::{AgentComponent, AgentEngine, LoadSource};
pub use failure::{FailureKind, RunFailure};
pub use run::{RunOutcome, RunRequest, Sandbox};
