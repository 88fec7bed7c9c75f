//! What a run's trace carries to the collector, and what a submit's
//! `traceparent` must be. Attributes carry guest-chosen names (models, KV
//! keys, URLs without their query), never the data: no prompt, answer,
//! input, output or KV value is in any span. A `traceparent` that is not a
//! W3C one is refused at submit, by the control plane itself.

use crate::leases::TestCluster;
use crate::telemetry::spans_with;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;
use warden_core::RunState;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;
use warden_tests::cluster::{self, connect, free_port, publish, publish_with, submit, wait_ended};
use warden_tests::fake_openai::FakeOpenAi;
use warden_tests::otlp::OtlpReceiver;
use warden_tests::{components, examples};

/// A control plane and one node exporting traces and metrics to an OTLP
/// receiver (the control plane over gRPC, the node over HTTP), the node
/// with a fake LLM provider and an admin address.
pub(crate) struct Traced {
    pub(crate) receiver: OtlpReceiver,
    pub(crate) url: String,
    /// The node's admin address (`/metrics`).
    pub(crate) admin: String,
    _llm: FakeOpenAi,
    _cp: cluster::Proc,
    _node: cluster::Proc,
    _tmp: tempfile::TempDir,
}

impl Traced {
    pub(crate) fn start() -> Self {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"));
        let tmp = tempfile::tempdir().unwrap();
        let logs = cluster::log_dir(tmp.path());
        let receiver = OtlpReceiver::start();
        let llm = FakeOpenAi::start();
        let otel = |endpoint: String, protocol: &str| {
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
                ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_string()),
            ]
        };
        let port = free_port();
        let (cp, line) = cluster::spawn_with_env(
            &bin,
            "control-plane",
            &[
                "control-plane".to_string(),
                "--insecure".into(),
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--db".into(),
                tmp.path().join("cp.sqlite3").display().to_string(),
                "--data-dir".into(),
                tmp.path().join("cp").display().to_string(),
            ],
            &otel(format!("http://{}", receiver.grpc), "grpc"),
            &logs,
        );
        assert!(line.contains("listening on"), "{line}");
        let url = format!("http://127.0.0.1:{port}");
        let config = tmp.path().join("node.toml");
        std::fs::write(&config, llm.node_config()).unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let node = cluster::node_with_env(
            &bin,
            &url,
            "n1",
            tmp.path(),
            &[
                "--node-config",
                config.to_str().unwrap(),
                "--admin-addr",
                &admin,
            ],
            &otel(format!("http://{}", receiver.http), "http/protobuf"),
            &logs,
        );
        Traced {
            receiver,
            url,
            admin,
            _llm: llm,
            _cp: cp,
            _node: node,
            _tmp: tmp,
        }
    }
}

/// Runs of an LLM call and of a KV write and read, each with a marker in
/// its data, export their spans (`chat small`, `kv.set`, `kv.get`), and no
/// span's name or attribute holds any of the data: the prompt (`call 0`),
/// the provider's answer (`Summary: call 0`), the run's input, the KV
/// value (as text or as the bytes' debug form), or the output that
/// returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_no_prompt_answer_input_output_or_kv_value() {
    const INPUT: &str = "input-marker-5d1c";
    const VALUE: &str = "kv-value-marker-9e2b";
    let traced = Traced::start();
    let ch = connect(&traced.url).await;
    publish_with(
        ch.clone(),
        components::LLM_PROBE,
        "llm-probe@1",
        "[grant]\nmodels = [\"small\"]\n",
    )
    .await;
    publish_with(
        ch.clone(),
        components::KV_PROBE,
        "kv-probe@1",
        "[grant]\nkv = true\n",
    )
    .await;
    // Each agent is granted what its manifest declares.
    let run = |agent: &'static str, input: serde_json::Value| {
        let ch = ch.clone();
        async move {
            let id = submit(ch.clone(), agent, &input.to_string(), |r| {
                let grant = r.grant.get_or_insert_default();
                if agent.starts_with("llm") {
                    grant.models = vec!["small".into()];
                } else {
                    grant.kv = true;
                }
            })
            .await;
            let run = wait_ended(ch, &id, Duration::from_secs(30)).await;
            assert_eq!(cluster::state(&run), RunState::Succeeded, "{run:?}");
            run
        }
    };
    run(
        "llm-probe@1",
        serde_json::json!({ "calls": 1, "model": "small", "note": INPUT }),
    )
    .await;
    run(
        "kv-probe@1",
        serde_json::json!({ "op": "set", "key": "k", "value": VALUE }),
    )
    .await;
    let got = run("kv-probe@1", serde_json::json!({ "op": "get", "key": "k" })).await;
    assert_eq!(
        got.output,
        format!("\"{VALUE}\""),
        "the output is the value"
    );

    for name in ["chat small", "kv.set", "kv.get"] {
        spans_with(&traced.receiver, name).await;
    }
    let spans = traced.receiver.spans();
    // `[107, 118, …]`: how tracing records bytes it is handed unformatted.
    let value_bytes = format!("{:?}", VALUE.as_bytes());
    let value_bytes = value_bytes.trim_matches(['[', ']']);
    let data = ["call 0", "Summary", INPUT, VALUE, value_bytes];
    for span in &spans {
        let texts = std::iter::once(&span.name)
            .chain(span.attributes.keys())
            .chain(span.attributes.values());
        for text in texts {
            if let Some(found) = data.iter().find(|d| text.contains(*d)) {
                panic!("{found:?} is in the span {span:#?}");
            }
        }
    }
}

/// An agent's outgoing HTTP requests are client spans under the span of
/// their run, in its trace: one answered and one the allow-list refuses
/// (issue 24, item 3: each started a trace of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_http_spans_are_children_of_their_run_s_span() {
    use warden_tests::http_server::{Response, TestServer};
    let traced = Traced::start();
    let ch = connect(&traced.url).await;
    let srv = TestServer::start(|_| Response::text(200, "hi"));
    let allow = format!("http://127.0.0.1:{}", srv.port());
    publish_with(
        ch.clone(),
        components::HTTP_PROBE,
        "http-probe@1",
        &format!("[grant]\nhttp = [\"{allow}\"]\n"),
    )
    .await;
    let refused = format!("http://127.0.0.1:{}/", free_port());
    for url in [srv.url(), refused] {
        let input = serde_json::json!({ "url": url }).to_string();
        let id = submit(ch.clone(), "http-probe@1", &input, |r| {
            r.grant.get_or_insert_default().http = vec![allow.clone()];
        })
        .await;
        let run = wait_ended(ch.clone(), &id, Duration::from_secs(30)).await;
        assert_eq!(cluster::state(&run), RunState::Succeeded, "{run:?}");
    }
    let start = std::time::Instant::now();
    let spans = loop {
        let spans = spans_with(&traced.receiver, "GET").await;
        if spans.iter().filter(|s| s.name == "GET").count() >= 2 {
            break spans;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gets: Vec<_> = spans.iter().filter(|s| s.name == "GET").collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    for get in &gets {
        let parent = spans
            .iter()
            .find(|s| s.span_id == get.parent_span_id && !get.parent_span_id.is_empty());
        let parent = parent.unwrap_or_else(|| panic!("no parent span for {get:#?}"));
        assert_eq!(parent.name, "run", "{get:#?} under {parent:#?}");
        assert_eq!(parent.trace_id, get.trace_id);
    }
    let answered = gets.iter().any(|g| {
        g.attributes
            .get("http.response.status_code")
            .is_some_and(|c| c == "200")
    });
    let refused = gets.iter().any(|g| g.attributes.contains_key("error.type"));
    assert!(answered && refused, "one answered, one refused: {gets:#?}");
}

/// A submit whose `traceparent` is not a W3C one is refused by the control
/// plane (alone and in a batch, over gRPC, so the CLI's own check is not
/// what stops it), naming the problem, and no run is made; a well-formed
/// one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_refused_at_submit() {
    let (c, _cp) = TestCluster::start(&[]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut runs = RunServiceClient::new(ch.clone());
    let with = |traceparent: &str| pb::SubmitRequest {
        agent: "hello@1".into(),
        input: "{}".into(),
        traceparent: traceparent.into(),
        ..Default::default()
    };
    for bad in [
        "nonsense",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx",
    ] {
        let e = runs.submit(with(bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(
            e.message().contains("is not a W3C traceparent"),
            "{bad:?}: {e:?}"
        );
        let e = runs
            .submit_batch(pb::SubmitBatchRequest {
                runs: vec![with(""), with(bad)],
            })
            .await
            .unwrap_err();
        assert!(
            e.message().contains("is not a W3C traceparent"),
            "{bad:?}: {e:?}"
        );
    }
    let listed = runs
        .list(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runs.is_empty(), "a run was made: {listed:?}");
    runs.submit(with(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
    .await
    .unwrap();
}
