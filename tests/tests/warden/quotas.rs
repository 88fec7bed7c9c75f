//! Quotas and concurrency limits over real TLS on loopback: runs over a
//! limit wait and all finish, never more at once than a limit allows
//! (checked from every attempt's lease and end times); a spent daily cost
//! budget refuses new work, naming the quota.

use crate::security::{Secure, stderr};
use std::time::Duration;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;
use warden_tests::cluster::{most_at_once, with_token};
use warden_tests::components;
use warden_tests::examples;

/// `warden quotas get --json` as `token` sees it.
fn quotas(cp: &Secure, token: &str) -> serde_json::Value {
    let out = cp.cli(token, &["quotas", "get", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The default tenant publishes `hello` and runs it to success: another
/// tenant's quotas hold nothing of its back.
fn default_tenant_runs_hello(cp: &Secure) {
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let other = cp.cli(
        &cp.admin,
        &["submit", "hello@1.0.0", "--input", "{}", "--wait"],
    );
    assert!(other.status.success(), "{}", stderr(&other));
}

/// Every run of the caller's tenant, a page at a time.
async fn all_runs(cp: &Secure, token: &str) -> Vec<pb::Run> {
    let mut client = RunServiceClient::new(cp.channel(None).await);
    let mut runs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list(with_token(
                pb::ListRunsRequest {
                    limit: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return runs;
        }
        page_token = page.next_page_token;
    }
}

/// A tenant's quotas: runs past max_running wait (never more at once, all
/// finish), a submit past max_queued or max_input_bytes fails
/// quota_exceeded naming the quota; another tenant is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_hold() {
    let cp = Secure::start();
    let _node = cp.enrolled_node(&["--slots", "8"]);
    let acme = cp.token("acme", "publisher");
    let set_quotas = |running: &str| {
        let out = cp.cli(
            &cp.admin,
            &[
                "quotas",
                "set",
                "--tenant",
                "acme",
                "--max-running",
                running,
                "--max-queued",
                "6",
                "--max-input",
                "1KiB",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // Nothing of acme's may run yet: its runs wait, queued.
    set_quotas("0");
    // Acme reads its own quotas but may not set them.
    assert_eq!(quotas(&cp, &acme)["max_running"], 0);
    let out = cp.cli(&acme, &["quotas", "set", "--tenant", "acme"]);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );

    let published = cp.cli(
        &acme,
        &["publish", warden_tests::components::SLEEPER, "sleeper@1"],
    );
    assert!(published.status.success(), "{}", stderr(&published));
    let input = r#"{"ms": 400}"#;
    let ids: Vec<String> = (0..6)
        .map(|_| cp.secret(&acme, &["submit", "sleeper@1", "--input", input]))
        .collect();
    // A seventh waits for no one: refused, naming the quota.
    let out = cp.cli(&acme, &["submit", "sleeper@1", "--input", input]);
    assert!(stderr(&out).contains("quota_exceeded"), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_queued"), "{}", stderr(&out));
    let big = format!(r#"{{"ms": 1, "pad": "{}"}}"#, "x".repeat(2000));
    let out = cp.cli(&acme, &["submit", "sleeper@1", "--input", &big]);
    assert!(stderr(&out).contains("max_input_bytes"), "{}", stderr(&out));

    // Another tenant's run goes past them.
    default_tenant_runs_hello(&cp);
    for id in &ids {
        let run = cp.get_run(id).await;
        assert_eq!(
            warden_core::RunState::from_proto(run.run_state),
            Some(warden_core::RunState::Queued)
        );
    }
    // Two at a time: never more running at once; all six finish.
    set_quotas("2");
    let started = std::time::Instant::now();
    loop {
        let mut active = 0;
        let mut done = 0;
        // One list call: a single snapshot of every run's state (runs
        // read one by one could each be seen running at different times).
        let runs = RunServiceClient::new(cp.channel(None).await)
            .list(with_token(pb::ListRunsRequest::default(), &acme))
            .await
            .unwrap()
            .into_inner()
            .runs;
        assert_eq!(runs.len(), ids.len());
        for run in &runs {
            let id = &run.run_id;
            match warden_core::RunState::from_proto(run.run_state).unwrap() {
                warden_core::RunState::Leased | warden_core::RunState::Running => active += 1,
                warden_core::RunState::Succeeded => done += 1,
                warden_core::RunState::Queued => {}
                other => panic!("{id}: {other:?} {run:?}"),
            }
        }
        assert!(active <= 2, "{active} running at once");
        if done == ids.len() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{done} done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 200 runs under three limits at once, on a node with room for more:
/// agent `sleeper` at most 3, label role=manager at most 2, the tenant at
/// most 5 in all. Every limit is reached and never passed; all runs end
/// succeeded on their first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_hold_under_load() {
    let cp = Secure::start();
    let _node = cp.enrolled_node(&["--slots", "12"]);
    let acme = cp.token("acme", "admin");
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", stderr(&out));
    ok(cp.cli(
        &cp.admin,
        &["quotas", "set", "--tenant", "acme", "--max-running", "5"],
    ));
    // A tenant admin sets its own limits, not another tenant's.
    ok(cp.cli(
        &acme,
        &[
            "quotas",
            "limit",
            "--agent",
            "sleeper",
            "--max-running",
            "3",
        ],
    ));
    ok(cp.cli(
        &acme,
        &[
            "quotas",
            "limit",
            "--label",
            "role=manager",
            "--max-running",
            "2",
        ],
    ));
    let other = cp.cli(
        &acme,
        &[
            "quotas",
            "limit",
            "--tenant",
            "default",
            "--agent",
            "hello",
            "--max-running",
            "1",
        ],
    );
    assert!(
        stderr(&other).contains("permission denied"),
        "{}",
        stderr(&other)
    );
    let limits = &quotas(&cp, &acme)["limits"];
    assert_eq!(limits.as_array().map(Vec::len), Some(2), "{limits}");

    for name in ["sleeper@1", "napper@1"] {
        ok(cp.cli(&acme, &["publish", components::SLEEPER, name]));
    }
    let inputs = cp.tmp.path().join("inputs.jsonl");
    let lines: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"ms": 20, "tag": {i}}}"#))
        .collect();
    std::fs::write(&inputs, lines.join("\n")).unwrap();
    let inputs = inputs.to_str().unwrap();
    for (agent, label) in [
        ("sleeper@1", None),
        ("sleeper@1", None),
        ("napper@1", Some("role=manager")),
        ("napper@1", None),
    ] {
        let mut args = vec!["submit", agent, "--inputs", inputs];
        if let Some(label) = label {
            args.extend(["--label", label]);
        }
        ok(cp.cli(&acme, &args));
    }

    let started = std::time::Instant::now();
    let runs = loop {
        let runs = all_runs(&cp, &acme).await;
        assert_eq!(runs.len(), 200);
        let ended = runs
            .iter()
            .filter(|r| {
                warden_core::RunState::from_proto(r.run_state).is_some_and(|s| s.is_terminal())
            })
            .count();
        if ended == runs.len() {
            // With their attempts (lists leave them out).
            let mut full = Vec::with_capacity(runs.len());
            for run in &runs {
                full.push(cp.get_run(&run.run_id).await);
            }
            break full;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{ended} of 200 ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for run in &runs {
        assert_eq!(
            warden_core::RunState::from_proto(run.run_state),
            Some(warden_core::RunState::Succeeded),
            "{run:?}"
        );
        assert_eq!(run.attempts.len(), 1, "{run:?}");
    }
    let sleepers = most_at_once(runs.iter().filter(|r| r.agent.starts_with("sleeper@")));
    let managers = most_at_once(
        runs.iter()
            .filter(|r| r.labels.get("role").map(String::as_str) == Some("manager")),
    );
    let all = most_at_once(runs.iter());
    assert_eq!(
        (sleepers, managers, all),
        (3, 2, 5),
        "the most at once of sleeper, role=manager and the tenant"
    );
}

/// Paid LLM calls spend a tenant's daily cost budget; once it is spent a
/// submit fails quota_exceeded naming max_cost_usd_per_day, and another
/// tenant still submits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_cost_quota_refuses_new_work() {
    let llm = warden_tests::fake_openai::FakeOpenAi::start();
    let cp = Secure::start();
    let config = cp.tmp.path().join("node.toml");
    std::fs::write(&config, llm.node_config()).unwrap();
    let _node = cp.enrolled_node(&["--node-config", config.to_str().unwrap()]);
    let acme = cp.token("acme", "publisher");
    let set = cp.cli(
        &cp.admin,
        &[
            "quotas",
            "set",
            "--tenant",
            "acme",
            "--max-cost-usd-per-day",
            "0.02",
        ],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    let manifest = cp.tmp.path().join("probe.toml");
    std::fs::write(&manifest, "[grant]\nmodels = [\"small\"]\n").unwrap();
    let published = cp.cli(
        &acme,
        &[
            "publish",
            components::LLM_PROBE,
            "probe@1",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    );
    assert!(published.status.success(), "{}", stderr(&published));

    // Two calls of ~15 tokens at $1,000 per million: about $0.03.
    let input = r#"{"calls": 2, "max_tokens": 10, "model": "small"}"#;
    let run = cp.cli(
        &acme,
        &["submit", "probe@1", "--input", input, "--wait", "--json"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let run: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let cost = run["usage"]["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.02, "{run}");
    let spent = quotas(&cp, &acme);
    assert_eq!(spent["cost_usd_today"].as_f64(), Some(cost), "{spent}");
    assert_eq!(
        spent["max_cost_usd_per_day"].as_f64(),
        Some(0.02),
        "{spent}"
    );

    let refused = cp.cli(&acme, &["submit", "probe@1", "--input", input]);
    assert!(!refused.status.success());
    let says = stderr(&refused);
    assert!(
        says.contains("quota_exceeded") && says.contains("max_cost_usd_per_day"),
        "{says}"
    );
    // The budget is acme's alone.
    default_tenant_runs_hello(&cp);
}

/// LLM tokens spend a tenant's daily token quota as cost spends its cost
/// quota: once `tokens_today` reaches `max_tokens_per_day`, a submit fails
/// quota_exceeded naming it (the check in the control plane's submit is
/// what refuses: without it the second submit would be queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_daily_token_quota_refuses_new_work() {
    let llm = warden_tests::fake_openai::FakeOpenAi::start();
    let cp = Secure::start();
    let config = cp.tmp.path().join("node.toml");
    std::fs::write(&config, llm.node_config()).unwrap();
    let _node = cp.enrolled_node(&["--node-config", config.to_str().unwrap()]);
    let acme = cp.token("acme", "publisher");
    let manifest = cp.tmp.path().join("probe.toml");
    std::fs::write(&manifest, "[grant]\nmodels = [\"small\"]\n").unwrap();
    let manifest = manifest.to_str().unwrap();
    for (token, args) in [
        (
            &cp.admin,
            &[
                "quotas",
                "set",
                "--tenant",
                "acme",
                "--max-tokens-per-day",
                "20",
            ][..],
        ),
        (
            &acme,
            &[
                "publish",
                components::LLM_PROBE,
                "probe@1",
                "--manifest",
                manifest,
            ],
        ),
    ] {
        let out = cp.cli(token, args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Two calls of ~15 tokens: over 20.
    let input = r#"{"calls": 2, "max_tokens": 10, "model": "small"}"#;
    let run = cp.cli(
        &acme,
        &["submit", "probe@1", "--input", input, "--wait", "--json"],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let spent = quotas(&cp, &acme);
    assert!(spent["tokens_today"].as_u64().unwrap() >= 20, "{spent}");
    assert_eq!(spent["max_tokens_per_day"].as_u64(), Some(20), "{spent}");

    let refused = cp.cli(&acme, &["submit", "probe@1", "--input", input]);
    let says = stderr(&refused);
    assert!(!refused.status.success(), "{says}");
    assert!(
        says.contains("quota_exceeded") && says.contains("max_tokens_per_day of 20"),
        "{says}"
    );
    default_tenant_runs_hello(&cp);
}
