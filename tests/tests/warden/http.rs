//! Outgoing HTTP policy: allow-list, forbidden addresses (checked after DNS,
//! before any connection), request budget.

use crate::output;
use serde_json::Value;
use warden_host::{Grant, RunBudget, RunRequest, Sandbox};
use warden_tests::http_server::{Response, TestServer};
use warden_tests::{components, load, sandbox};

async fn fetch(sb: &Sandbox, url: &str, allow: &[&str]) -> Value {
    let probe = load(sb, components::HTTP_PROBE);
    let mut req = RunRequest::new("http-probe", serde_json::json!({ "url": url }).to_string());
    req.grant = Grant {
        http: allow.iter().map(|s| s.to_string()).collect(),
        ..Grant::default()
    };
    output(&sb.run(&probe, req).await)
}

fn server() -> TestServer {
    TestServer::start(|req| Response::text(200, &format!("you asked for {}", req.path)))
}

#[tokio::test]
async fn an_allowed_host_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let srv = server();
    // A loopback address is reachable only when the allow-list names the IP.
    let allow = format!("http://127.0.0.1:{}", srv.port());
    let out = fetch(&sb, &format!("{}/page?q=1", srv.url()), &[&allow]).await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "you asked for /page?q=1");
    assert_eq!(srv.connections(), 1);
}

#[tokio::test]
async fn hosts_not_on_the_list_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let srv = server();
    let out = fetch(&sb, &srv.url(), &["https://api.example.com"]).await;
    assert_eq!(out["denied"], true, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("allow-list"),
        "{out}"
    );
    // Nothing granted: nothing reachable.
    let out = fetch(&sb, &srv.url(), &[]).await;
    assert_eq!(out["denied"], true, "{out}");
    assert_eq!(srv.connections(), 0);
}

#[tokio::test]
async fn special_addresses_are_refused_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let srv = server();
    let port = srv.port();

    // Any-host wildcards do not open loopback or metadata addresses.
    let out = fetch(&sb, &format!("http://127.0.0.1:{port}/"), &["http://*:*"]).await;
    assert_eq!(out["denied"], true, "{out}");
    assert!(out["error"].as_str().unwrap().contains("address"), "{out}");

    let started = std::time::Instant::now();
    let out = fetch(
        &sb,
        "http://169.254.169.254/latest/meta-data/",
        &["http://*"],
    )
    .await;
    assert_eq!(out["denied"], true, "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "it tried to connect"
    );

    // A name on the allow-list that resolves to loopback is refused too.
    let out = fetch(
        &sb,
        &format!("http://localhost:{port}/"),
        &[&format!("http://localhost:{port}")],
    )
    .await;
    assert_eq!(out["denied"], true, "{out}");
    assert_eq!(srv.connections(), 0, "a refused request reached the server");
}

#[tokio::test]
async fn the_request_budget_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let srv = server();
    let probe = load(&sb, components::HTTP_PROBE);
    let allow = format!("http://127.0.0.1:{}", srv.port());
    let mut req = RunRequest::new("p", serde_json::json!({ "url": srv.url() }).to_string());
    req.grant = Grant {
        http: vec![allow],
        ..Grant::default()
    };
    req.budget = RunBudget {
        max_http_requests: 0,
        ..RunBudget::default()
    };
    let outcome = sb.run(&probe, req).await;
    let out = output(&outcome);
    assert_eq!(out["denied"], true);
    assert!(out["error"].as_str().unwrap().contains("budget"), "{out}");
    assert_eq!(outcome.usage.http_requests, 0);
    assert_eq!(srv.connections(), 0);
}
