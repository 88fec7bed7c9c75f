//! The node's own faults while it sets a run up are `host_error`, which is
//! retried (another node, or a later try, may do better), never put on the
//! guest: here, no free instance slot in the node's pool.

use std::sync::Arc;
use warden_host::capability::logging::LogTap;
use warden_host::{FailureKind, RunRequest};
use warden_tests::{components, examples, load};

/// With its one instance slot taken by a running agent, a node cannot
/// instantiate another: that run fails `host_error` (retryable), naming
/// the pool's limit, and once the slot is free runs go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_finds_no_free_instance_slot_is_a_host_error() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| c.engine.pool_slots = 1);
    let sleeper = load(&sb, components::SLEEPER);
    let hello = load(&sb, examples::HELLO);

    // The sleeper's first log line says it holds the slot.
    let (started, mut holding) = tokio::sync::mpsc::unbounded_channel();
    let mut req = RunRequest::new("sleeper", r#"{"ms": 3000, "lines": 3}"#);
    req.log_tap = Some(LogTap(Arc::new(move |_, _| {
        let _ = started.send(());
    })));
    let sleeping = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(&sleeper, req).await })
    };
    holding
        .recv()
        .await
        .expect("the sleeper logs while it runs");

    let failure = sb
        .run(&hello, RunRequest::new("hello", "{}"))
        .await
        .result
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::HostError, "{failure}");
    assert!(failure.kind.retryable(), "{failure}");
    assert!(
        failure.message.contains("maximum concurrent limit of 1"),
        "{failure}"
    );

    let slept = sleeping.await.unwrap();
    assert!(slept.result.is_ok(), "{:?}", slept.result);
    let out = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
}
