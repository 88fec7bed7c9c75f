//! A run's logs and state changes as Server-Sent Events over the HTTP API,
//! over real HTTPS against a control plane and node processes.

use crate::http_api::{answer, api_cluster, get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use warden_tests::cluster::publish;

/// One Server-Sent Event: its `event`, `id` and `data`.
#[derive(Debug, Default)]
struct Sse {
    event: String,
    id: String,
    data: String,
}

/// Reads events from `response` until `stop` holds for one (returned
/// last) or the stream ends; at most 60 s.
async fn read_events(response: &mut reqwest::Response, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = Sse::default();
            for line in block.lines() {
                if let Some((field, value)) = line.split_once(':') {
                    let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                    match field {
                        "event" => event.event = value,
                        "id" => event.id = value,
                        "data" => event.data = value,
                        _ => {}
                    }
                }
            }
            if event.event.is_empty() {
                continue; // a keep-alive comment
            }
            let done = stop(&event);
            events.push(event);
            if done {
                return events;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events within 60 s")
            .unwrap();
        match chunk {
            Some(bytes) => buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => return events,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_as_events_resume_after_the_last_one_seen_and_events_end_with_the_run() {
    let (c, _procs, http, base) = api_cluster().await;
    let admin = c.admin.clone();
    publish(
        c.channel().await,
        warden_tests::components::SLEEPER,
        "sleeper@1",
    )
    .await;
    // 8 lines, one every 300 ms.
    let (_, run) = post(
        &http,
        &format!("{base}/v1/runs"),
        &admin,
        &json!({ "agent": "sleeper@1", "input": { "ms": 2400, "lines": 8, "tag": "done" } }),
    )
    .await;
    let id = run["run_id"].as_str().unwrap().to_string();
    let mut changes = http
        .get(format!("{base}/v1/runs/{id}/events"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(changes.headers()["content-type"], "text/event-stream");

    // Follow until three lines are in, then drop the connection.
    let url = format!("{base}/v1/runs/{id}/logs?follow=true");
    let mut first = http.get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let seen = read_events(&mut first, |e| e.id == "1.2").await;
    drop(first);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|e| e.event == "line"), "{seen:?}");
    let line: Value = serde_json::from_str(&seen[0].data).unwrap();
    assert_eq!(line["message"], "tick 0", "{line}");
    assert_eq!(line["attempt"], 1);

    // Reconnect where it left off: the rest, each once, then `end`.
    let mut rest = http
        .get(&url)
        .bearer_auth(&admin)
        .header("last-event-id", "1.2")
        .send()
        .await
        .unwrap();
    let rest = read_events(&mut rest, |e| e.event == "end").await;
    let ids: Vec<&str> = rest.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["1.3", "1.4", "1.5", "1.6", "1.7", ""], "{rest:?}");
    assert_eq!(rest.last().unwrap().event, "end");

    // The state changes: queued or running first, succeeded last, then end.
    let states = read_events(&mut changes, |e| e.event == "end").await;
    let last_run = &states[states.len() - 2];
    assert_eq!(last_run.event, "run");
    let last_run: Value = serde_json::from_str(&last_run.data).unwrap();
    assert_eq!(last_run["state"], "succeeded", "{last_run}");
    assert_eq!(last_run["output"], "done", "{last_run}");

    // Without follow: the lines as one JSON document.
    let (status, all) = get(&http, &format!("{base}/v1/runs/{id}/logs"), &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["lines"].as_array().unwrap().len(), 8, "{all}");
    // A forged resume point is refused, not guessed at.
    let (status, problem) = answer(
        http.get(&url)
            .bearer_auth(&admin)
            .header("last-event-id", "x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}
