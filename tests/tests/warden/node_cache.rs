//! The node's component cache across nodes and restarts, in one process
//! with a real control plane over gRPC: each node fetches a component once,
//! keeps it across restarts (compiled: the blob is not even read then),
//! re-fetches a damaged blob, and pre-warms.

use std::time::Duration;
use warden_core::RunState;
use warden_tests::cluster::{connect, publish, state, submit, wait_run};
use warden_tests::in_process::Node;
use warden_tests::{examples, sandbox_with};

fn start(url: &str, id: &str, dir: &std::path::Path, prewarm: &[&str]) -> Node {
    let sandbox = sandbox_with(dir, |c| c.engine.pool_slots = 8);
    Node::start(url, id, sandbox, dir, 4, prewarm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_nothing_each_fetch_once_and_keep_it_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (cp, url) = warden_tests::in_process::control_plane(tmp.path()).await;
    let ch = connect(&url).await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;

    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = start(&url, "a", &dir_a, &[]);
    let b = start(&url, "b", &dir_b, &[]);
    // Both registered before any work exists, so both get some.
    let started = std::time::Instant::now();
    while cp.store().list_nodes().unwrap().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the nodes did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            submit(
                ch.clone(),
                "hello@1",
                &format!("{{\"name\":\"{i}\"}}"),
                |_| {},
            )
            .await,
        );
    }
    let mut ran_on = std::collections::BTreeSet::new();
    for id in &ids {
        let run = wait_run(ch.clone(), id, Duration::from_secs(60), |r| {
            state(r) == RunState::Succeeded
        })
        .await;
        ran_on.insert(run.attempts[0].node_id.clone());
    }
    assert_eq!(ran_on.len(), 2, "both nodes ran some of the 40 runs");
    assert_eq!(
        (a.agent.component_fetches(), b.agent.component_fetches()),
        (1, 1)
    );
    assert_eq!(cp.component_fetches(), 2, "one fetch per node, not per run");

    // Restarted on the same data dir: no fetch at all. The compile cache
    // has the component by digest, so the blob is not needed either.
    a.stop().await;
    b.stop().await;
    std::fs::remove_dir_all(dir_a.join("blobs")).unwrap();
    let a = start(&url, "a", &dir_a, &[]);
    let id = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(
        a.agent.component_fetches(),
        0,
        "the compiled component survived the restart"
    );
    assert!(!dir_a.join("blobs").exists(), "the blob was not needed");
    assert_eq!(cp.component_fetches(), 2);
    a.stop().await;

    // Pre-warming: a new node fetches the component before any run exists.
    let c = start(&url, "c", &tmp.path().join("c"), &["hello@1"]);
    let started = std::time::Instant::now();
    while c.agent.component_fetches() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "--prewarm fetched nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cp.component_fetches(), 3);
    let id = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(
        c.agent.component_fetches(),
        1,
        "the run reused the pre-warmed blob"
    );
    c.stop().await;

    // With the compile cache gone, the blob is what the node has: intact,
    // it is read, not fetched.
    std::fs::remove_dir_all(dir_b.join("cache")).unwrap();
    let b = start(&url, "b", &dir_b, &[]);
    let id = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(b.agent.component_fetches(), 0, "the intact blob was used");
    b.stop().await;

    // A damaged blob is detected and fetched again, never loaded.
    std::fs::remove_dir_all(dir_b.join("cache")).unwrap();
    let blob = std::fs::read_dir(dir_b.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .expect("node b kept the blob");
    let mut data = std::fs::read(&blob).unwrap();
    data[100] ^= 0x40;
    std::fs::write(&blob, &data).unwrap();
    let b = start(&url, "b", &dir_b, &["hello@1"]);
    // Pre-warming runs before the node pulls; a run proves it is up.
    let id = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(
        b.agent.component_fetches(),
        1,
        "the damaged blob was fetched again"
    );
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        std::fs::read(examples::HELLO).unwrap()
    );
    b.stop().await;
}
