//! The HTTP API's lists and reads beyond runs' own routes, over real
//! HTTPS: 10,000 runs paged through once each and narrowed by filters; an
//! agent and its versions; components validated and published by upload;
//! the audit log and quotas, each for the roles and tenants allowed.

use crate::http_api::{answer, api_cluster, get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use warden_tests::examples;

/// Every run `url` (a `/v1/runs` query) lists, page by page.
async fn all_pages(http: &reqwest::Client, url: &str, token: &str) -> (Vec<Value>, usize) {
    let (mut runs, mut pages) = (Vec::new(), 0);
    let mut cursor: Option<String> = None;
    loop {
        let mut page_url = url.to_string();
        if let Some(c) = &cursor {
            page_url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(http, &page_url, token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        runs.extend(page["runs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (runs, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_runs_page_through_once_each_and_filters_narrow_them() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    // Ten batches of 1,000, each labelled with its number; a selector no
    // node has keeps them queued (this test is about lists, not runs).
    for batch in 0..10 {
        let runs: Vec<_> = (0..1000)
            .map(|i| {
                json!({
                    "agent": "hello@1", "input": i,
                    "labels": { "batch": batch.to_string(), "half": if i < 500 { "first" } else { "second" } },
                    "node_selector": { "pool": "none" },
                })
            })
            .collect();
        let (status, made) = post(
            &http,
            &format!("{base}/v1/runs:batch"),
            &admin,
            &json!({ "runs": runs }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
    }

    // Pages of 1,000: each run once, newest first.
    let (runs, pages) = all_pages(&http, &format!("{base}/v1/runs?limit=1000"), &admin).await;
    assert_eq!(runs.len(), 10_000);
    assert_eq!(pages, 10);
    let ids: BTreeSet<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000, "a run listed twice");
    let created: Vec<i64> = runs
        .iter()
        .map(|r| r["created_unix_ms"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "not newest first");
    assert!(
        runs.iter().all(|r| r.get("input").is_none()),
        "lists carry summaries"
    );

    // By label: exactly that batch, over pages of 300.
    let (batch, pages) = all_pages(
        &http,
        &format!("{base}/v1/runs?label=batch=3&limit=300"),
        &admin,
    )
    .await;
    assert_eq!((batch.len(), pages), (1000, 4));
    assert!(batch.iter().all(|r| r["labels"]["batch"] == "3"));
    // By agent: the name matches each version; another version, none.
    let (status, page) = get(
        &http,
        &format!("{base}/v1/runs?agent=hello&limit=5"),
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["runs"].as_array().unwrap().len(), 5, "{page}");
    let (_, page) = get(
        &http,
        &format!("{base}/v1/runs?agent=hello@1&limit=5"),
        &admin,
    )
    .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 5, "{page}");
    let (_, page) = get(&http, &format!("{base}/v1/runs?agent=hello@2"), &admin).await;
    assert_eq!(page["runs"], json!([]), "{page}");
    let (_, page) = get(&http, &format!("{base}/v1/runs?agent=hell"), &admin).await;
    assert_eq!(
        page["runs"],
        json!([]),
        "a prefix of a name is not the name: {page}"
    );
    // Since: every run of the last batch, and none made before the time.
    let since = batch_first_created(&runs, "9");
    let (recent, _) = all_pages(
        &http,
        &format!("{base}/v1/runs?since_unix_ms={since}&limit=1000"),
        &admin,
    )
    .await;
    assert!(recent.len() >= 1000, "{}", recent.len());
    assert!(
        recent
            .iter()
            .all(|r| r["created_unix_ms"].as_i64().unwrap() >= since)
    );
    assert_eq!(
        recent
            .iter()
            .filter(|r| r["labels"]["batch"] == "9")
            .count(),
        1000
    );
    // Filters combine, labels too (runs with every one given).
    let (both, _) = all_pages(
        &http,
        &format!(
            "{base}/v1/runs?label=batch=3&label=half=first&agent=hello&state=queued&limit=1000"
        ),
        &admin,
    )
    .await;
    assert_eq!(both.len(), 500);
    assert!(
        both.iter()
            .all(|r| r["labels"]["batch"] == "3" && r["labels"]["half"] == "first")
    );
    let (_, page) = get(
        &http,
        &format!("{base}/v1/runs?label=batch=3&state=succeeded"),
        &admin,
    )
    .await;
    assert_eq!(page["runs"], json!([]), "{page}");
    // A bad one says what is wrong.
    let (status, problem) = get(&http, &format!("{base}/v1/runs?label=batch"), &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("key=value"),
        "{problem}"
    );
    // Another tenant sees none of them, whatever the filter.
    let other = c.token("acme", "viewer");
    let (_, page) = get(&http, &format!("{base}/v1/runs?label=batch=3"), &other).await;
    assert_eq!(page["runs"], json!([]), "{page}");
}

/// The oldest `created_unix_ms` of the runs labelled `batch`.
fn batch_first_created(runs: &[Value], batch: &str) -> i64 {
    runs.iter()
        .filter(|r| r["labels"]["batch"] == batch)
        .map(|r| r["created_unix_ms"].as_i64().unwrap())
        .min()
        .unwrap()
}

/// A multipart form with the component `bytes` and `manifest`, if any.
fn form(bytes: Vec<u8>, manifest: Option<&str>) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new().part(
        "component",
        reqwest::multipart::Part::bytes(bytes).file_name("agent.wasm"),
    );
    if let Some(manifest) = manifest {
        form = form.text("manifest", manifest.to_string());
    }
    form
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_validated_published_by_upload_and_read_with_their_versions() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    let hello = std::fs::read(examples::HELLO).unwrap();
    let manifest = "[budget]\nfuel = 1000000\n";

    // A good component: what it is, no problems.
    let response = http
        .post(format!("{base}/v1/agents/validate"))
        .bearer_auth(&admin)
        .multipart(form(hello.clone(), Some(manifest)))
        .send()
        .await
        .unwrap();
    let (status, found) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["ok"], true, "{found}");
    assert_eq!(found["world"], "warden:agent/agent");
    assert!(found["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(found["exports"].to_string().contains("run"), "{found}");
    assert!(!found["imports"].as_array().unwrap().is_empty(), "{found}");

    // Not a component, a bad manifest and a bad name: all three at once.
    let bad = reqwest::multipart::Form::new()
        .part(
            "component",
            reqwest::multipart::Part::bytes(b"\0asm junk".to_vec()),
        )
        .text("manifest", "[budget\n")
        .text("name", "Bad Name")
        .text("version", "1");
    let response = http
        .post(format!("{base}/v1/agents/validate"))
        .bearer_auth(&admin)
        .multipart(bad)
        .send()
        .await
        .unwrap();
    let (status, found) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["ok"], false);
    assert_eq!(found["problems"].as_array().unwrap().len(), 3, "{found}");
    // No component at all; not a form.
    let response = http
        .post(format!("{base}/v1/agents/validate"))
        .bearer_auth(&admin)
        .multipart(reqwest::multipart::Form::new().text("manifest", ""))
        .send()
        .await
        .unwrap();
    let (status, problem) = answer(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("component"),
        "{problem}"
    );
    let response = http
        .post(format!("{base}/v1/agents/validate"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer(response).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Publish by upload: made, then the same again is no change, other
    // bytes under that version a conflict; a viewer may not.
    let publish = |bytes: Vec<u8>, token: &str| {
        http.post(format!("{base}/v1/agents/hello/versions/9"))
            .bearer_auth(token)
            .multipart(form(bytes, Some(manifest)))
            .send()
    };
    let (status, made) = answer(publish(hello.clone(), &admin).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["created"], true);
    let (status, again) = answer(publish(hello.clone(), &admin).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["created"], false);
    let spin = std::fs::read(warden_tests::components::SPIN).unwrap();
    let (status, conflict) = answer(publish(spin, &admin).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    // (A few bytes: the refusal comes before the body is read, and a
    // client still sending a large one may see the connection close
    // before it reads the answer.)
    let viewer = c.token("default", "viewer");
    let (status, _) = answer(publish(b"\0asm".to_vec(), &viewer).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A published version is what validate then calls a conflict.
    let other_bytes = reqwest::multipart::Form::new()
        .part(
            "component",
            reqwest::multipart::Part::bytes(std::fs::read(warden_tests::components::SPIN).unwrap()),
        )
        .text("name", "hello")
        .text("version", "9");
    let response = http
        .post(format!("{base}/v1/agents/validate"))
        .bearer_auth(&admin)
        .multipart(other_bytes)
        .send()
        .await
        .unwrap();
    let (_, found) = answer(response).await;
    assert_eq!(found["problems"][0]["code"], "already_exists", "{found}");

    // The agent with its versions, newest first, manifests included.
    let (status, agent) = get(&http, &format!("{base}/v1/agents/hello"), &viewer).await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(agent["name"], "hello");
    assert_eq!(agent["tenant"], "default");
    let versions: Vec<&str> = agent["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["9", "1"], "{agent}");
    assert_eq!(agent["versions"][0]["manifest"], manifest);
    assert_eq!(agent["versions"][0]["digest"], made["digest"]);
    // Another tenant's agent reads as no agent at all.
    let acme = c.token("acme", "admin");
    let (status, theirs) = get(&http, &format!("{base}/v1/agents/hello"), &acme).await;
    let (_, none) = get(&http, &format!("{base}/v1/agents/nosuch"), &acme).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    assert_eq!(
        theirs["detail"].as_str().unwrap().replace("hello", "X"),
        none["detail"].as_str().unwrap().replace("nosuch", "X")
    );

    // The audit log (admin): the publish is in it; a viewer may not read it.
    let (status, audit) = get(&http, &format!("{base}/v1/audit?limit=50"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "publish" && e["target"] == "hello@9"),
        "{audit}"
    );
    assert_eq!(
        get(&http, &format!("{base}/v1/audit"), &viewer).await.0,
        StatusCode::FORBIDDEN
    );
    // Quotas: your own; another tenant's only for the system role.
    let out = c.cli(&[
        "quotas",
        "set",
        "--tenant",
        "default",
        "--max-queued",
        "500",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, quotas) = get(&http, &format!("{base}/v1/quotas"), &viewer).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    assert_eq!(quotas["tenant"], "default");
    assert_eq!(quotas["max_queued"], 500, "{quotas}");
    let (status, _) = get(&http, &format!("{base}/v1/quotas?tenant=default"), &acme).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, theirs) = get(&http, &format!("{base}/v1/quotas?tenant=acme"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["tenant"], "acme");
}
