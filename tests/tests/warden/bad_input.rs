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
        // What `--help` and the README show as hosts, given bare: the
        // answer shows how to write them.
        (
            vec![examples::HELLO, "--allow-http", "*.example.com"],
            "https://*.example.com (its subdomains)",
        ),
        (
            vec![examples::HELLO, "--allow-http", "*"],
            "https://* (any public host)",
        ),
        (
            vec![examples::HELLO, "--allow-http", "http://localhost:8080"],
            "write e.g. http://127.0.0.1:8080",
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

#[test]
fn guest_text_reaches_the_terminal_with_its_controls_escaped() {
    // A guest's error text, its output and its logs could clear the screen
    // or forge a log line; each is shown with its controls escaped.
    let dir = tempfile::tempdir().unwrap();
    let evil = "boom\n2026-11-23T00:00:00Z  INFO warden: forged\u{1b}[2J\u{9b}31m\u{202e}";
    let input = serde_json::to_string(evil).unwrap();
    let out = crate::warden(
        dir.path(),
        &["run", components::GUEST_ERROR, "--input", &input],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .contains(r"boom\n2026-11-23T00:00:00Z  INFO warden: forged\u{1b}[2J\u{9b}31m\u{202e}"),
        "{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("INFO") && !l.contains("boom")),
        "{stderr}"
    );
    for c in ['\u{1b}', '\u{9b}', '\u{202e}'] {
        assert!(!stderr.contains(c), "{c:?} reached the terminal: {stderr}");
    }
    // The same text as output: still JSON, no raw controls.
    let out = crate::warden(
        dir.path(),
        &[
            "run",
            components::BIG_OUTPUT,
            "--input",
            &format!(r#"{{"tail": {input}}}"#),
        ],
    );
    assert!(out.status.success());
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        for c in ['\u{1b}', '\u{9b}', '\u{202e}'] {
            assert!(!text.contains(c), "{c:?} reached the terminal: {text}");
        }
    }
}

#[test]
fn names_outside_the_character_set_are_refused_where_they_enter() {
    let dir = tempfile::tempdir().unwrap();
    // Checked before the node contacts anyone.
    for (flags, expected) in [
        (
            &["--node-id", "evil\nINFO x"][..],
            r"node id `evil\nINFO x` may hold only",
        ),
        (
            &["--node-id", "n1", "--label", "role=a b"][..],
            "label value `a b` may hold only",
        ),
    ] {
        let mut args = vec!["node", "--control-plane", "http://127.0.0.1:9"];
        args.extend_from_slice(flags);
        let out = crate::warden(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_refuses_names_outside_the_character_set() {
    let (c, _cp) = crate::leases::TestCluster::start(&[]);
    let refused = warden_tests::cluster::try_publish(
        c.channel().await,
        examples::HELLO,
        "hello\u{1b}[2J@1",
        "",
    )
    .await
    .expect_err("a name with an escape sequence is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains(r"agent name `hello\u{1b}[2J` may hold only"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_text_cannot_forge_a_control_plane_log_line() {
    use warden_proto::v1 as pb;
    let (c, _cp) = crate::leases::TestCluster::start(&[]);
    let forged = "host\n2026-11-23T00:00:00.000000Z  INFO warden: forged\u{1b}[2J";
    pb::node_service_client::NodeServiceClient::new(c.enroll("n1").await)
        .register(pb::RegisterRequest {
            node_id: "n1".into(),
            hostname: forged.into(),
            labels: Default::default(),
            capacity: None,
        })
        .await
        .unwrap();
    let log_path = warden_tests::cluster::log_dir(c.tmp.path()).join("control-plane.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("node registered") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        log.contains(r"hostname=host\n2026-11-23T00:00:00.000000Z  INFO warden: forged\u{1b}[2J"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("forged") && !l.contains("node registered")),
        "{log}"
    );
}
