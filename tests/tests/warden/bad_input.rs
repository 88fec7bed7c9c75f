//! Bad input through the `warden run` CLI: each a clear error and a
//! non-zero exit, never a panic.

use crate::json;
use std::path::Path;
use std::process::Output;
use warden_tests::{components, examples};

/// `warden run ARGS` with its data under `data`.
fn warden(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    crate::warden(data, &all)
}

#[test]
fn a_good_run_exits_zero_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = warden(
        dir.path(),
        &[examples::HELLO, "--input", r#"{"name":"cli"}"#, "--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let doc = json(&out);
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["output"]["greeting"], "hello, cli");
    assert!(doc["usage"]["wall_time_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn invalid_components_fail_with_a_named_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "this is text").unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();

    for (file, expected) in [
        (not_wasm.to_str().unwrap(), "not a WebAssembly file"),
        (
            core.to_str().unwrap(),
            "core WebAssembly module, not a component",
        ),
        (
            components::WRONG_WORLD,
            "not a warden:agent/agent component",
        ),
    ] {
        let out = warden(dir.path(), &[file, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let doc = json(&out);
        assert_eq!(doc["status"], "failed");
        assert_eq!(doc["error"]["kind"], "invalid_component");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{file}: {message}");
    }
}

#[test]
fn requests_that_cannot_start_exit_two_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![examples::HELLO, "--input", "{not json"],
            "not valid JSON",
        ),
        (
            vec![examples::HELLO, "--input", "@/nonexistent/input.json"],
            "cannot read input file",
        ),
        (
            vec![missing.to_str().unwrap()],
            "cannot read agent component",
        ),
        (
            vec![examples::HELLO, "--allow-http", "example.com"],
            "HTTP pattern `example.com`: expected scheme://host[:port]",
        ),
        (
            vec![
                examples::HELLO,
                "--allow-http",
                "https://api.example.com/v1",
            ],
            "HTTP pattern `https://api.example.com/v1`: paths are not allowed in an origin pattern",
        ),
        (vec![examples::HELLO, "--max-memory", "lots"], "not a size"),
        (
            vec![examples::HELLO, "--max-memory", "99999999999999GiB"],
            "too large a size",
        ),
        (
            vec![examples::HELLO, "--max-cost-usd", "NaN"],
            "max_cost_usd must be a finite number",
        ),
        (
            vec![examples::HELLO, "--max-cost-usd=-1"],
            "max_cost_usd must be a finite number",
        ),
        (
            vec![examples::HELLO, "--timeout", "0s"],
            "timeout must be more than 0",
        ),
        (
            vec![examples::HELLO, "--node-config", "/nonexistent/warden.toml"],
            "cannot read config file",
        ),
    ];
    for (args, expected) in cases {
        let out = warden(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_failed_run_exits_one_and_names_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let out = warden(
        dir.path(),
        &[components::SPIN, "--timeout", "200ms", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["error"]["kind"], "timeout");

    let out = warden(dir.path(), &[components::SPIN, "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run failed (timeout)"), "{stderr}");
}
