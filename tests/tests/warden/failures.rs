//! Every failure kind, produced for real and seen the way users see it:
//! through `warden run --json` and through a cluster (`warden submit --wait
//! --json`, and the recorded run), each with its kind and `retryable` flag.
//! Also the flag → budget mapping of `warden run`, a manifest's `[budget]`,
//! and the node's own retry path for host errors.

use crate::leases::TestCluster;
use crate::{json, warden};
use std::time::Duration;
use warden_core::{AttemptOutcome, FailureKind, RunState};
use warden_tests::cluster::Conn;
use warden_tests::cluster::{Proc, publish, state, submit, wait_ended, wait_state};
use warden_tests::http_server::{Response, TestServer};
use warden_tests::{components, examples};

/// What, component, input, budget flags, kind, retryable.
type GuestFailure = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    bool,
);

/// Each failure a guest can cause, with the flag that makes it. A guest's
/// own doing is never retryable.
const GUEST_FAILURES: &[GuestFailure] = &[
    (
        "spin",
        components::SPIN,
        "null",
        &["--timeout", "300ms"],
        "timeout",
        false,
    ),
    (
        "fuel-burn",
        components::FUEL_BURN,
        r#"{"iterations": 1000000000000}"#,
        &["--fuel", "1000000"],
        "fuel_exhausted",
        false,
    ),
    (
        "memory-bomb",
        components::MEMORY_BOMB,
        "null",
        &["--max-memory", "8MiB"],
        "memory_limit",
        false,
    ),
    (
        "big-output",
        components::BIG_OUTPUT,
        r#"{"bytes": 5000}"#,
        &["--max-output", "1000"],
        "output_too_large",
        false,
    ),
    (
        "big-log",
        components::BIG_OUTPUT,
        r#"{"log_lines": 100}"#,
        &["--max-log", "500"],
        "output_too_large",
        false,
    ),
    ("panic", components::PANIC, r#""now""#, &[], "trap", false),
    (
        "guest-error",
        components::GUEST_ERROR,
        r#""no""#,
        &[],
        "guest_error",
        false,
    ),
    (
        "wrong-world",
        components::WRONG_WORLD,
        "null",
        &[],
        "invalid_component",
        false,
    ),
    (
        "handle-flood",
        components::HANDLE_FLOOD,
        "{}",
        &[],
        "resource_limit",
        false,
    ),
];

#[track_caller]
fn assert_failed(doc: &serde_json::Value, what: &str, kind: &str, retryable: bool) {
    assert_eq!(doc["status"], "failed", "{what}: {doc}");
    assert_eq!(doc["error"]["kind"], kind, "{what}: {doc}");
    assert_eq!(doc["error"]["retryable"], retryable, "{what}: {doc}");
    assert!(
        !doc["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: no message: {doc}"
    );
}

#[test]
fn a_host_error_through_warden_run_json() {
    // The scratch root is a file, so the host cannot make the run's
    // scratch dir: the host's fault, and retryable.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scratch"), "not a directory").unwrap();
    let out = warden(
        dir.path(),
        &["run", components::ENV_PROBE, "--scratch-dir", "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_failed(&doc, "scratch", "host_error", true);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scratch"),
        "{doc}"
    );
}

#[test]
fn every_guest_failure_kind_through_warden_run_json() {
    let dir = tempfile::tempdir().unwrap();
    for (what, component, input, flags, kind, retryable) in GUEST_FAILURES {
        let mut args = vec!["run", component, "--input", input, "--json"];
        args.extend_from_slice(flags);
        let out = warden(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert_failed(&json(&out), what, kind, *retryable);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guest_failure_kind_through_the_cluster() {
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("node-a", &["--slots", "4"]);
    let ch = c.channel().await;
    for (what, component, _, _, _, _) in GUEST_FAILURES {
        if *what == "wrong-world" {
            continue; // refused at publish; a node's own check is below
        }
        publish(ch.clone(), component, &format!("{what}@1")).await;
    }
    for (what, _, input, flags, kind, retryable) in GUEST_FAILURES {
        if *what == "wrong-world" {
            continue;
        }
        let agent = format!("{what}@1");
        let mut args = vec!["submit", &agent, "--input", input, "--wait", "--json"];
        args.extend_from_slice(flags);
        let out = c.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        let doc = json(&out);
        assert_failed(&doc, what, kind, *retryable);
    }
    // The recorded runs: failed (not retried, not dead-lettered), one attempt.
    let runs = c.cli(&["runs", "list", "--json"]);
    let runs = json(&runs);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), GUEST_FAILURES.len() - 1);
    for listed in runs {
        let id = listed["run_id"].as_str().unwrap();
        let run = json(&c.cli(&["runs", "get", id, "--json"]));
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["attempt"], 1, "{run}");
        assert_eq!(run["error"]["retryable"], false, "{run}");
        assert_eq!(run["attempts"][0]["outcome"], "failed", "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_error_on_a_real_node_is_retried_up_to_the_control_planes_max_attempts() {
    // `--max-attempts 2` on the control plane, none on the submit: the
    // control plane's default applies (the CLI used to always send 3).
    let (c, _cp) = TestCluster::start(&["--max-attempts", "2"]);
    let ch = c.channel().await;
    let published = publish(ch.clone(), examples::HELLO, "hello@1").await;
    // Damage the stored blob: every node's fetch then fails its digest
    // check, a host fault (retryable) the agent has no part in.
    let db = rusqlite::Connection::open(c.tmp.path().join("cp.sqlite3")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let n = db
        .execute(
            "UPDATE components SET data = X'0061736d' WHERE digest = ?1",
            [&published.digest],
        )
        .unwrap();
    assert_eq!(n, 1);
    let _node = c.node("node-a", &["--slots", "2"]);
    let out = c.cli(&["submit", "hello@1", "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc = json(&out);
    assert_failed(&doc, "hello", "host_error", true);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dead-lettered after 2 attempts"),
        "{doc}"
    );
    let runs = json(&c.cli(&["runs", "list", "--json"]));
    let id = runs[0]["run_id"].as_str().unwrap();
    let run = json(&c.cli(&["runs", "get", id, "--json"]));
    assert_eq!(run["state"], "dead_lettered", "{run}");
    assert_eq!(run["max_attempts"], 2, "{run}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    for a in attempts {
        assert_eq!(a["error"]["kind"], "host_error", "{run}");
        assert_eq!(a["node_id"], "node-a", "{run}");
    }
    // `submit --max-attempts` overrides the control plane's.
    let out = c.cli(&[
        "submit",
        "hello@1",
        "--max-attempts",
        "1",
        "--wait",
        "--json",
    ]);
    let doc = json(&out);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dead-lettered after 1 attempt:"),
        "{doc}"
    );
}

#[test]
fn run_flags_set_the_budget_and_grant() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"from": "file"}"#).unwrap();
    let at_input = format!("@{}", input.display());
    let out = warden(
        dir.path(),
        &[
            "run",
            components::ENV_PROBE,
            "--input",
            &at_input,
            "--timeout",
            "7s",
            "--max-tokens",
            "123",
            "--config",
            "greeting=hi",
            "--scratch-dir",
            "--json",
        ],
    );
    let doc = json(&out);
    assert_eq!(doc["status"], "ok", "{doc}");
    let o = &doc["output"];
    assert_eq!(o["tokens_left"], 123, "{doc}");
    let time_left = o["time_left_ms"].as_u64().unwrap();
    assert!((5_000..=7_000).contains(&time_left), "{doc}");
    assert_eq!(
        o["config"],
        serde_json::json!([["greeting", "hi"]]),
        "{doc}"
    );
    assert_eq!(o["scratch"], serde_json::json!({"Ok": "kept"}), "{doc}");

    // Without the flags: the defaults (30 s, no token budget, no scratch).
    let doc = json(&warden(
        dir.path(),
        &["run", components::ENV_PROBE, "--json"],
    ));
    let o = &doc["output"];
    assert!(o["tokens_left"].is_null(), "{doc}");
    assert!(o["time_left_ms"].as_u64().unwrap() > 25_000, "{doc}");
    assert!(o["scratch"].get("Err").is_some(), "{doc}");

    // --no-kv: the host refuses the kv probe's bucket; with kv it works.
    let kv = |extra: &[&str]| {
        let mut args = vec![
            "run",
            components::KV_PROBE,
            "--input",
            r#"{"op":"set","key":"k","value":"v"}"#,
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&warden(dir.path(), &args))
    };
    assert_eq!(kv(&[])["status"], "ok");
    let doc = kv(&["--no-kv"]);
    assert_failed(&doc, "kv-probe --no-kv", "guest_error", false);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not granted"),
        "{doc}"
    );
}

#[test]
fn a_manifests_budget_applies_to_warden_run_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("warden.toml");
    std::fs::write(
        &manifest,
        "[grant]\nconfig = [\"greeting\"]\n[budget]\ntimeout = \"4s\"\nmax_tokens = 77\n",
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let doc = json(&warden(
        dir.path(),
        &["run", components::ENV_PROBE, "--manifest", m, "--json"],
    ));
    let o = &doc["output"];
    assert_eq!(o["tokens_left"], 77, "{doc}");
    assert!(o["time_left_ms"].as_u64().unwrap() <= 4_000, "{doc}");
    let doc = json(&warden(
        dir.path(),
        &[
            "run",
            components::ENV_PROBE,
            "--manifest",
            m,
            "--max-tokens",
            "9",
            "--json",
        ],
    ));
    assert_eq!(doc["output"]["tokens_left"], 9, "{doc}");
    // The manifest's timeout stops a spinning agent.
    let started = std::time::Instant::now();
    let out = warden(
        dir.path(),
        &["run", components::SPIN, "--manifest", m, "--json"],
    );
    assert_failed(&json(&out), "spin", "timeout", false);
    assert!(started.elapsed() < Duration::from_secs(25));
    // A grant beyond it is refused before the run.
    let out = warden(
        dir.path(),
        &[
            "run",
            components::ENV_PROBE,
            "--manifest",
            m,
            "--allow-model",
            "big",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not declare model big"),
        "{out:?}"
    );
}

/// A control plane started with `cp_args`, one node, and a sleeper run of
/// `ms` submitted and running: (cluster, control plane, node, channel, id).
async fn one_sleeping_run(cp_args: &[&str], ms: u64) -> (TestCluster, Proc, Proc, Conn, String) {
    let (c, cp) = TestCluster::start(cp_args);
    let node = c.node("node-a", &["--slots", "2"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let input = serde_json::json!({ "ms": ms, "tag": "done" }).to_string();
    let id = submit(ch.clone(), "sleeper@1", &input, |_| {}).await;
    wait_state(ch.clone(), &id, Duration::from_secs(20), RunState::Running).await;
    (c, cp, node, ch, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stops_a_run_whose_lease_expired_and_reports_nothing() {
    // Renewals cannot reach a paused control plane; the node must stop the
    // run at the lease's expiry on its own, and not report a stale result.
    let (c, cp, _node, ch, id) =
        one_sleeping_run(&["--lease-ttl", "1s", "--node-timeout", "60s"], 2500).await;
    cp.signal("STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    cp.signal("CONT");
    let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
    assert_eq!(state(&run), RunState::Succeeded, "{run:?}");
    assert!(run.attempt >= 2, "{run:?}");
    let first = &run.attempts[0];
    assert_eq!(
        AttemptOutcome::from_proto(first.attempt_outcome),
        Some(AttemptOutcome::Expired),
        "{run:?}"
    );
    assert_eq!(
        FailureKind::from_proto(first.kind),
        Some(FailureKind::LeaseLost)
    );
    let doc = json(&c.cli(&["runs", "get", &id, "--json"]));
    let error = &doc["attempts"][0]["error"];
    assert_eq!(error["kind"], "lease_lost", "{doc}");
    assert_eq!(error["retryable"], true, "{doc}");
    let log = std::fs::read_to_string(c.tmp.path().join("logs/node-a.log")).unwrap();
    assert!(log.contains("lease lost while running"), "{log}");
    assert!(
        !log.contains("result rejected"),
        "a stale result was sent: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_a_run_longer_than_the_lease_ttl_on_its_first_attempt() {
    // 3.5 s of work under a 1 s lease: only renewals keep it.
    let (_c, _cp, _node, ch, id) = one_sleeping_run(&["--lease-ttl", "1s"], 3500).await;
    let run = wait_ended(ch, &id, Duration::from_secs(30)).await;
    assert_eq!(state(&run), RunState::Succeeded, "{run:?}");
    assert_eq!(run.attempt, 1, "{run:?}");
    assert_eq!(run.attempts.len(), 1, "{run:?}");
    assert_eq!(run.output, "\"done\"");
}

#[test]
fn run_flags_reach_the_llm_and_http_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let llm = warden_tests::fake_openai::FakeOpenAi::start();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, llm.node_config()).unwrap();
    let config = config.to_str().unwrap();
    let run = |component: &str, input: &str, flags: &[&str]| {
        let mut args = vec![
            "run",
            component,
            "--input",
            input,
            "--json",
            "--node-config",
            config,
        ];
        args.extend_from_slice(flags);
        json(&warden(dir.path(), &args))
    };

    // --allow-model and --max-tokens: max_tokens is clamped to what is left.
    let probe = r#"{"calls": 3, "max_tokens": 500, "model": "small"}"#;
    let doc = run(
        components::LLM_PROBE,
        probe,
        &["--allow-model", "small", "--max-tokens", "60"],
    );
    let calls: Vec<String> = serde_json::from_value(doc["output"].clone()).unwrap();
    assert!(calls[0].starts_with("ok:"), "{doc}");
    assert_eq!(calls.last().unwrap(), "budget_exhausted", "{doc}");
    let sent = llm.requests()[0].body["max_tokens"].as_u64().unwrap();
    assert!(sent < 60, "max_tokens {sent} was not clamped to the budget");
    assert!(
        doc["usage"]["prompt_tokens"].as_u64().unwrap()
            + doc["usage"]["completion_tokens"].as_u64().unwrap()
            <= 60,
        "{doc}"
    );

    // Without --allow-model the model is refused before the provider.
    let before = llm.requests().len();
    let doc = run(components::LLM_PROBE, probe, &[]);
    assert!(
        doc["output"][0]
            .as_str()
            .unwrap()
            .contains("ModelNotAllowed"),
        "{doc}"
    );
    // --max-cost-usd with the price table: too little for even the prompt.
    let doc = run(
        components::LLM_PROBE,
        probe,
        &["--allow-model", "small", "--max-cost-usd", "0.000001"],
    );
    assert_eq!(
        doc["output"],
        serde_json::json!(["budget_exhausted"]),
        "{doc}"
    );
    assert_eq!(
        llm.requests().len(),
        before,
        "a refused call reached the provider"
    );

    // --max-http-bytes and --max-http-requests.
    let srv = TestServer::start(|_| Response::text(200, &"x".repeat(64 << 10)));
    let allow = format!("http://127.0.0.1:{}", srv.port());
    let input = serde_json::json!({ "url": srv.url() }).to_string();
    let doc = run(
        components::HTTP_PROBE,
        &input,
        &["--allow-http", &allow, "--max-http-bytes", "1000"],
    );
    assert!(
        doc["output"]["error"].as_str().unwrap().contains("1000"),
        "{doc}"
    );
    assert!(
        doc["usage"]["http_response_bytes"].as_u64().unwrap() <= 1000,
        "{doc}"
    );
    let doc = run(
        components::HTTP_PROBE,
        &input,
        &["--allow-http", &allow, "--max-http-requests", "0"],
    );
    assert!(
        doc["output"]["error"].as_str().unwrap().contains("budget"),
        "{doc}"
    );
    assert_eq!(doc["usage"]["http_requests"], 0, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_no_report_can_carry_is_recorded_failed_and_the_node_goes_on() {
    // The node's limits allow an 85 MB output, but no report to the control
    // plane can carry it (80 MiB messages): the run must be recorded as
    // failed, not retried for ever with the node's report loop held.
    let (c, _cp) = TestCluster::start(&[]);
    let config = c.tmp.path().join("big-node.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_output_bytes = 100000000\nmax_memory_bytes = 536870912\n",
    )
    .unwrap();
    let _node = c.node(
        "node-a",
        &["--slots", "1", "--node-config", config.to_str().unwrap()],
    );
    publish(c.channel().await, components::BIG_OUTPUT, "big@1").await;
    let out = c.cli(&[
        "submit",
        "big@1",
        "--input",
        r#"{"bytes": 85000000}"#,
        "--max-output",
        "100000000",
        "--max-memory",
        "512MiB",
        "--max-attempts",
        "1",
        "--wait",
        "--json",
    ]);
    let doc = json(&out);
    assert_eq!(doc["error"]["kind"], "output_too_large", "{doc}");
    assert_eq!(doc["error"]["retryable"], false, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("a report to the control plane carries at most"),
        "{message}"
    );
    // The same node serves the next run.
    let out = c.cli(&[
        "submit",
        "big@1",
        "--input",
        r#"{"bytes": 10}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(json(&out)["output"], "xxxxxxxxxx");
}
