//! Run lists through a real control plane: every run once, page by page,
//! and summaries (sizes, not bodies) bounded in bytes; `runs get` carries
//! the whole run.

use crate::leases::{Backend, TestCluster, on_both_backends};
use warden_proto::v1 as pb;
use warden_tests::cluster::publish;
use warden_tests::examples;

/// `runs list` pages through any number of runs: each page is bounded,
/// and the pages hold every run once.
async fn runs_list_pages_through_every_run_once(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let one = pb::SubmitRequest {
        agent: "hello@1".into(),
        input: "{}".into(),
        ..Default::default()
    };
    let submitted = pb::run_service_client::RunServiceClient::new(ch.clone())
        .submit_batch(pb::SubmitBatchRequest {
            runs: vec![one; 2500],
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let ids = |limit: &str| {
        let out = c.cli(&["runs", "list", "--limit", limit, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc.as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let all = ids("100000");
    assert_eq!(all.len(), 2500);
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    let expected: std::collections::BTreeSet<_> = submitted.iter().map(|r| &r.run_id).collect();
    assert_eq!(unique, expected);
    assert_eq!(ids("1500").len(), 1500);
    // One page is bounded whatever the request asks.
    let page = pb::run_service_client::RunServiceClient::new(ch.clone())
        .list(pb::ListRunsRequest {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.runs.len(), 1000);
    assert!(!page.next_page_token.is_empty());
    let bad = pb::run_service_client::RunServiceClient::new(ch.clone())
        .list(pb::ListRunsRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// A list carries summaries: a hundred runs with 1 MiB inputs list in one
/// page of a few KiB (the sizes, not the bodies), through the CLI too,
/// and `runs get` still carries the whole input.
async fn run_lists_carry_summaries_not_bodies(backend: Backend) {
    use prost::Message;
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let input = format!(
        "\"{}\"",
        "a".repeat(warden_core::wire::DEFAULT_MAX_INPUT_BYTES - 2)
    );
    let mut runs = pb::run_service_client::RunServiceClient::new(ch.clone())
        .max_decoding_message_size(warden_core::wire::MAX_MESSAGE_BYTES);
    for _ in 0..10 {
        let one = pb::SubmitRequest {
            agent: "hello@1".into(),
            input: input.clone(),
            ..Default::default()
        };
        runs.submit_batch(pb::SubmitBatchRequest {
            runs: vec![one; 10],
        })
        .await
        .unwrap();
    }
    let page = runs
        .list(pb::ListRunsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.runs.len(), 100);
    assert!(page.next_page_token.is_empty());
    let size = page.encoded_len();
    assert!(size < 256 << 10, "a page of 100 summaries is {size} bytes");
    for run in &page.runs {
        assert!(run.input.is_empty() && run.attempts.is_empty(), "{run:?}");
        assert_eq!(run.input_bytes, input.len() as u64);
    }
    let out = c.cli(&["runs", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &listed.as_array().unwrap()[0];
    assert_eq!(first["input_bytes"], input.len(), "{first}");
    assert!(first.get("input").is_none(), "a summary has no input");
    let got = runs
        .get(pb::GetRunRequest {
            run_id: page.runs[0].run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.input, input, "`runs get` carries the body");
    assert_eq!(got.input_bytes, input.len() as u64);
}

on_both_backends!(
    runs_list_pages_through_every_run_once,
    run_lists_carry_summaries_not_bodies,
);
