//! What a run can see: config, context, scratch dir, and nothing else.

use crate::output;
use warden_host::{Grant, RunRequest};
use warden_tests::{components, load, sandbox};

#[tokio::test]
async fn a_run_sees_its_grant_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let probe = load(&sb, components::ENV_PROBE);
    let mut req = RunRequest::new("env", "null");
    req.attempt = 3;
    req.grant = Grant {
        scratch_dir: true,
        config: [("greeting".to_string(), "hi".to_string())].into(),
        ..Grant::default()
    };
    let run_id = req.run_id.clone();
    let out = output(&sb.run(&probe, req).await);
    assert_eq!(out["config"], serde_json::json!([["greeting", "hi"]]));
    assert_eq!(out["run_id"], run_id);
    assert_eq!(out["attempt"], 3);
    assert_eq!(out["scratch"]["Ok"], "kept");
    assert_eq!(out["etc_passwd"], false);
    assert_eq!(out["env"], 0, "host environment leaked into the guest");
    assert!(out["time_left_ms"].as_u64().unwrap() > 0);

    // The scratch dir is gone after the run (this process's parent of
    // run directories stays, empty).
    let left: Vec<_> = std::fs::read_dir(dir.path().join("scratch"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .collect();
    assert!(left.is_empty(), "scratch dirs left behind: {left:?}");
}

#[tokio::test]
async fn no_scratch_dir_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let probe = load(&sb, components::ENV_PROBE);
    let out = output(&sb.run(&probe, RunRequest::new("env", "null")).await);
    assert!(out["scratch"]["Err"].is_string(), "{out}");
    assert_eq!(out["config"], serde_json::json!([]));
}

#[tokio::test]
async fn a_grant_the_host_cannot_enforce_fails_capability_denied() {
    // Submits and `warden run` refuse such a grant before a run exists; a
    // host embedded as a library (or a lease stored before that check)
    // still never runs the agent with it.
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let probe = load(&sb, components::ENV_PROBE);
    let mut req = RunRequest::new("env", "null");
    req.grant = Grant {
        http: vec!["https://api.example.com/v1".into()],
        ..Grant::default()
    };
    let outcome = sb.run(&probe, req).await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, warden_host::FailureKind::CapabilityDenied);
    assert!(!failure.kind.retryable());
    assert!(
        failure.message.contains("paths are not allowed"),
        "{failure}"
    );
}
