//! The example agents do what their docs say, and every test component is
//! exercised by some test.

use crate::output;
use warden_host::{Grant, RunBudget, RunRequest};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::{components, examples, load, sandbox};

#[tokio::test]
async fn kv_counter_counts_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let counter = load(&sb, examples::KV_COUNTER);
    for expected in 1..=3 {
        let mut req = RunRequest::new("kv-counter", r#"{"key":"k"}"#);
        req.grant.kv = true;
        assert_eq!(output(&sb.run(&counter, req).await)["count"], expected);
    }
}

#[tokio::test]
async fn http_fetch_and_llm_summarize() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(fake.base_url()));
    let web = fake.server().url();

    let fetch = load(&sb, examples::HTTP_FETCH);
    let mut req = RunRequest::new("http-fetch", format!(r#"{{"url":"{web}/docs/wasm"}}"#));
    req.grant.http = vec![web.clone()];
    let out = output(&sb.run(&fetch, req).await);
    assert_eq!(out["status"], 200);
    assert!(out["excerpt"].as_str().unwrap().starts_with("WebAssembly"));

    let summarize = load(&sb, examples::LLM_SUMMARIZE);
    let mut req = RunRequest::new(
        "llm-summarize",
        r#"{"text":"one two three four five","max_words":10,"model":"m"}"#,
    );
    req.grant.models = vec!["m".into()];
    let out = output(&sb.run(&summarize, req).await);
    assert_eq!(out["summary"], "Summary: one two three four five");
    assert_eq!(fake.requests()[0].body["max_tokens"], 40);
}

#[tokio::test]
async fn research_agent_uses_tools_and_stops_at_its_budget() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(fake.base_url()));
    let agent = load(&sb, examples::RESEARCH_AGENT);
    let web = fake.server().url();
    let input = format!(r#"{{"question":"What is Wasm? Start at {web}/docs/wasm","model":"m"}}"#);
    let grant = Grant {
        http: vec![web.clone()],
        models: vec!["m".into()],
        kv: true,
        ..Grant::default()
    };

    let mut req = RunRequest::new("research-agent", input.clone());
    req.grant = grant.clone();
    let out = output(&sb.run(&agent, req).await);
    assert_eq!(out["stopped"], "answered", "{out}");
    assert_eq!(
        out["tools_used"],
        serde_json::json!(["fetch_url", "save_note"])
    );
    assert!(
        out["answer"].as_str().unwrap().contains("portable binary"),
        "{out}"
    );
    // The tool results went back to the model with the call ids it gave.
    let third = &fake.requests()[2].body["messages"];
    assert_eq!(third[2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(third[3]["tool_call_id"], "call_1");

    let mut req = RunRequest::new("research-agent", input);
    req.grant = grant;
    req.budget = RunBudget {
        max_tokens: Some(300),
        ..RunBudget::default()
    };
    let outcome = sb.run(&agent, req).await;
    let out = output(&outcome);
    assert_eq!(out["stopped"], "budget_exhausted", "{out}");
    assert!(outcome.usage.total_tokens() <= 300);
}

#[test]
fn every_test_component_has_a_test() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/warden");
    let sources: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for (name, _) in components::ALL {
        assert!(
            sources.contains(&format!("components::{name}")),
            "no test uses components::{name}"
        );
    }
    for (name, _) in examples::ALL {
        assert!(
            sources.contains(&format!("examples::{name}")),
            "no test uses examples::{name}"
        );
    }
}
