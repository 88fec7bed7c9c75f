//! Warden's integration tests: real guest components (built by
//! `tests/build.rs`) run through the real host, one module per area.

mod bad_input;
mod cache;
mod examples;
mod http;
mod kv;
mod leases;
mod limits;
mod llm;
mod node_cache;
mod oci;
mod sandbox;

use warden_host::{FailureKind, RunOutcome};

/// The failure kind of an outcome, or a panic naming the output.
#[track_caller]
pub(crate) fn failure_kind(outcome: &RunOutcome) -> FailureKind {
    match &outcome.result {
        Ok(out) => panic!("expected a failure, got output {out}"),
        Err(f) => f.kind,
    }
}

/// The JSON output of a successful run, or a panic naming the failure.
#[track_caller]
pub(crate) fn output(outcome: &RunOutcome) -> serde_json::Value {
    match &outcome.result {
        Ok(out) => serde_json::from_str(out).expect("output is JSON"),
        Err(f) => panic!("expected success, got {f}"),
    }
}
