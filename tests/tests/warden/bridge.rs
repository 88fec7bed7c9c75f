//! `warden bridge redis` against a real Redis: 1,000 jobs over three
//! streams with limits of 2, 3 and 5 in flight, the bridge SIGKILLed once
//! and restarted: one result per job, the right output, no limit passed,
//! and bad jobs in the dead-letter stream with their reason.

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use warden_core::RunState;
use warden_tests::cluster::{self, connect, free_port, get_run, most_at_once, publish};
use warden_tests::components;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// Waits until `stream` has `n` entries (at most `limit`).
async fn wait_len(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let len: usize = conn.xlen(stream).await.unwrap();
        if len >= n {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{stream} has {len} entries after {limit:?}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_over_three_streams_get_one_result_each_through_a_sigkill() {
    let redis = warden_testkit::redis();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = |s: &str| format!("{}{s}", redis.prefix);
    let streams = [
        ("jobs:manager", 2),
        ("jobs:inspector", 3),
        ("jobs:agent", 5),
    ];
    let (results, dead) = (name("results"), name("dead"));

    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let (_cp, url) = cluster::control_plane(
        &bin(),
        free_port(),
        &tmp.path().join("cp.sqlite3").display().to_string(),
        &tmp.path().join("cp-data"),
        &[],
        &logs,
    );
    let _n1 = cluster::node(&bin(), &url, "n1", tmp.path(), &["--slots", "8"], &logs);
    let _n2 = cluster::node(&bin(), &url, "n2", tmp.path(), &["--slots", "8"], &logs);
    let ch = connect(&url).await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;

    // The jobs: (stream, entry id) -> the output its run must give.
    let mut jobs: BTreeMap<(String, String), String> = BTreeMap::new();
    for i in 0..1000 {
        let stream = name(streams[i % 3].0);
        let tag = format!("job-{i}");
        let input = serde_json::json!({ "ms": 20, "tag": tag }).to_string();
        let id: String = conn.xadd(&stream, "*", &[("input", input)]).await.unwrap();
        jobs.insert((stream, id), format!("\"{tag}\""));
    }
    let _: String = conn
        .xadd(name("jobs:agent"), "*", &[("note", "no input")])
        .await
        .unwrap();
    let _: String = conn
        .xadd(name("jobs:agent"), "*", &[("input", "{not json")])
        .await
        .unwrap();

    let mut args: Vec<String> = vec![
        "bridge".into(),
        "redis".into(),
        "--redis".into(),
        redis.url.clone(),
        "--control-plane".into(),
        url.clone(),
        "--consumer".into(),
        "bridge-1".into(),
        "--results".into(),
        results.clone(),
        "--dead-letter".into(),
        dead.clone(),
    ];
    for (stream, limit) in streams {
        args.push("--stream".into());
        args.push(format!("{}=sleeper@1:{limit}", name(stream)));
    }
    let (bridge, line) = cluster::spawn(&bin(), "bridge", &args, &logs);
    assert!(line.contains("warden bridge"), "{line}");
    wait_len(&mut conn, &results, 150, Duration::from_secs(60)).await;
    bridge.signal("KILL");
    drop(bridge);
    // Killed mid-flight: jobs read and not yet acknowledged.
    let mut in_flight = 0;
    for (stream, _) in streams {
        let pending: redis::streams::StreamPendingReply =
            conn.xpending(name(stream), "warden").await.unwrap();
        in_flight += pending.count();
    }
    assert!(in_flight > 0, "the bridge was killed with no job in flight");
    let (_bridge, _) = cluster::spawn(&bin(), "bridge", &args, &logs);
    wait_len(&mut conn, &results, 1000, Duration::from_secs(240)).await;
    wait_len(&mut conn, &dead, 2, Duration::from_secs(30)).await;
    // Nothing more comes: no job got a second result.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let len: usize = conn.xlen(&results).await.unwrap();
    assert_eq!(len, 1000, "one result per job");

    let reply: StreamRangeReply = conn.xrange_all(&results).await.unwrap();
    let field = |e: &redis::streams::StreamId, k: &str| -> String {
        e.get::<String>(k)
            .unwrap_or_else(|| panic!("result without {k}: {e:?}"))
    };
    let mut by_stream: BTreeMap<String, Vec<warden_proto::v1::Run>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in &reply.ids {
        let key = (field(entry, "stream"), field(entry, "id"));
        let expected = jobs
            .get(&key)
            .unwrap_or_else(|| panic!("a result for no job: {key:?}"));
        assert!(seen.insert(key.clone()), "two results for {key:?}");
        assert_eq!(field(entry, "state"), "succeeded", "{entry:?}");
        assert_eq!(&field(entry, "output"), expected, "{key:?}");
        let run = get_run(ch.clone(), &field(entry, "run_id")).await;
        assert_eq!(cluster::state(&run), RunState::Succeeded);
        by_stream.entry(key.0).or_default().push(run);
    }
    assert_eq!(seen.len(), 1000);
    for (stream, limit) in streams {
        let most = most_at_once(by_stream[&name(stream)].iter());
        assert!(
            most <= limit,
            "{stream}: {most} runs at once, limit {limit}"
        );
        assert!(most >= 1);
    }
    let reply: StreamRangeReply = conn.xrange_all(&dead).await.unwrap();
    let reasons: Vec<String> = reply.ids.iter().map(|e| e.get("reason").unwrap()).collect();
    // Each bad job once, with its reason (in either order: the bridge
    // handles a stream's jobs concurrently).
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    for reason in ["no `input` field", "not JSON"] {
        let n = reasons.iter().filter(|r| r.contains(reason)).count();
        assert_eq!(n, 1, "{reason}: {reasons:?}");
    }
    // Every job acknowledged.
    for (stream, _) in streams {
        let pending: redis::streams::StreamPendingReply =
            conn.xpending(name(stream), "warden").await.unwrap();
        assert_eq!(pending.count(), 0, "{stream} has unacknowledged jobs");
    }
}
