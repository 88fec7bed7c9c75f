//! Several control-plane replicas on one PostgreSQL database, nodes that
//! know them all, and SIGKILLs: a replica and a node die mid-flight and no
//! run is lost, run twice to success, or given a stale result.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use warden_core::{AttemptOutcome, RunState};
use warden_proto::v1 as pb;
use warden_tests::cluster::{self, connect, free_port, outcome, publish, state};
use warden_tests::components;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// Runs of all of `ids`, once each is terminal (at most `limit`).
async fn wait_all_terminal(ch: cluster::Conn, ids: &[String], limit: Duration) -> Vec<pb::Run> {
    let start = Instant::now();
    let mut runs = Vec::with_capacity(ids.len());
    for id in ids {
        let left = limit.saturating_sub(start.elapsed());
        runs.push(cluster::wait_run(ch.clone(), id, left, |r| state(r).is_terminal()).await);
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_three_nodes_and_sigkills_lose_no_run_and_record_each_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database();
    let logs = cluster::log_dir(tmp.path());
    let cp_args = ["--lease-ttl", "3s", "--node-timeout", "3s"];
    let replica = |name: &str| {
        let port = free_port();
        let (proc, url) = cluster::control_plane(
            &bin(),
            port,
            &db.url,
            &tmp.path().join(name),
            &cp_args,
            &logs,
        );
        (proc, url)
    };
    let (a, url_a) = replica("cp-a");
    let (_b, url_b) = replica("cp-b");
    // Nodes know both replicas; two start on the one that will die.
    let both = format!("{url_a},{url_b}");
    let both_b_first = format!("{url_b},{url_a}");
    let node = |id: &str, urls: &str| {
        cluster::node(&bin(), urls, id, tmp.path(), &["--slots", "8"], &logs)
    };
    let _n1 = node("n1", &both);
    let _n2 = node("n2", &both_b_first);
    let n3 = node("n3", &both);

    let ch = connect(&url_b).await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    // One batch: the queue is full at once, however slow the machine (with
    // one submit at a time, a loaded machine ran most runs before the kills).
    let runs = (0..1000)
        .map(|i| pb::SubmitRequest {
            agent: "sleeper@1".into(),
            input: serde_json::json!({ "ms": 100, "tag": i }).to_string(),
            ..Default::default()
        })
        .collect();
    let ids: Vec<String> = pb::run_service_client::RunServiceClient::new(ch.clone())
        .submit_batch(pb::SubmitBatchRequest { runs })
        .await
        .expect("submit succeeds")
        .into_inner()
        .runs
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids.len(), 1000);
    // Mid-flight: every slot busy, most runs still queued (24 slots, 100 ms
    // a run: about 170 of 1,000 have run by the first kill).
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.signal("KILL");
    let a_killed = warden_core::now_ms();
    tokio::time::sleep(Duration::from_millis(700)).await;
    n3.signal("KILL");

    let runs = wait_all_terminal(ch.clone(), &ids, Duration::from_secs(180)).await;
    let mut retried_from_n3 = 0;
    let mut nodes = BTreeSet::new();
    // Nodes that started runs after replica A died: they moved to B.
    let mut moved = BTreeSet::new();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(
            state(run),
            RunState::Succeeded,
            "run {i} ({}) did not succeed: {run:?}",
            run.run_id
        );
        assert_eq!(run.output, i.to_string(), "run {i} has another's output");
        // Exactly one attempt succeeded, and it is the run's last: no
        // result of an earlier (expired) attempt was accepted.
        let succeeded: Vec<_> = run
            .attempts
            .iter()
            .filter(|a| outcome(a) == AttemptOutcome::Succeeded)
            .collect();
        assert_eq!(succeeded.len(), 1, "run {i}: {run:?}");
        assert_eq!(succeeded[0].attempt, run.attempt, "run {i}: {run:?}");
        assert_eq!(run.attempts.len() as u32, run.attempt, "run {i}: {run:?}");
        for earlier in &run.attempts[..run.attempts.len() - 1] {
            assert_eq!(
                outcome(earlier),
                AttemptOutcome::Expired,
                "run {i}: an earlier attempt ended otherwise: {run:?}"
            );
            if earlier.node_id == "n3" {
                retried_from_n3 += 1;
            }
        }
        nodes.insert(succeeded[0].node_id.clone());
        if succeeded[0].started_unix_ms > a_killed + 1000 {
            moved.insert(succeeded[0].node_id.clone());
        }
    }
    assert!(
        moved.contains("n1"),
        "n1 started on replica A and should have gone on through B: {moved:?}"
    );
    assert!(
        retried_from_n3 > 0,
        "n3 was killed with runs in flight; some should have been retried elsewhere"
    );
    assert!(nodes.contains("n1") && nodes.contains("n2"), "{nodes:?}");
}

/// A replica that stops answering (SIGSTOP: its kernel still accepts
/// connections) is left within seconds: nodes on it find it out by HTTP/2
/// pings and call deadlines, move to the other replica, and run what is
/// submitted there while it stays stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_leave_a_replica_that_stops_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database();
    let logs = cluster::log_dir(tmp.path());
    let replica = |name: &str| {
        cluster::control_plane(
            &bin(),
            free_port(),
            &db.url,
            &tmp.path().join(name),
            &["--lease-ttl", "5s", "--node-timeout", "5s"],
            &logs,
        )
    };
    let (_a, url_a) = replica("cp-a");
    let (b, url_b) = replica("cp-b");
    // Both nodes start on the replica that will stop.
    let b_first = format!("{url_b},{url_a}");
    let _n1 = cluster::node(&bin(), &b_first, "n1", tmp.path(), &["--slots", "4"], &logs);
    let _n2 = cluster::node(&bin(), &b_first, "n2", tmp.path(), &["--slots", "4"], &logs);
    let ch = connect(&url_a).await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    // Both nodes are up (and so on replica B) before it stops.
    let mut nodes = pb::node_service_client::NodeServiceClient::new(ch.clone());
    let start = Instant::now();
    loop {
        let listed = nodes.list_nodes(pb::ListNodesRequest {}).await.unwrap();
        let ready = listed
            .into_inner()
            .nodes
            .iter()
            .filter(|n| cluster::node_state(n) == warden_core::NodeState::Ready)
            .count();
        if ready == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nodes never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.signal("STOP");
    let runs = (0..30)
        .map(|i| pb::SubmitRequest {
            agent: "sleeper@1".into(),
            input: serde_json::json!({ "ms": 10, "tag": i }).to_string(),
            ..Default::default()
        })
        .collect();
    let ids: Vec<String> = pb::run_service_client::RunServiceClient::new(ch.clone())
        .submit_batch(pb::SubmitBatchRequest { runs })
        .await
        .unwrap()
        .into_inner()
        .runs
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    let stopped = Instant::now();
    let runs = wait_all_terminal(ch.clone(), &ids, Duration::from_secs(45)).await;
    let took = stopped.elapsed();
    b.signal("CONT");
    for run in &runs {
        assert_eq!(state(run), RunState::Succeeded, "{run:?}");
    }
    eprintln!("30 runs done {took:?} after replica B stopped");
}
