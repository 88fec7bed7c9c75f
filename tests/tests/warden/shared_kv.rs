//! Key-value state that follows an agent from node to node: three nodes
//! sharing one Redis or PostgreSQL backend, `kv-counter` submitted 100
//! times, each count from 1 to 100 handed out exactly once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use warden_core::RunState;
use warden_tests::cluster::{self, connect, free_port, publish_with, state, submit, wait_run};
use warden_tests::examples;

/// Runs kv-counter `n` times over three nodes whose node config has `kv`
/// (a `[kv]` table); returns each run's count and the nodes that ran them.
async fn count_over_three_nodes(kv: &str, n: usize) -> (Vec<u64>, BTreeSet<String>) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"));
    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let (_cp, url) = cluster::control_plane(
        &bin,
        free_port(),
        &tmp.path().join("cp.sqlite3").display().to_string(),
        &tmp.path().join("cp-data"),
        &[],
        &logs,
    );
    let config = tmp.path().join("node.toml");
    std::fs::write(&config, kv).unwrap();
    let config = config.display().to_string();
    let _nodes: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| {
            cluster::node(
                &bin,
                &url,
                id,
                tmp.path(),
                &["--slots", "4", "--node-config", &config],
                &logs,
            )
        })
        .collect();
    let ch = connect(&url).await;
    publish_with(
        ch.clone(),
        examples::KV_COUNTER,
        "kv-counter@1",
        "[grant]\nkv = true\n",
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            submit(ch.clone(), "kv-counter@1", r#"{"key":"visits"}"#, |r| {
                r.grant.get_or_insert_default().kv = true;
            })
            .await,
        );
    }
    let mut counts = Vec::new();
    let mut nodes = BTreeSet::new();
    for id in &ids {
        let run = wait_run(ch.clone(), id, Duration::from_secs(60), |r| {
            state(r).is_terminal()
        })
        .await;
        assert_eq!(state(&run), RunState::Succeeded, "{run:?}");
        let out: serde_json::Value = serde_json::from_str(&run.output).unwrap();
        counts.push(out["count"].as_u64().expect("a count"));
        nodes.insert(run.attempts.last().unwrap().node_id.clone());
    }
    counts.sort();
    (counts, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counter_over_three_nodes_on_redis_counts_each_value_once() {
    let redis = warden_testkit::redis();
    let kv = format!(
        "[kv]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"{}\"\n",
        redis.url, redis.prefix
    );
    let (counts, nodes) = count_over_three_nodes(&kv, 100).await;
    assert_eq!(counts, (1..=100).collect::<Vec<u64>>());
    assert_eq!(nodes.len(), 3, "every node should have run some: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counter_over_three_nodes_on_postgres_counts_each_value_once() {
    let db = warden_testkit::postgres_database();
    let kv = format!("[kv]\nbackend = \"postgres\"\nurl = \"{}\"\n", db.url);
    let (counts, nodes) = count_over_three_nodes(&kv, 100).await;
    assert_eq!(counts, (1..=100).collect::<Vec<u64>>());
    assert_eq!(nodes.len(), 3, "every node should have run some: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_counter_over_three_nodes_with_local_kv_does_not_count_once() {
    // The problem this backend solves: each node's own SQLite file counts
    // on its own, so some counts repeat.
    let (counts, nodes) = count_over_three_nodes("", 30).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert_ne!(counts, (1..=30).collect::<Vec<u64>>());
}
