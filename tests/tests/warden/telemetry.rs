//! What operators see: `/metrics` checked by `promtool` and scraped by a
//! real Prometheus (Debian's), `/readyz` going not-ready while a node
//! drains and when the control plane's store is gone, node capacity, and
//! traces and metrics over OTLP to a test receiver.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use warden_core::RunState;
use warden_tests::cluster::{
    self, connect, free_port, http_get, publish, submit, wait_ended, wait_http, wait_state,
};
use warden_tests::{components, examples};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// A control plane on a SQLite file under `dir`.
fn sqlite_control_plane(dir: &std::path::Path, logs: &std::path::Path) -> (cluster::Proc, String) {
    let db = dir.join("cp.sqlite3").display().to_string();
    cluster::control_plane(&bin(), free_port(), &db, &dir.join("cp"), &[], logs)
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the first sample of `query` Prometheus at `addr` holds, if
/// any.
fn prometheus_value(addr: &str, query: &str) -> Option<String> {
    let (status, body) = http_get(addr, &format!("/api/v1/query?query={query}"));
    if status != 200 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_promtool_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let admin = format!("127.0.0.1:{}", free_port());
    let (_dev, url) = cluster::dev(
        &bin(),
        &tmp.path().join("dev"),
        &["--admin-addr", &admin],
        &logs,
    );
    let ch = connect(&url).await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    for i in 0..3 {
        let input = serde_json::json!({ "name": format!("n{i}") }).to_string();
        let id = submit(ch.clone(), "hello@1", &input, |_| {}).await;
        let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
        assert_eq!(cluster::state(&run), RunState::Succeeded, "{run:?}");
    }
    // And one that runs out of fuel (not retried), for the failure counts.
    let id = submit(ch.clone(), "hello@1", "{}", |r| {
        r.budget.get_or_insert_default().fuel = Some(1);
        r.max_attempts = 1;
    })
    .await;
    let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
    assert_eq!(cluster::state(&run), RunState::Failed, "{run:?}");
    // Results are counted once the control plane answers the report.
    let (_, text) = wait_http(&admin, "/metrics", Duration::from_secs(10), |_, body| {
        body.contains("\nwarden_leases_completed_total 3\n")
            && body.contains("\nwarden_leases_failed_total{")
    })
    .await;
    for expected in [
        "warden_runs_submitted_total 4",
        "warden_leases_granted_total 4",
        "warden_leases_failed_total{kind=\"fuel_exhausted\"} 1",
        "warden_agent_executions_total{tenant=\"default\",agent=\"hello\"} 4",
        "warden_run_results_total{outcome=\"recorded\"} 4",
        "warden_nodes{state=\"ready\"} 1",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }

    // promtool lints the exposition: names, types, help, units.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (`apt-get install -y prometheus`; scripts/test.sh does this)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every Warden metric the alert rules of OPERATIONS.md name is one
    // this exposition has (`the_documented_scrape_config_and_alert_rules_are_valid`
    // has promtool check the rules themselves).
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .unwrap();
    let rules = doc
        .split("Alert rules (`warden-alerts.yml`):")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("OPERATIONS.md has the alert rules in a yaml block");
    let named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("warden_"))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for metric in named {
        assert!(
            text.contains(&format!("# TYPE {metric} ")),
            "the alert rules name {metric}, which /metrics does not have"
        );
    }

    // A real Prometheus scrapes the admin port and answers a query.
    let prom = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: warden\n    \
             static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(logs.join("prometheus.log")).unwrap();
    let _prometheus = Child(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs"),
    );
    let start = Instant::now();
    loop {
        let completed = std::net::TcpStream::connect(&prom)
            .ok()
            .and_then(|_| prometheus_value(&prom, "warden_leases_completed_total"));
        if completed.as_deref() == Some("3") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus has no warden_leases_completed_total of 3 (last: {completed:?}); see {}",
            logs.join("prometheus.log").display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let up = prometheus_value(&prom, "up{job=\"warden\"}");
    assert_eq!(up.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_a_node_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let (_cp, url) = sqlite_control_plane(tmp.path(), &logs);
    let admin = format!("127.0.0.1:{}", free_port());
    let node = cluster::node(
        &bin(),
        &url,
        "n1",
        tmp.path(),
        &["--admin-addr", &admin, "--drain-grace", "30s"],
        &logs,
    );
    let (_, ready) = wait_http(&admin, "/readyz", Duration::from_secs(20), |s, _| s == 200).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["components"]["node"]["ready"], true, "{ready}");

    let ch = connect(&url).await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let id = submit(ch.clone(), "sleeper@1", r#"{"ms": 4000}"#, |_| {}).await;
    wait_state(ch.clone(), &id, Duration::from_secs(20), RunState::Running).await;
    let (_, health) = http_get(&admin, "/health");
    assert!(health.contains("\"active_runs\":1"), "{health}");

    node.signal("TERM");
    let (status, body) =
        wait_http(&admin, "/readyz", Duration::from_secs(10), |s, _| s == 503).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    // The run in flight still finishes (drain, not kill).
    let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
    assert_eq!(cluster::state(&run), RunState::Succeeded, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_when_the_store_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let db = warden_testkit::postgres_database();
    let admin = format!("127.0.0.1:{}", free_port());
    let (_cp, _url) = cluster::control_plane(
        &bin(),
        free_port(),
        &db.url,
        &tmp.path().join("cp"),
        &["--admin-addr", &admin],
        &logs,
    );
    let (_, ready) = wait_http(&admin, "/readyz", Duration::from_secs(20), |s, _| s == 200).await;
    assert!(ready.contains("\"ready\":true"), "{ready}");

    db.drop_now();
    let (_, body) = wait_http(&admin, "/readyz", Duration::from_secs(20), |s, _| s == 503).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let problems = body["components"]["control_plane"]["problems"].to_string();
    assert!(problems.contains("store"), "{body}");
    // Alive all the same: not a reason to restart the process.
    assert_eq!(http_get(&admin, "/healthz").0, 200);
}

/// docs/OPERATIONS.md's scrape config and alert rules are what Prometheus
/// accepts (`promtool check config` / `check rules`).
#[test]
fn the_documented_scrape_config_and_alert_rules_are_valid() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .unwrap();
    let blocks: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "a scrape config and alert rules");
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("warden-alerts.yml");
    std::fs::write(&rules, blocks[1]).unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        blocks[0].replace("warden-alerts.yml", &rules.display().to_string()),
    )
    .unwrap();
    for (what, file) in [("rules", &rules), ("config", &config)] {
        let out = Command::new("promtool")
            .args(["check", what])
            .arg(file)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool check {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Nodes report their disk space and accelerators, get a `gpu` label for
/// NVIDIA GPUs, and `warden nodes list` shows them. `nvidia-smi` is a
/// stand-in script here (the GPU driver is a boundary we do not own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_disk_space_and_accelerators() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let (_cp, url) = sqlite_control_plane(tmp.path(), &logs);
    let tools = tmp.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let smi = tools.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho '0, NVIDIA L4, 23034'\necho '1, NVIDIA L4, 23034'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap());
    let _gpu = cluster::node_with_env(
        &bin(),
        &url,
        "gpu-node",
        tmp.path(),
        &[],
        &[("PATH", path)],
        &logs,
    );
    let _plain = cluster::node(&bin(), &url, "plain-node", tmp.path(), &[], &logs);

    let warden = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .env("WARDEN_CONTROL_PLANE", &url)
            .env_remove("WARDEN_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let start = Instant::now();
    let nodes = loop {
        let nodes: serde_json::Value =
            serde_json::from_str(&warden(&["nodes", "list", "--json"])).unwrap();
        if nodes.as_array().unwrap().len() == 2 {
            break nodes;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let node = |id: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == id)
            .unwrap()
            .clone()
    };
    let gpu = node("gpu-node");
    assert_eq!(gpu["accelerators"].as_array().unwrap().len(), 2, "{gpu}");
    assert_eq!(gpu["accelerators"][0]["kind"], "nvidia", "{gpu}");
    assert_eq!(gpu["accelerators"][0]["name"], "NVIDIA L4", "{gpu}");
    assert_eq!(
        gpu["accelerators"][1]["memory_bytes"],
        23034_u64 << 20,
        "{gpu}"
    );
    assert_eq!(gpu["labels"]["gpu"], "nvidia", "{gpu}");
    assert!(gpu["disk_free_bytes"].as_u64().unwrap() > 0, "{gpu}");
    assert!(gpu["cpu_cores"].as_u64().unwrap() > 0, "{gpu}");
    assert!(gpu["heartbeat_age_ms"].as_i64().unwrap() < 10_000, "{gpu}");
    let plain = node("plain-node");
    if !std::path::Path::new("/dev/dri").exists() {
        // None is a valid answer.
        assert_eq!(plain["accelerators"], serde_json::json!([]), "{plain}");
        assert!(plain["labels"].get("gpu").is_none(), "{plain}");
    }
    let table = warden(&["nodes", "list"]);
    assert!(table.contains("2× NVIDIA L4"), "{table}");
    assert!(table.contains("DISK FREE"), "{table}");
}

/// Waits until `receiver` holds a span named `name`; every span then.
pub(crate) async fn spans_with(
    receiver: &warden_tests::otlp::OtlpReceiver,
    name: &str,
) -> Vec<warden_tests::otlp::ReceivedSpan> {
    let start = Instant::now();
    loop {
        let spans = receiver.spans();
        if spans.iter().any(|s| s.name == name) {
            return spans;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no span {name} among {:#?}",
            spans
                .iter()
                .map(|s| (&s.service, &s.name))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_client_s_submit_to_the_llm_call_and_metrics_over_otlp() {
    let traced = crate::traces::Traced::start();
    let (receiver, admin) = (&traced.receiver, &traced.admin);
    let ch = connect(&traced.url).await;
    cluster::publish_with(
        ch.clone(),
        components::LLM_PROBE,
        "llm-probe@1",
        "[grant]\nmodels = [\"small\"]\n",
    )
    .await;
    // The client's own trace: the submit joins it.
    let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let id = submit(
        ch.clone(),
        "llm-probe@1",
        r#"{"calls": 1, "model": "small"}"#,
        |r| {
            r.traceparent = format!("00-{trace_id}-{client_span}-01");
            r.grant = Some(warden_proto::v1::Grant {
                models: vec!["small".into()],
                ..Default::default()
            });
        },
    )
    .await;
    let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
    assert_eq!(cluster::state(&run), RunState::Succeeded, "{run:?}");

    for name in ["submit", "lease", "run", "chat small", "component.load"] {
        spans_with(receiver, name).await;
    }
    let spans = receiver.spans();
    let one = |name: &str| {
        let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "spans named {name}: {found:#?}");
        found[0].clone()
    };
    let (submit, lease, run_span, chat, load) = (
        one("submit"),
        one("lease"),
        one("run"),
        one("chat small"),
        one("component.load"),
    );
    for span in [&submit, &lease, &run_span, &chat, &load] {
        assert_eq!(span.trace_id, trace_id, "{span:#?}");
    }
    // submit (control plane, server) -> lease (node) -> run -> chat.
    assert_eq!(submit.service, "warden-control-plane");
    assert_eq!(submit.kind, 2, "a server span");
    assert_eq!(submit.parent_span_id, client_span);
    assert_eq!(submit.attributes["warden.run_id"], id);
    assert_eq!(lease.service, "warden-node");
    assert_eq!(lease.parent_span_id, submit.span_id);
    assert_eq!(lease.attributes["warden.attempt"], "1");
    assert_eq!(load.parent_span_id, lease.span_id);
    assert_eq!(load.attributes["warden.component.source"], "registry");
    assert_eq!(run_span.parent_span_id, lease.span_id);
    assert_eq!(chat.parent_span_id, run_span.span_id);
    assert_eq!(chat.kind, 3, "a client span");
    let attr = |key: &str| {
        chat.attributes
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {chat:#?}"))
            .clone()
    };
    assert_eq!(attr("gen_ai.operation.name"), "chat");
    assert_eq!(attr("gen_ai.provider.name"), "openai");
    assert_eq!(attr("gen_ai.request.model"), "small");
    assert!(!attr("gen_ai.response.model").is_empty());
    assert_eq!(attr("gen_ai.response.finish_reasons"), "[\"stop\"]");
    let usage = run.usage.unwrap();
    assert_eq!(
        attr("gen_ai.usage.input_tokens"),
        usage.prompt_tokens.to_string()
    );
    assert_eq!(
        attr("gen_ai.usage.output_tokens"),
        usage.completion_tokens.to_string()
    );
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(attr("server.address"), "127.0.0.1");
    // Never the prompt or the answer.
    for span in &spans {
        for value in span.attributes.values() {
            assert!(!value.contains("call 0"), "prompt text in {span:#?}");
        }
    }

    // The same call in the node's GenAI metrics.
    let (_, text) = http_get(admin, "/metrics");
    let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"small\"";
    for expected in [
        format!("gen_ai_client_operation_duration_seconds_count{{{labels},error_type=\"\"}} 1"),
        format!(
            "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} {}",
            usage.prompt_tokens
        ),
        format!(
            "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"output\"}} {}",
            usage.completion_tokens
        ),
        "warden_component_compiles_total{result=\"compiled\"} 1".to_string(),
    ] {
        assert!(text.contains(&expected), "no `{expected}` in:\n{text}");
    }

    // The same instruments pushed over OTLP: the node's over HTTP, the
    // control plane's over gRPC.
    let start = Instant::now();
    let wanted = |p: &warden_tests::otlp::ReceivedPoint| {
        (p.service == "warden-node"
            && p.metric == "warden_leases_completed"
            && p.kind == "sum"
            && p.value == 1.0)
            || (p.service == "warden-control-plane"
                && p.metric == "warden_runs_submitted"
                && p.value == 1.0)
            || (p.service == "warden-node"
                && p.metric == "gen_ai_client_token_usage"
                && p.kind == "histogram"
                && p.value == 1.0
                && p.attributes.get("gen_ai_request_model").map(String::as_str) == Some("small"))
    };
    loop {
        let points = receiver.points();
        let found: std::collections::HashSet<&str> = points
            .iter()
            .filter(|p| wanted(p))
            .map(|p| p.metric.as_str())
            .collect();
        if found.len() == 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "OTLP metrics: found {found:?} of 3 in {} points",
            points.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two tenants' agents of one name are counted apart: a node's agent
/// metrics carry the run's tenant (issue 24, item 4).
#[test]
fn agent_metrics_are_counted_by_tenant() {
    let cp = crate::security::Secure::start();
    let admin = format!("127.0.0.1:{}", free_port());
    let _node = cp.enrolled_node(&["--admin-addr", &admin]);
    for (tenant, runs) in [("default", 1), ("acme", 2)] {
        let token = cp.token(tenant, "publisher");
        let out = cp.cli(&token, &["publish", examples::HELLO, "hello@1.0.0"]);
        assert!(out.status.success(), "{}", crate::security::stderr(&out));
        for _ in 0..runs {
            let out = cp.cli(
                &token,
                &["submit", "hello@1.0.0", "--input", "{}", "--wait", "--json"],
            );
            assert!(out.status.success(), "{}", crate::security::stderr(&out));
        }
    }
    let text = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (_, text) = wait_http(&admin, "/metrics", Duration::from_secs(10), |_, body| {
            body.contains("agent=\"hello\"} 2")
        })
        .await;
        text
    });
    for expected in [
        "warden_agent_executions_total{tenant=\"default\",agent=\"hello\"} 1",
        "warden_agent_executions_total{tenant=\"acme\",agent=\"hello\"} 2",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}
