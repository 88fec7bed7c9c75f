//! Warden's WebAssembly host: runs untrusted agent components (WASI
//! components of the `warden:agent/agent` world) under hard budgets, with
//! only the capabilities they were granted. No gRPC and no control plane
//! here: the node (`warden-node`) and the CLI build on this crate.
//!
//! - [`engine::AgentEngine`]: the wasmtime engine, linker and compile cache;
//!   loads components into [`engine::AgentComponent`]s.
//! - [`run::Sandbox`]: runs a component once per [`run::RunRequest`] and
//!   returns a [`run::RunOutcome`] with the result, usage and logs.
//! - [`metrics::HostMetrics`]: LLM and outgoing HTTP calls, counted for
//!   the node's `/metrics`.
//! - [`meter`]: what a run has spent against its budget; [`trap`]: budget
//!   traps; [`capability`]: the host side of every WIT import.
//!
//! The vocabulary (budgets, grants, failure kinds) is `warden_core`'s; the
//! types this crate's API uses are re-exported here.

pub mod bindings;
pub mod cache;
pub mod capability;
pub mod compile;
pub mod config;
pub mod engine;
pub mod meter;
pub mod metrics;
pub mod run;
mod store;
pub mod trap;

/// The version of the wasmtime crate this build links (from Cargo.lock at
/// build time; checked against wasmtime's own artifact header in a test).
pub const WASMTIME_VERSION: &str = env!("WARDEN_WASMTIME_VERSION");

pub use engine::{AgentComponent, AgentEngine, LoadSource};
pub use run::{RunOutcome, RunRequest, Sandbox};
pub use warden_core::{FailureKind, Grant, RunBudget, RunFailure, Usage};

#[cfg(test)]
mod tests {
    /// The smallest component: the preamble of the component binary format.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn the_wasmtime_version_is_the_linked_crate_s() {
        // wasmtime writes its own major version into the engine section of
        // every artifact it compiles: a version byte (0), the length, then
        // the text.
        let engine = wasmtime::Engine::default();
        let artifact = wasmtime::component::Component::new(&engine, EMPTY_COMPONENT)
            .unwrap()
            .serialize()
            .unwrap();
        let major = super::WASMTIME_VERSION.split('.').next().unwrap();
        assert!(major.parse::<u32>().is_ok(), "{}", super::WASMTIME_VERSION);
        let mut section = vec![0, major.len() as u8];
        section.extend_from_slice(major.as_bytes());
        assert!(
            artifact.windows(section.len()).any(|w| w == section),
            "the artifact was not made by wasmtime {}",
            super::WASMTIME_VERSION
        );
    }
}
