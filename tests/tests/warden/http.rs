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

/// The sandbox's `warden_http_client_requests_total` sample for `outcome`.
fn requests(sb: &Sandbox, outcome: &str) -> u64 {
    let mut registry = warden_telemetry::metrics::Registry::default();
    sb.metrics().register(&mut registry);
    let text = registry.encode().unwrap();
    let sample = format!("warden_http_client_requests_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .map_or(0, |n| n.parse().unwrap())
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
    assert_eq!(requests(&sb, "response"), 1);
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
    // Operators see them counted as denied by policy.
    assert_eq!(requests(&sb, "denied_policy"), 2);
    assert_eq!(requests(&sb, "response"), 0);
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

    // Refused by the address check, before any connection (a connection
    // attempt would end in a connect error, not this one).
    let out = fetch(
        &sb,
        "http://169.254.169.254/latest/meta-data/",
        &["http://*"],
    )
    .await;
    assert_eq!(out["denied"], true, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("an address agents may not reach"),
        "{out}"
    );

    // A name on the allow-list that resolves to loopback is refused too:
    // this machine's host name (`localhost` itself is refused when the
    // pattern is parsed, with a hint).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let loopback = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut addrs| addrs.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    assert!(
        loopback,
        "this test needs the host name {host} to resolve to loopback"
    );
    let out = fetch(
        &sb,
        &format!("http://{host}:{port}/"),
        &[&format!("http://{host}:{port}")],
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
    assert_eq!(requests(&sb, "denied_budget"), 1);
}

#[tokio::test]
async fn a_public_hosts_node_policy_does_not_admit_an_address_grant() {
    // The node means "public hosts only"; a grant naming every address must
    // not slip through its clamp and reach a loopback server.
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| {
        c.policy.http = Some(vec!["*://*:*".into()]);
    });
    let srv = server();
    let out = fetch(&sb, &srv.url(), &["http://0.0.0.0/0:*"]).await;
    assert_eq!(out["denied"], true, "{out}");
    let out = fetch(
        &sb,
        &srv.url(),
        &[&format!("http://127.0.0.1:{}", srv.port())],
    )
    .await;
    assert_eq!(out["denied"], true, "{out}");
    assert_eq!(srv.connections(), 0, "the policy let a request through");

    // A policy that names the block literally admits it.
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| {
        c.policy.http = Some(vec!["http://127.0.0.0/8:*".into()]);
    });
    let out = fetch(
        &sb,
        &srv.url(),
        &[&format!("http://127.0.0.1:{}", srv.port())],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
}

#[tokio::test]
async fn the_response_byte_budget_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let srv = TestServer::start(|_| Response::text(200, &"x".repeat(64 << 10)));
    let probe = load(&sb, components::HTTP_PROBE);
    let run = |max: u64| {
        let mut req = RunRequest::new("p", serde_json::json!({ "url": srv.url() }).to_string());
        req.grant = Grant {
            http: vec![format!("http://127.0.0.1:{}", srv.port())],
            ..Grant::default()
        };
        req.budget = RunBudget {
            max_http_response_bytes: max,
            ..RunBudget::default()
        };
        sb.run(&probe, req)
    };
    let outcome = run(1000).await;
    let out = output(&outcome);
    assert!(out["body"].is_null(), "the whole body arrived: {out}");
    assert!(out["error"].as_str().unwrap().contains("1000"), "{out}");
    assert!(
        outcome.usage.http_response_bytes <= 1000,
        "{:?}",
        outcome.usage
    );
    // With room for it, the same body arrives whole.
    let outcome = run(1 << 20).await;
    assert_eq!(output(&outcome)["body"].as_str().unwrap().len(), 64 << 10);
    assert_eq!(outcome.usage.http_response_bytes, 64 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_fires_while_the_guest_waits_in_a_host_call() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    // A server that answers after 10 s: the guest sits in a host call.
    let srv = TestServer::start(|_| {
        std::thread::sleep(std::time::Duration::from_secs(10));
        Response::text(200, "late")
    });
    let probe = load(&sb, components::HTTP_PROBE);
    let mut req = RunRequest::new("p", serde_json::json!({ "url": srv.url() }).to_string());
    req.grant = Grant {
        http: vec![format!("http://127.0.0.1:{}", srv.port())],
        ..Grant::default()
    };
    req.budget = RunBudget {
        timeout: std::time::Duration::from_millis(500),
        ..RunBudget::default()
    };
    let started = std::time::Instant::now();
    let outcome = sb.run(&probe, req).await;
    let took = started.elapsed();
    assert_eq!(
        crate::failure_kind(&outcome),
        warden_host::FailureKind::Timeout
    );
    // Generous bounds: at the deadline, long before the server answers.
    assert!(took >= std::time::Duration::from_millis(450), "{took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(srv.connections(), 1, "the request was under way");
}

/// wasi:http follows no redirect: a guest gets the 302 itself, and the
/// place it points to (allowed or not) sees no request unless the guest
/// asks again (issue 24, item 14).
#[tokio::test]
async fn redirects_come_back_to_the_guest_and_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let target = server();
    let location = format!("{}/moved", target.url());
    let origin =
        TestServer::start(move |_| Response::text(302, "moved").with_header("location", &location));
    let allow = [
        format!("http://127.0.0.1:{}", origin.port()),
        format!("http://127.0.0.1:{}", target.port()),
    ];
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    let out = fetch(&sb, &format!("{}/start", origin.url()), &allow).await;
    assert_eq!(out["status"], 302, "{out}");
    assert_eq!(origin.connections(), 1);
    assert_eq!(target.connections(), 0, "the redirect was followed");
}
