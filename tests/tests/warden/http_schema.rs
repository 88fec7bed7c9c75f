//! Schemathesis (PyPI) against the HTTP API's OpenAPI document.

use crate::leases::TestCluster;
use warden_tests::cluster::{free_port, publish};
use warden_tests::examples;

/// Schemathesis (PyPI) reads `/v1/openapi.json` and sends every route
/// generated requests, good and bad, as the admin: no answer may be a
/// server error, a status the document does not list, or a body that
/// breaks its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (c, _cp) = TestCluster::start(&["--http-listen", &listen, "--rate-limit", "0"]);
    let _node = c.node("node-a", &["--slots", "4"]);
    publish(c.channel().await, examples::HELLO, "hello@1").await;
    let report = c.tmp.path().join("schemathesis");
    let out = tokio::process::Command::new("st")
        // It keeps a cache in the directory it runs in.
        .current_dir(c.tmp.path())
        .args(["run", &format!("https://127.0.0.1:{port}/v1/openapi.json")])
        .args(["--tls-verify", c.ca.to_str().unwrap()])
        .args(["--header", &format!("Authorization: Bearer {}", c.admin)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "2"])
        .args(["--generation-database", "none", "--request-timeout", "70"])
        // Not its "coverage" phase: its generator fails inside hypothesis
        // on some schemas here (FlakyFailure), whatever the answers.
        .args(["--phases", "examples,fuzzing,stateful"])
        .args(["--report", "junit", "--report-dir", report.to_str().unwrap(), "--no-color"])
        .output()
        .await
        .expect("schemathesis (`st`, from PyPI) runs: scripts/test.sh installs it");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It did test the routes (a run that found nothing to test passes too).
    let junit = std::fs::read_dir(&report)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    for route in [
        "POST /v1/runs",
        "GET /v1/runs/{id}",
        "GET /v1/agents",
        "GET /v1/runs/{id}/logs",
    ] {
        assert!(
            junit.contains(route),
            "{route} untested:\n{junit}\n{stdout}"
        );
    }
}
