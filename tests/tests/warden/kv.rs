//! Key-value storage: persistence in SQLite, isolation between agents.

use crate::output;
use warden_host::{Grant, RunRequest, Sandbox};
use warden_tests::{components, load, sandbox};

async fn kv(sb: &Sandbox, agent: &str, input: &str) -> serde_json::Value {
    let probe = load(sb, components::KV_PROBE);
    let mut req = RunRequest::new(agent, input);
    req.grant = Grant {
        kv: true,
        ..Grant::default()
    };
    output(&sb.run(&probe, req).await)
}

#[tokio::test]
async fn values_persist_across_runs_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sb = sandbox(dir.path(), None);
        assert_eq!(kv(&sb, "counter", r#"{"op":"incr","key":"n"}"#).await, 1);
        assert_eq!(kv(&sb, "counter", r#"{"op":"incr","key":"n"}"#).await, 2);
    }
    // A new sandbox (as after a restart) on the same data dir.
    let sb = sandbox(dir.path(), None);
    assert_eq!(kv(&sb, "counter", r#"{"op":"incr","key":"n"}"#).await, 3);
    assert!(dir.path().join("kv.sqlite3").exists());
}

#[tokio::test]
async fn a_guest_swaps_only_from_the_value_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let cas = |expected: &str, value: &str| {
        format!(r#"{{"op":"cas","key":"leader","expected":{expected},"value":"{value}"}}"#)
    };
    assert_eq!(kv(&sb, "election", &cas("null", "n1")).await, true);
    assert_eq!(kv(&sb, "election", &cas("null", "n2")).await, false);
    assert_eq!(kv(&sb, "election", &cas("\"n2\"", "n3")).await, false);
    assert_eq!(kv(&sb, "election", &cas("\"n1\"", "n2")).await, true);
    assert_eq!(
        kv(&sb, "election", r#"{"op":"get","key":"leader"}"#).await,
        "n2"
    );
}

#[tokio::test]
async fn agents_cannot_see_each_others_keys() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    kv(&sb, "alice", r#"{"op":"set","key":"secret","value":"a"}"#).await;
    assert_eq!(
        kv(&sb, "bob", r#"{"op":"get","key":"secret"}"#).await,
        serde_json::Value::Null
    );
    assert_eq!(
        kv(&sb, "bob", r#"{"op":"keys"}"#).await,
        serde_json::json!([])
    );
    assert_eq!(
        kv(&sb, "alice", r#"{"op":"get","key":"secret"}"#).await,
        "a"
    );
}

#[tokio::test]
async fn kv_is_denied_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let probe = load(&sb, components::KV_PROBE);
    let outcome = sb
        .run(&probe, RunRequest::new("x", r#"{"op":"keys"}"#))
        .await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, warden_host::FailureKind::GuestError);
    assert!(
        failure.message.contains("not granted"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_node_policy_without_kv_denies_it_even_when_granted() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| c.policy.kv = false);
    let probe = load(&sb, components::KV_PROBE);
    let mut req = RunRequest::new("x", r#"{"op":"keys"}"#);
    req.grant = Grant {
        kv: true,
        ..Grant::default()
    };
    let failure = sb.run(&probe, req).await.result.unwrap_err();
    assert!(
        failure.message.contains("not granted"),
        "{}",
        failure.message
    );
}

/// A key of 1 KiB and a value of 1 MiB are stored; one byte more of
/// either is the guest's error, from `set`, `get` and `cas` alike. Without
/// the bounds in `kv/host.rs` SQLite would take both, and the oversized
/// calls would succeed.
#[tokio::test]
async fn keys_over_1_kib_and_values_over_1_mib_are_the_guests_error() {
    use warden_host::capability::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
    assert_eq!((MAX_KEY_BYTES, MAX_VALUE_BYTES), (1024, 1 << 20));
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let probe = load(&sb, components::KV_PROBE);
    let run = |input: serde_json::Value| {
        let mut req = RunRequest::new("bounds", input.to_string());
        // Room to read a 1 MiB value back as JSON.
        req.budget.max_output_bytes = 2 << 20;
        req.grant = Grant {
            kv: true,
            ..Grant::default()
        };
        sb.run(&probe, req)
    };
    let set = |key: &str, value: &str| serde_json::json!({"op": "set", "key": key, "value": value});
    let at_bound = "k".repeat(MAX_KEY_BYTES);
    let over_bound = "k".repeat(MAX_KEY_BYTES + 1);
    let big = "v".repeat(MAX_VALUE_BYTES);
    let too_big = "v".repeat(MAX_VALUE_BYTES + 1);

    // At the bounds: stored and read back.
    run(set(&at_bound, &big)).await.result.unwrap();
    let read = run(serde_json::json!({"op": "get", "key": at_bound})).await;
    assert_eq!(output(&read).as_str().map(str::len), Some(MAX_VALUE_BYTES));

    let refused = [
        (
            set(&over_bound, "v"),
            "key is 1025 bytes; the limit is 1024",
        ),
        (
            serde_json::json!({"op": "get", "key": over_bound}),
            "key is 1025 bytes; the limit is 1024",
        ),
        (
            set("k", &too_big),
            "value is 1048577 bytes; the limit is 1048576",
        ),
        (
            serde_json::json!({"op": "cas", "key": "k", "expected": null, "value": too_big}),
            "value is 1048577 bytes; the limit is 1048576",
        ),
    ];
    for (input, expected) in refused {
        let op = input["op"].clone();
        let failure = run(input).await.result.unwrap_err();
        assert_eq!(failure.kind, warden_host::FailureKind::GuestError, "{op}");
        assert!(
            failure.message.contains(expected),
            "{op}: {}",
            failure.message
        );
    }
    // Nothing over the bounds was stored.
    let keys = output(&run(serde_json::json!({"op": "keys"})).await);
    assert_eq!(keys, serde_json::json!([at_bound]));
}

/// What a guest sees of key-value storage is the same on every backend
/// (issue 24, item 14): any bytes round trip, the limits on keys and values
/// and the NUL rule answer alike, and a bucket of another name holds
/// nothing of `default`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_the_same_key_value_rules_on_every_backend() {
    use warden_host::config::KvBackend;
    let postgres = warden_testkit::postgres_database();
    let redis = warden_testkit::redis();
    let all: Vec<u8> = (0..=255).collect();
    let calls = serde_json::json!([
        { "call": "kv.set", "a": "default", "b": "bytes", "bytes": all },
        { "call": "kv.get", "a": "default", "b": "bytes" },
        { "call": "kv.set", "a": "default", "b": "k".repeat(1025), "bytes": [1] },
        { "call": "kv.set", "a": "default", "b": "a\u{0}b", "bytes": [1] },
        { "call": "kv.get", "a": "other", "b": "k" },
        { "call": "kv.set", "a": "default", "b": "empty", "bytes": [] },
        { "call": "kv.exists", "a": "default", "b": "empty" },
        { "call": "kv.increment", "a": "default", "b": "bytes", "n": 1 },
    ]);
    let mut answers = Vec::new();
    for (backend, url, prefix) in [
        (KvBackend::Sqlite, None, String::new()),
        (KvBackend::Memory, None, String::new()),
        (
            KvBackend::Postgres,
            Some(postgres.url.clone()),
            String::new(),
        ),
        (
            KvBackend::Redis,
            Some(redis.url.clone()),
            redis.prefix.clone(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sb = warden_tests::sandbox_with(dir.path(), |c| {
            c.kv.backend = backend;
            c.kv.url = url;
            if !prefix.is_empty() {
                c.kv.prefix = prefix;
            }
        });
        let probe = load(&sb, components::HOST_CALLS);
        let mut req = RunRequest::new("host-calls", calls.to_string());
        req.grant = Grant {
            kv: true,
            ..Grant::default()
        };
        let out = output(&sb.run(&probe, req).await);
        answers.push((backend, out));
    }
    let (_, first) = &answers[0];
    assert_eq!(first[1], serde_json::json!({ "ok": all }), "{first}");
    assert!(
        first[2]["error"]
            .as_str()
            .unwrap()
            .contains("the limit is 1024"),
        "{first}"
    );
    assert!(
        first[3]["error"].as_str().unwrap().contains("NUL"),
        "{first}"
    );
    assert_eq!(first[4], serde_json::json!({ "ok": null }), "{first}");
    assert_eq!(first[6], serde_json::json!({ "ok": true }), "{first}");
    assert!(
        first[7]["error"]
            .as_str()
            .unwrap()
            .contains("not a decimal u64"),
        "{first}"
    );
    for (backend, out) in &answers[1..] {
        assert_eq!(out, first, "{backend:?} answers otherwise than SQLite");
    }
}
