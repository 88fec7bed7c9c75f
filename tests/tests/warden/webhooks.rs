//! Webhooks against receivers on loopback: a run's result is POSTed once
//! it ends, signed (checked here with an HMAC of our own), retried after a
//! failed try, given up on after the last, and each try shows on the run.
//! A dead receiver holds up no one else's; a URL off the tenant's
//! allow-list is refused at submit, and a name resolving to loopback at
//! delivery.

use crate::http_api::{api_cluster_with, get, post};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_tests::http_server::{Request, Response, TestServer};

/// A receiver that records each request and answers with the statuses
/// given, in turn (the last one from then on).
fn receiver(statuses: &[u16]) -> (TestServer, Arc<Mutex<Vec<Request>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let statuses = statuses.to_vec();
    let log = seen.clone();
    let server = TestServer::start(move |request| {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        let status = statuses[(log.len() - 1).min(statuses.len() - 1)];
        Response::text(status, "")
    });
    (server, seen)
}

/// Checks `Warden-Signature` (`t=..,k=..,v1=..`) of `request` under
/// `secret` (hex); returns the key id.
fn check_signature(request: &Request, secret: &str) -> String {
    let header = request.header("warden-signature").expect("a signature");
    let field = |name: &str| {
        header
            .split(',')
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {header}"))
            .to_string()
    };
    let t: i64 = field("t").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - t).abs() < 120, "signed at {t}, now {now}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&hex::decode(field("v1")).unwrap())
        .expect("the signature is the HMAC of t.body under the tenant's secret");
    // One byte changed in the body: the same signature no longer holds.
    let mut forged = request.body.clone();
    forged[0] ^= 1;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&forged);
    assert!(
        mac.verify_slice(&hex::decode(field("v1")).unwrap())
            .is_err()
    );
    field("k")
}

/// The run's webhook once `done` says it is settled (within 30 s).
async fn settled(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, run) = get(http, &format!("{base}/v1/runs/{id}"), token).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if done(&run["webhook"]) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook did not settle: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits a run of hello@1 with `url` as its webhook, and waits for the
/// run (not its webhook) to end.
async fn submit(http: &reqwest::Client, base: &str, token: &str, url: &str) -> (StatusCode, Value) {
    let body = json!({ "agent": "hello@1", "input": { "name": "hook" }, "webhook_url": url });
    post(http, &format!("{base}/v1/runs?wait=60s"), token, &body).await
}

/// A port that refuses connections, held for as long as the socket
/// lives (bound, never listening: no other test can take it).
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A receiver that accepts connections and never answers.
fn silent_receiver() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in held.incoming() {
            match conn {
                Ok(conn) => open.push(conn),
                Err(_) => return,
            }
        }
    });
    (listener, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_s_result_is_posted_signed_retried_and_each_try_shows_on_the_run() {
    let (c, _procs, http, base) = api_cluster_with(&["--webhook-attempts", "2"]).await;
    let token = c.token("default", "submitter");
    let (flaky, flaky_seen) = receiver(&[503, 200]);
    // Nothing listens on this port: every try fails to connect.
    let (_refusing, dead_port) = refusing_port();
    let dead_url = format!("http://127.0.0.1:{dead_port}/hook");
    // This one takes each try and never answers (each waits 10 s).
    let (_silent, silent_port) = silent_receiver();
    let silent_url = format!("http://127.0.0.1:{silent_port}/hook");

    // No allow-list yet: refused at submit, with what to do.
    let hook = format!("{}/hook", flaky.url());
    let (status, problem) = submit(&http, &base, &token, &hook).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("warden webhooks allow"),
        "{problem}"
    );

    // The allow-list is the system role's: a tenant admin may not set it.
    let admin = c.token("default", "admin");
    let out = c
        .command(&[
            "webhooks",
            "allow",
            "--tenant",
            "default",
            "http://127.0.0.1:1",
        ])
        .env("WARDEN_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("system"));
    let out = c.cli(&[
        "webhooks",
        "allow",
        "--tenant",
        "default",
        &format!("http://127.0.0.1:{}", flaky.port()),
        &format!("http://127.0.0.1:{dead_port}"),
        &format!("http://127.0.0.1:{silent_port}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.lines().last().unwrap().trim().to_string();
    assert_eq!(secret.len(), 64, "{stdout}");

    // Off the list (another port, user info, not http): refused, and a
    // dry run lists it with the rest.
    for (url, code) in [
        ("http://127.0.0.2:9/x".to_string(), StatusCode::FORBIDDEN),
        (
            format!("http://u:p@127.0.0.1:{}/", flaky.port()),
            StatusCode::BAD_REQUEST,
        ),
        ("ftp://127.0.0.1/".to_string(), StatusCode::BAD_REQUEST),
    ] {
        let (status, problem) = submit(&http, &base, &token, &url).await;
        assert_eq!(status, code, "{url}: {problem}");
    }
    let body = json!({ "agent": "nope@1", "dry_run": true, "webhook_url": "http://127.0.0.2:9/x" });
    let (status, dry) = post(&http, &format!("{base}/v1/runs"), &token, &body).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    let codes: Vec<&str> = dry["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"not_found") && codes.contains(&"permission_denied"),
        "{dry}"
    );

    // Runs to the dead receiver, the silent one and the flaky one, in
    // that order.
    let (status, dead_run) = submit(&http, &base, &token, &dead_url).await;
    assert_eq!(status, StatusCode::CREATED, "{dead_run}");
    assert_eq!(dead_run["webhook"]["url"], dead_url.as_str());
    let (status, silent_run) = submit(&http, &base, &token, &silent_url).await;
    assert_eq!(status, StatusCode::CREATED, "{silent_run}");
    let (status, run) = submit(&http, &base, &token, &hook).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();

    // The flaky receiver: 503, then (a second later) 200. Delivered.
    let run = settled(&http, &base, &token, &id, |w| w["state"] == "delivered").await;
    let tries = run["webhook"]["deliveries"].as_array().unwrap().clone();
    assert_eq!(tries.len(), 2, "{run}");
    assert_eq!(tries[0]["http_status"], 503, "{run}");
    assert_eq!(tries[0]["ok"], false);
    assert!(tries[0]["error"].as_str().unwrap().contains("503"), "{run}");
    assert_eq!(tries[1]["http_status"], 200, "{run}");
    assert_eq!(tries[1]["ok"], true);
    let waited = tries[1]["unix_ms"].as_i64().unwrap() - tries[0]["unix_ms"].as_i64().unwrap();
    assert!(waited >= 900, "retried after {waited} ms");
    // Both tries came while the silent receiver still held its first: it
    // held up no one else's.
    let silent = silent_run["run_id"].as_str().unwrap();
    let (_, held) = get(&http, &format!("{base}/v1/runs/{silent}"), &token).await;
    assert_eq!(held["webhook"]["state"], "pending", "{held}");
    assert_eq!(held["webhook"]["deliveries"], json!([]), "{held}");

    // What the receiver got: the ended run, signed, the same id each time.
    let seen = flaky_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (n, request) in seen.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("warden-webhook-id"), Some(id.as_str()));
        assert_eq!(
            request.header("warden-delivery-attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let key = check_signature(request, &secret);
        assert!(key.starts_with("whk_"), "{key}");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["event"], "run.ended");
        assert_eq!(body["run"]["run_id"], id.as_str());
        assert_eq!(body["run"]["state"], "succeeded");
        assert_eq!(body["run"]["output"]["echo"]["name"], "hook");
    }

    // The dead receiver: two tries (--webhook-attempts 2), then failed.
    let dead = dead_run["run_id"].as_str().unwrap();
    let run = settled(&http, &base, &token, dead, |w| w["state"] == "failed").await;
    let tries = run["webhook"]["deliveries"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{run}");
    for t in tries {
        assert_eq!(t["ok"], false);
        assert!(t.get("http_status").is_none(), "{run}");
        assert!(t["error"].as_str().unwrap().contains("connect"), "{run}");
    }

    // A new key: later deliveries are signed with it, under its own id.
    let rotated = c
        .command(&["webhooks", "rotate-key"])
        .env("WARDEN_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new_secret = String::from_utf8(rotated.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_secret, secret);
    let (ok, ok_seen) = receiver(&[200]);
    let out = c.cli(&[
        "webhooks",
        "allow",
        "--tenant",
        "default",
        &format!("http://127.0.0.1:{}", ok.port()),
    ]);
    assert!(out.status.success());
    // Not a new secret: the tenant has a key.
    assert!(
        !String::from_utf8(out.stdout)
            .unwrap()
            .contains("shown once")
    );
    let (_, run) = submit(&http, &base, &token, &format!("{}/again", ok.url())).await;
    let id = run["run_id"].as_str().unwrap();
    settled(&http, &base, &token, id, |w| w["state"] == "delivered").await;
    let request = ok_seen.lock().unwrap()[0].clone();
    let old_key = check_signature(&seen[0], &secret);
    assert_ne!(check_signature(&request, &new_secret), old_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_name_resolving_to_loopback_is_refused_at_delivery_without_a_retry() {
    let (c, _procs, http, base) = api_cluster_with(&[]).await;
    let token = c.token("default", "submitter");
    let (server, seen) = receiver(&[200]);
    // Any public host on this port: `localhost` passes the list (a name),
    // and is refused once it resolves to a loopback address.
    let out = c.cli(&[
        "webhooks",
        "allow",
        "--tenant",
        "default",
        &format!("http://*:{}", server.port()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("http://localhost:{}/hook", server.port());
    let (status, run) = submit(&http, &base, &token, &url).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["run_id"].as_str().unwrap();
    let run = settled(&http, &base, &token, id, |w| w["state"] == "failed").await;
    let tries = run["webhook"]["deliveries"].as_array().unwrap();
    assert_eq!(tries.len(), 1, "no retry of a refused address: {run}");
    assert!(
        tries[0]["error"].as_str().unwrap().contains("loopback"),
        "{run}"
    );
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(server.connections(), 0);
}
