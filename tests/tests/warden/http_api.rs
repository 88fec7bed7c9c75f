//! The HTTP/JSON API over real HTTPS on loopback, against a control
//! plane process with TLS and tokens (`--http-listen`) and a real node:
//! what each route answers, and that it authorizes exactly as the gRPC
//! method it stands for (tokens, roles, tenants, audit).

use crate::leases::TestCluster;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use warden_tests::cluster::{free_port, publish};
use warden_tests::examples;

/// A control plane with the HTTP API, one node, `hello@1` published; an
/// HTTP client that trusts its CA; the API's base URL.
pub(crate) async fn api_cluster() -> (
    TestCluster,
    Vec<warden_tests::cluster::Proc>,
    reqwest::Client,
    String,
) {
    api_cluster_with(&[]).await
}

/// [`api_cluster`] with more control-plane flags.
pub(crate) async fn api_cluster_with(
    cp_args: &[&str],
) -> (
    TestCluster,
    Vec<warden_tests::cluster::Proc>,
    reqwest::Client,
    String,
) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--http-listen", listen.as_str()];
    args.extend_from_slice(cp_args);
    let (c, cp) = TestCluster::start(&args);
    let node = c.node("node-a", &["--slots", "4"]);
    publish(c.channel().await, examples::HELLO, "hello@1").await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&c.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    (c, vec![cp, node], client, base)
}

/// A response's status and JSON body; a problem's content type checked.
pub(crate) async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap();
    if !status.is_success() {
        assert_eq!(kind, "application/problem+json", "{status}: {body}");
        assert_eq!(body["status"], status.as_u16(), "{body}");
    }
    (status, body)
}

/// `GET url` with `token`: status and JSON body.
pub(crate) async fn get(http: &reqwest::Client, url: &str, token: &str) -> (StatusCode, Value) {
    answer(http.get(url).bearer_auth(token).send().await.unwrap()).await
}

/// `POST url` with `token` and `body` (none if `null`): status and JSON
/// body.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = http.post(url).bearer_auth(token);
    if !body.is_null() {
        request = request.json(body);
    }
    answer(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_submits_waits_reads_lists_and_cancels_runs() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();

    // Submit and wait: the finished run comes back, with where to read it.
    let response = http
        .post(format!("{base}/v1/runs?wait=30s"))
        .bearer_auth(&admin)
        .json(&json!({ "agent": "hello@1", "input": { "name": "http" }, "labels": { "via": "http" } }))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let (status, run) = answer(response).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["output"]["echo"]["name"], "http", "{run}");
    assert_eq!(run["input"]["name"], "http", "{run}");
    assert_eq!(run["labels"]["via"], "http", "{run}");
    assert_eq!(run["attempts"][0]["node_id"], "node-a", "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "succeeded", "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/runs/{id}"));

    // Read it back: the same document the CLI's `runs get --json` prints.
    let (status, got) = get(&http, &format!("{base}{location}"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    let cli = crate::json(&c.cli(&["runs", "get", &id, "--json"]));
    for key in [
        "run_id", "agent", "digest", "state", "input", "output", "attempts", "usage",
    ] {
        assert_eq!(got[key], cli[key], "{key}: {got} vs {cli}");
    }

    // Without waiting: queued (or already further), never blocked.
    let (status, queued) = post(
        &http,
        &format!("{base}/v1/runs"),
        &admin,
        &json!({ "agent": "hello@1", "input": 7 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    assert_eq!(queued["input"], 7);

    // The list carries summaries: no input, output or attempts.
    let (status, page) = get(&http, &format!("{base}/v1/runs?limit=10"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{page}");
    assert!(
        runs.iter()
            .all(|r| r.get("input").is_none() && r.get("attempts").is_none())
    );
    assert!(runs.iter().any(|r| r["run_id"] == id.as_str()));
    assert!(page.get("next_cursor").is_none(), "{page}");

    // Cancel: the run says so (cancelled, or ended before the cancel).
    let queued_id = queued["run_id"].as_str().unwrap();
    let (status, cancelled) = post(
        &http,
        &format!("{base}/v1/runs/{queued_id}/cancel"),
        &admin,
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["run_id"], queued_id);
    let state = cancelled["state"].as_str().unwrap();
    assert!(
        state == "cancelled" || cancelled["cancel_requested"] == true || state == "succeeded",
        "{cancelled}"
    );

    // Nodes, agents, usage and who is asking.
    let (_, nodes) = get(&http, &format!("{base}/v1/nodes"), &admin).await;
    assert_eq!(nodes["nodes"][0]["node_id"], "node-a", "{nodes}");
    assert_eq!(nodes["nodes"][0]["slots"], 4, "{nodes}");
    let (_, agents) = get(&http, &format!("{base}/v1/agents"), &admin).await;
    assert_eq!(agents["agents"][0]["name"], "hello", "{agents}");
    assert_eq!(agents["agents"][0]["version"], "1", "{agents}");
    let (_, usage) = get(&http, &format!("{base}/v1/usage"), &admin).await;
    assert_eq!(usage["usage"][0]["agent"], "hello", "{usage}");
    assert!(
        usage["usage"][0]["succeeded"].as_u64().unwrap() >= 1,
        "{usage}"
    );
    let (_, me) = get(&http, &format!("{base}/v1/whoami"), &admin).await;
    assert_eq!(me["tenant"], "default", "{me}");
    assert_eq!(me["role"], "system", "{me}");

    // Liveness and readiness need no token.
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_authorizes_as_the_grpc_method_it_stands_for() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    let viewer = c.token("default", "viewer");
    let other = c.token("acme", "admin");
    let submit = json!({ "agent": "hello@1", "input": null });

    // No token, a made-up one: 401, saying what to do.
    let (status, problem) = answer(
        http.post(format!("{base}/v1/runs"))
            .json(&submit)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(problem["code"], "unauthenticated");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("needs a token"),
        "{problem}"
    );
    let (status, problem) = answer(
        http.get(format!("{base}/v1/runs"))
            .bearer_auth("wdn_made_up")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");

    // A viewer reads but may not submit, in gRPC's words.
    let (status, problem) = post(&http, &format!("{base}/v1/runs"), &viewer, &submit).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        problem["detail"],
        "this token's role is viewer; submitting runs needs submitter or above"
    );
    let (status, _) = get(&http, &format!("{base}/v1/runs"), &viewer).await;
    assert_eq!(status, StatusCode::OK);
    // Listing nodes needs the system role, over HTTP as over gRPC.
    let (status, problem) = get(&http, &format!("{base}/v1/nodes"), &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    // Another tenant's run does not exist for you: 404, as for no run.
    let (_, run) = post(&http, &format!("{base}/v1/runs"), &admin, &submit).await;
    let id = run["run_id"].as_str().unwrap();
    let (status, theirs) = get(&http, &format!("{base}/v1/runs/{id}"), &other).await;
    let (_, none) = get(&http, &format!("{base}/v1/runs/no-such-run"), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    assert_eq!(
        theirs["detail"].as_str().unwrap().replace(id, "ID"),
        none["detail"]
            .as_str()
            .unwrap()
            .replace("no-such-run", "ID"),
        "a foreign run must read like a missing one"
    );
    let (_, cancel) = post(
        &http,
        &format!("{base}/v1/runs/{id}/cancel"),
        &other,
        &Value::Null,
    )
    .await;
    assert_eq!(cancel["status"], 404, "{cancel}");
    let (_, listed) = get(&http, &format!("{base}/v1/runs"), &other).await;
    assert_eq!(listed["runs"], json!([]), "{listed}");
    // Nor does its agent: the same error a gRPC submit gets.
    let (status, problem) = post(&http, &format!("{base}/v1/runs"), &other, &submit).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("tenant acme has no agent named hello"),
        "{problem}"
    );

    // HTTP's denials are in the audit log under the gRPC method's name.
    let audit = c.cli(&["audit", "list", "--json"]);
    let audit = String::from_utf8(audit.stdout).unwrap();
    assert!(audit.contains("RunService.Submit"), "{audit}");
    assert!(audit.contains("role viewer needs submitter"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_problem_that_names_what_is_wrong() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    let post = |path: &str| http.post(format!("{base}{path}")).bearer_auth(&admin);

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            post("/v1/runs")
                .body("{not json")
                .header("content-type", "application/json"),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            post("/v1/runs").body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type: application/json",
        ),
        (
            post("/v1/runs").json(&json!({ "agent": "hello@1", "inptu": 1 })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `inptu`",
        ),
        (
            post("/v1/runs").json(&json!({ "agent": "hello world" })),
            StatusCode::BAD_REQUEST,
            "is not NAME or NAME@VERSION",
        ),
        (
            post("/v1/runs").json(&json!({ "agent": "hello@1", "budget": { "timeout": "0s" } })),
            StatusCode::BAD_REQUEST,
            "timeout",
        ),
        (
            post("/v1/runs?wait=soon").json(&json!({ "agent": "hello@1" })),
            StatusCode::BAD_REQUEST,
            "give a duration such as 30s",
        ),
        (
            post("/v1/runs?wait=1h").json(&json!({ "agent": "hello@1" })),
            StatusCode::BAD_REQUEST,
            "longer than the most",
        ),
        (
            post("/v1/runs?colour=red").json(&json!({ "agent": "hello@1" })),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            http.get(format!("{base}/v1/runs?state=bogus"))
                .bearer_auth(&admin),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
        (
            http.get(format!("{base}/v1/runs?cursor=forged"))
                .bearer_auth(&admin),
            StatusCode::BAD_REQUEST,
            "page token",
        ),
        (
            http.get(format!("{base}/v1/nowhere")).bearer_auth(&admin),
            StatusCode::NOT_FOUND,
            "no such path",
        ),
        (
            http.delete(format!("{base}/v1/runs")).bearer_auth(&admin),
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take that method",
        ),
    ];
    for (request, want, words) in cases {
        let (status, problem) = answer(request.send().await.unwrap()).await;
        assert_eq!(status, want, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(words),
            "{words}: {problem}"
        );
    }

    // A body over the bound (the largest input, 1 MiB, and 64 KiB more)
    // is refused by its declared length: the answer comes while the body
    // has not even been sent.
    let unsent = reqwest::Body::wrap_stream(futures_util::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let (status, problem) = answer(
        post("/v1/runs")
            .header("content-type", "application/json")
            .header("content-length", (2 << 20).to_string())
            .body(unsent)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    // And nothing is read before the caller is known: without a token, a
    // body that is not even JSON gets 401, not 415.
    let (status, _) = answer(
        http.post(format!("{base}/v1/runs"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// `warden dev` serves the API without TLS or tokens, so only to this
/// machine: a request naming another host (a web page's DNS rebinding) is
/// refused, and one client address holds at most 64 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_the_api_answers_only_this_machine_and_bounds_each_client() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_dev, _) = warden_tests::cluster::dev(
        std::path::Path::new(env!("CARGO_BIN_EXE_warden-cli")),
        &tmp.path().join("data"),
        &[
            "--http-listen",
            &format!("127.0.0.1:{port}"),
            "--slots",
            "1",
        ],
        &warden_tests::cluster::log_dir(tmp.path()),
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/whoami");
    let (status, me) = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["tenant"], "default");
    for host in ["localhost", "[::1]:80", "127.0.0.1"] {
        let response = http.get(&url).header("host", host).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "10.0.0.1",
    ] {
        let (status, problem) =
            answer(http.get(&url).header("host", host).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {problem}");
    }

    // 64 connections that send nothing are held; the 65th is closed at
    // once, and the API still answers once some go.
    let addr = format!("127.0.0.1:{port}");
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Give the server a moment to have taken all 64.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut extra, &mut byte),
    )
    .await
    .expect("the 65th connection is closed, not held");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    held.truncate(10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

/// A dry run checks everything a submit would and starts nothing, listing
/// every problem at once (over HTTP, gRPC and the CLI alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_every_problem_at_once_and_starts_nothing() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    let bad = json!({
        "agent": "hello@1",
        "dry_run": true,
        "grant": { "http": ["https://api.example.com"] },
        "budget": { "timeout": "0s" },
        "labels": { "role": "has space" },
        "node_selector": { "gpu": "a100" },
    });
    let (status, found) = post(&http, &format!("{base}/v1/runs"), &admin, &bad).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["ok"], false, "{found}");
    let problems: Vec<(String, String)> = found["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["code"].as_str().unwrap().into(),
                p["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has =
        |code: &str, words: &str| problems.iter().any(|(c, m)| c == code && m.contains(words));
    assert!(
        has("permission_denied", "without a capability manifest"),
        "{found}"
    );
    assert!(has("invalid_argument", "timeout"), "{found}");
    assert!(has("invalid_argument", "the run's labels"), "{found}");
    assert_eq!(problems.len(), 3, "{found}");
    // No node for the selector would only hold the run back: a warning.
    let warning = found["warnings"][0]["message"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no ready node has the labels gpu=a100"),
        "{found}"
    );

    // An agent that does not exist is one problem among the others.
    let (_, found) = post(
        &http,
        &format!("{base}/v1/runs"),
        &admin,
        &json!({ "agent": "nope@1", "dry_run": true, "input": null, "labels": { "a b": "c" } }),
    )
    .await;
    let codes: Vec<&str> = found["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["not_found", "invalid_argument"], "{found}");

    // A good one: no problems, and still no run.
    let (status, found) = post(
        &http,
        &format!("{base}/v1/runs"),
        &admin,
        &json!({ "agent": "hello@1", "dry_run": true }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, json!({ "ok": true, "problems": [], "warnings": [] }));
    // An oci:// agent is not fetched by a dry run: a registry nobody
    // listens on is no problem, a malformed reference is.
    let url = format!("{base}/v1/runs");
    let oci = json!({ "agent": "oci://127.0.0.1:9/a/b:1", "dry_run": true });
    let (_, found) = post(&http, &url, &admin, &oci).await;
    assert_eq!(found["ok"], true, "{found}");
    let (_, found) = post(
        &http,
        &url,
        &admin,
        &json!({ "agent": "oci://", "dry_run": true }),
    )
    .await;
    assert_eq!(found["problems"][0]["code"], "invalid_argument", "{found}");
    let (_, page) = get(&http, &format!("{base}/v1/runs"), &admin).await;
    assert_eq!(page["runs"], json!([]), "a dry run started a run: {page}");

    // The CLI says the same, exit 2 when something is wrong.
    let out = c.cli(&[
        "submit",
        "hello@1",
        "--dry-run",
        "--selector",
        "gpu=a100",
        "--allow-http",
        "https://api.example.com",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("permission_denied: ")
            && said.contains("warning: no ready node has the labels gpu=a100"),
        "{said}"
    );
    let out = c.cli(&["submit", "hello@1", "--dry-run"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok: the submit would be taken"
    );
}
