//! Warden's integration tests: real guest components (built by
//! `tests/build.rs`) run through the real host, one module per area.

mod agent_projects;
mod agents;
mod audit;
mod authorization;
mod bad_input;
mod bridge;
mod cache;
mod cli;
mod compile_bounds;
mod console;
mod credentials;
mod examples;
mod failures;
mod fuzz;
mod fuzz_host;
mod grants;
mod host_faults;
mod hostile;
mod http;
mod http_api;
mod http_events;
mod http_lists;
mod http_schema;
mod kv;
mod lease_protocol;
mod leases;
mod limits;
mod llm;
mod mcp;
mod message_bounds;
mod node_cache;
mod node_lifecycle;
mod oci;
mod oci_guard;
mod oci_layers;
mod ports;
mod quotas;
mod replicas;
mod run_lists;
mod run_logs;
mod sandbox;
mod security;
mod shared_kv;
mod telemetry;
mod tokens;
mod traces;
mod webhooks;

use std::path::Path;
use std::process::{Command, Output};
use warden_host::{FailureKind, RunOutcome};

/// Runs the `warden` CLI with its data under `data`; panics if it panicked.
pub(crate) fn warden(data: &Path, args: &[&str]) -> Output {
    warden_in(
        &std::env::current_dir().expect("a working directory"),
        data,
        args,
    )
}

/// [`warden`] in the working directory `cwd`.
pub(crate) fn warden_in(cwd: &Path, data: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_warden-cli"))
        .args(args)
        .current_dir(cwd)
        .env("WARDEN_DATA_DIR", data)
        .env_remove("WARDEN_CONFIG")
        .env_remove("WARDEN_LLM_BASE_URL")
        .output()
        .expect("warden runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "warden panicked: {stderr}");
    out
}

/// The one JSON object `--json` prints.
#[track_caller]
pub(crate) fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

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
