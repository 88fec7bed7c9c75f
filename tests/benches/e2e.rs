//! End-to-end throughput and latency: a control plane and one node on this
//! machine (in one process, talking real gRPC over loopback), N `hello` runs
//! submitted by concurrent clients. Reports completed runs/s and
//! submit→complete latency p50/p99 (from the control plane's own records).
//!
//! Run: `cargo bench -p warden-tests --bench e2e -- [RUNS] [SLOTS]`.

use std::time::{Duration, Instant};
use warden_control_plane::ControlPlane;
use warden_core::RunState;
use warden_proto::v1 as pb;
use warden_tests::cluster::state;
use warden_tests::cluster::{connect, publish};
use warden_tests::in_process::Node;
use warden_tests::{examples, sandbox_with};

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let slots: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);

    let dir = tempfile::tempdir().unwrap();
    let (cp, url) = warden_tests::in_process::control_plane(dir.path()).await;
    let node_dir = dir.path().join("node");
    let sandbox = sandbox_with(&node_dir, |c| c.engine.pool_slots = slots);
    // Runs until the bench exits.
    let _node = Node::start(&url, "bench-node", sandbox, &node_dir, slots, &[]);

    let ch = connect(&url).await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    // Warm up: compile and load the component on the node.
    let warm = warden_tests::cluster::submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    warden_tests::cluster::wait_run(ch.clone(), &warm, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;

    // Side by side in one process: the same runs submitted one per call
    // (8 concurrent clients), then in batches (SubmitBatch, 8 clients).
    for mode in [Submit::Unary, Submit::Batch(250)] {
        round(&cp, ch.clone(), runs, mode).await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Submit {
    Unary,
    Batch(usize),
}

async fn round(cp: &ControlPlane, ch: tonic::transport::Channel, runs: usize, mode: Submit) {
    let clients = 8;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = pb::run_service_client::RunServiceClient::new(ch);
            let request = |i: usize| pb::SubmitRequest {
                agent: "hello@1".into(),
                input: format!("{{\"i\":{i}}}"),
                ..Default::default()
            };
            let mine: Vec<usize> = (c..runs).step_by(clients).collect();
            let mut ids = Vec::new();
            match mode {
                Submit::Unary => {
                    for i in mine {
                        let run = client.submit(request(i)).await.unwrap().into_inner();
                        ids.push(run.run.unwrap().run_id);
                    }
                }
                Submit::Batch(size) => {
                    for chunk in mine.chunks(size) {
                        let req = pb::SubmitBatchRequest {
                            runs: chunk.iter().map(|&i| request(i)).collect(),
                        };
                        let batch = client.submit_batch(req).await.unwrap().into_inner();
                        ids.extend(batch.runs.into_iter().map(|r| r.run_id));
                    }
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let submitted = started.elapsed();

    // Wait for all to finish (counting through an index: cheap).
    loop {
        let store = cp.store();
        use warden_core::RunState;
        let pending: u64 = [RunState::Queued, RunState::Leased, RunState::Running]
            .into_iter()
            .map(|s| store.count_runs(s).unwrap())
            .sum();
        if pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("runs did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let mut latencies: Vec<i64> = ids
        .iter()
        .map(|id| {
            let r = cp.store().get_run(None, id).unwrap().unwrap();
            assert_eq!(state(&r), RunState::Succeeded);
            r.updated_unix_ms - r.created_unix_ms
        })
        .collect();
    assert_eq!(latencies.len(), runs);
    latencies.sort_unstable();
    println!(
        "e2e {mode:?}: {runs} runs in {:.2} s = {:.0} runs/s completed; submit phase {:.2} s ({:.0} submits/s); \
         submit->complete latency p50 {} ms, p99 {} ms, max {} ms",
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64(),
        submitted.as_secs_f64(),
        runs as f64 / submitted.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
    );
}
