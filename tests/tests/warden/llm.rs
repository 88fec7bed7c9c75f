//! The LLM capability against a fake OpenAI-compatible server on loopback:
//! allow-list, max_tokens clamping, token and cost budgets.

use crate::output;
use std::sync::Arc;
use std::time::Duration;
use warden_host::capability::kv::MemoryStore;
use warden_host::capability::llm::{LlmService, ModelPrice, OpenAiProvider};
use warden_host::run::HostServices;
use warden_host::{Grant, RunBudget, RunRequest, Sandbox};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::{components, load, sandbox, sandbox_with};

fn grant(models: &[&str]) -> Grant {
    Grant {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..Grant::default()
    }
}

#[tokio::test]
async fn max_tokens_is_clamped_and_budget_exhaustion_is_reported() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(fake.base_url()));
    let probe = load(&sb, components::LLM_PROBE);

    let mut req = RunRequest::new(
        "probe",
        r#"{"calls": 10, "max_tokens": 1000, "model": "small"}"#,
    );
    req.grant = grant(&["small"]);
    req.budget = RunBudget {
        max_tokens: Some(100),
        ..RunBudget::default()
    };
    let outcome = sb.run(&probe, req).await;
    let calls: Vec<String> = serde_json::from_value(output(&outcome)).unwrap();

    // Every request the provider saw asked for no more than what was left.
    let seen = fake.requests();
    assert!(!seen.is_empty());
    assert_eq!(seen[0].body["model"], "small");
    let first = seen[0].body["max_tokens"].as_u64().unwrap();
    assert!(
        first < 100,
        "first max_tokens {first} not clamped below the budget"
    );
    for r in &seen {
        assert!(r.body["max_tokens"].as_u64().unwrap() <= 100);
    }
    assert_eq!(calls.last().unwrap(), "budget_exhausted", "{calls:?}");
    assert_eq!(
        seen.len(),
        calls.len() - 1,
        "the exhausted call never reached the provider"
    );
    let used = outcome.usage.total_tokens();
    assert!(used <= 100 && used > 50, "used {used} tokens of 100");
    assert_eq!(outcome.usage.llm_calls, seen.len() as u64);
}

#[tokio::test]
async fn models_not_granted_are_refused_before_the_provider() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(fake.base_url()));
    let probe = load(&sb, components::LLM_PROBE);

    let mut req = RunRequest::new("probe", r#"{"calls": 1, "model": "big"}"#);
    req.grant = grant(&["small"]);
    let calls = output(&sb.run(&probe, req).await);
    assert!(
        calls[0].as_str().unwrap().contains("ModelNotAllowed"),
        "{calls}"
    );

    let req = RunRequest::new("probe", r#"{"calls": 1, "model": "small"}"#);
    let calls = output(&sb.run(&probe, req).await);
    assert!(
        calls[0].as_str().unwrap().contains("ModelNotAllowed"),
        "{calls}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn cost_budget_uses_the_price_table_and_the_key_stays_in_the_host() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let provider = OpenAiProvider::new(
        &fake.base_url(),
        Some("test-key".into()),
        Duration::from_secs(30),
    )
    .unwrap();
    let sb = sandbox_with(dir.path(), |_| {});
    let services = HostServices {
        kv: Arc::new(MemoryStore::default()),
        llm: LlmService {
            provider: Some(Arc::new(provider)),
            default_model: None,
            default_max_tokens: 1024,
            prices: [(
                "priced".to_string(),
                ModelPrice {
                    input_per_mtok: 1_000.0,
                    output_per_mtok: 10_000.0,
                },
            )]
            .into(),
        },
        scratch_root: dir.path().join("scratch"),
        metrics: Default::default(),
    };
    let sb = Sandbox::new(sb.engine().clone(), services, sb.limits().clone());
    let probe = load(&sb, components::LLM_PROBE);
    let mut req = RunRequest::new("probe", r#"{"calls": 10, "model": "priced"}"#);
    req.grant = grant(&["*"]);
    // $0.01 an output token: two calls of ~50 tokens fit in $1.
    req.budget = RunBudget {
        max_cost_usd: Some(1.0),
        ..RunBudget::default()
    };
    let outcome = sb.run(&probe, req).await;
    let calls: Vec<String> = serde_json::from_value(output(&outcome)).unwrap();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls.last().unwrap(), "budget_exhausted", "{calls:?}");
    assert!(
        outcome.usage.cost_usd <= 1.0,
        "spent {}",
        outcome.usage.cost_usd
    );
    assert!(
        outcome.usage.cost_usd > 0.9,
        "spent {}",
        outcome.usage.cost_usd
    );
    let seen = fake.requests();
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer test-key"));
}

#[tokio::test]
async fn a_cost_budget_needs_a_price_for_the_model() {
    let fake = FakeOpenAi::start();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(fake.base_url()));
    let probe = load(&sb, components::LLM_PROBE);
    let mut req = RunRequest::new("probe", r#"{"calls": 1, "model": "unpriced"}"#);
    req.grant = grant(&["unpriced"]);
    req.budget = RunBudget {
        max_cost_usd: Some(1.0),
        ..RunBudget::default()
    };
    let calls = output(&sb.run(&probe, req).await);
    assert!(calls[0].as_str().unwrap().contains("no price"), "{calls}");
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answer_too_large_to_hold_is_refused() {
    // A provider is a network peer: a 40 MB answer is refused as it
    // streams, not buffered whole.
    let huge = std::sync::Arc::new("x".repeat(40 << 20));
    let srv = warden_tests::http_server::TestServer::start(move |_| {
        warden_tests::http_server::Response::text(200, &huge)
    });
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), Some(srv.url()));
    let probe = load(&sb, components::LLM_PROBE);
    let mut req = RunRequest::new("probe", r#"{"calls": 1, "model": "small"}"#);
    req.grant = grant(&["small"]);
    let outcome = sb.run(&probe, req).await;
    let calls: Vec<String> = serde_json::from_value(output(&outcome)).unwrap();
    assert!(
        calls[0].starts_with("error:") && calls[0].contains("larger than"),
        "{calls:?}"
    );
}
