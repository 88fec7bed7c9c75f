//! `Sandbox::run` fuzzed through the host calls themselves (issue 24, item
//! 15): a guest (`host-calls`) makes whatever calls its input lists (KV,
//! chat, embeddings, HTTP, config, logs, the scratch filesystem) with
//! generated arguments: empty, huge, control characters, path traversal,
//! absolute paths, any Unicode, extreme numbers. Whatever comes in, a run
//! ends as a result or a guest-caused failure: never a panic, never a
//! `host_error`, and the sandbox runs the next agent as before. The CI run
//! keeps the number of cases small; `scripts/fuzz.sh` raises it through
//! `PROPTEST_CASES`.

use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use warden_host::{FailureKind, Grant, RunBudget, RunRequest};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::http_server::{Response, TestServer};
use warden_tests::{components, examples, load, sandbox};

/// Text a hostile guest might hand the host.
fn hostile_text(url: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9._-]{1,16}",
        "\\PC{0,48}",
        "[\\x00-\\x1f\\x7f]{1,8}",
        Just("../../../../../../etc/passwd".to_string()),
        Just("/etc/passwd".to_string()),
        Just("..".to_string()),
        Just("a\0b".to_string()),
        Just("x".repeat(70_000)),
        Just("default".to_string()),
        Just(url.clone()),
        Just(format!("{url}/../../a?b=c#d")),
        Just("http://169.254.169.254/latest/meta-data/".to_string()),
        Just("file:///etc/passwd".to_string()),
    ]
}

fn call(url: String) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("kv.set"),
        Just("kv.get"),
        Just("kv.delete"),
        Just("kv.exists"),
        Just("kv.keys"),
        Just("kv.increment"),
        Just("kv.cas"),
        Just("llm.chat"),
        Just("llm.embed"),
        Just("http.get"),
        Just("config.get"),
        Just("log"),
        Just("fs.write"),
        Just("fs.read"),
        Just("fs.mkdir"),
    ];
    let number = prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::from(u32::MAX) + 1),
        any::<u64>()
    ];
    let float = prop_oneof![
        Just(0.0f64),
        Just(-1.0e300),
        Just(1.0e39),
        Just(f64::from(f32::MAX) * 2.0),
        -10.0f64..10.0
    ];
    (
        name,
        hostile_text(url.clone()),
        hostile_text(url),
        number,
        float,
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(call, a, b, n, x, bytes)| {
            json!({ "call": call, "a": a, "b": b, "n": n, "x": x, "bytes": bytes })
        })
}

/// A guest's own doing, or its budget's: any failure but these.
fn host_fault(kind: FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::HostError | FailureKind::InvalidComponent | FailureKind::NodeShutdown
    )
}

#[test]
fn hostile_arguments_to_every_host_call_end_in_a_result_or_a_guest_failure() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeOpenAi::start();
    let web = TestServer::start(|_| Response::text(200, "page"));
    let sb = sandbox(dir.path(), Some(llm.base_url()));
    let probe = load(&sb, components::HOST_CALLS);
    let hello = load(&sb, examples::HELLO);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = web.url();
    let grant = Grant {
        http: vec![url.clone()],
        models: vec!["*".into()],
        kv: true,
        scratch_dir: true,
        config: [("k".to_string(), "v".to_string())].into(),
    };
    let config = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(24),
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let calls = proptest::collection::vec(call(url), 1..10);
    runner
        .run(&calls, |calls| {
            let mut req = RunRequest::new("host-calls", Value::Array(calls.clone()).to_string());
            req.grant = grant.clone();
            req.budget = RunBudget {
                timeout: Duration::from_secs(20),
                max_tokens: Some(5_000),
                max_http_requests: 4,
                ..RunBudget::default()
            };
            let outcome = runtime.block_on(sb.run(&probe, req));
            match &outcome.result {
                Ok(out) => {
                    let answers: Vec<Value> = serde_json::from_str(out).unwrap();
                    prop_assert_eq!(answers.len(), calls.len(), "{}", out);
                }
                Err(f) => prop_assert!(!host_fault(f.kind), "{calls:?} -> {f}"),
            }
            Ok(())
        })
        .unwrap();
    // The sandbox is as it was: the next agent runs.
    let mut req = RunRequest::new("hello", r#"{"name":"after"}"#);
    req.grant = Grant::default();
    let after = runtime.block_on(sb.run(&hello, req));
    let out: Value = serde_json::from_str(after.result.as_ref().unwrap()).unwrap();
    assert_eq!(out["greeting"], "hello, after");
    // Nothing the guests wrote is left: each run's scratch space went with
    // it, and no path they named (`../../etc/passwd`, `/etc/passwd`) landed
    // anywhere under the node's data dir.
    let mut left = Vec::new();
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path.clone());
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "passwd" || name == "etc" {
                left.push(path);
            }
        }
    }
    assert!(left.is_empty(), "guest files outside a run: {left:?}");
    // This process's scratch root holds no run's directory any more.
    let scratch = dir
        .path()
        .join("scratch")
        .join(std::process::id().to_string());
    if scratch.exists() {
        let runs: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
        assert!(
            runs.is_empty(),
            "a run's scratch dir was left behind: {runs:?}"
        );
    }
}

/// A guest's embeddings call reaches the provider, with the model granted,
/// and its vector comes back (issue 24, item 14: no guest called `embed`).
#[tokio::test]
async fn a_guest_s_embeddings_call_reaches_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeOpenAi::start();
    let sb = sandbox(dir.path(), Some(llm.base_url()));
    let probe = load(&sb, components::HOST_CALLS);
    let calls = json!([
        { "call": "llm.embed", "a": "small", "b": "a sentence to embed" },
        { "call": "llm.embed", "a": "not-granted", "b": "x" },
    ]);
    let mut req = RunRequest::new("host-calls", calls.to_string());
    req.grant = Grant {
        models: vec!["small".into()],
        ..Grant::default()
    };
    let outcome = sb.run(&probe, req).await;
    let answers: Value = serde_json::from_str(outcome.result.as_ref().unwrap()).unwrap();
    assert_eq!(answers[0], json!({ "ok": 1 }), "{answers}");
    assert!(
        answers[1]["error"]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{answers}"
    );
    let sent: Vec<_> = llm
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/embeddings")
        .collect();
    assert_eq!(sent.len(), 1, "only the granted model reached the provider");
    assert_eq!(sent[0].body["model"], "small");
    assert_eq!(sent[0].body["input"], json!(["a sentence to embed"]));
    assert_eq!(outcome.usage.llm_calls, 1);
    assert!(outcome.usage.prompt_tokens > 0);
}
