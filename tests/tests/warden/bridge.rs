//! `warden bridge redis` against a real Redis: 1,000 jobs over three
//! streams with limits of 2, 3 and 5 in flight, the bridge SIGKILLed once
//! and restarted: one result per job, the right output, no limit passed,
//! and bad jobs in the dead-letter stream with their reason. Two bridges
//! on one stream with a `--claim-idle` shorter than their jobs, one of them
//! SIGKILLed mid-job: still one result per job.

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden_core::RunState;
use warden_tests::cluster::Conn;
use warden_tests::cluster::{self, connect, free_port, get_run, most_at_once, publish};
use warden_tests::components;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// A control plane and `nodes` (8 slots each) under `tmp`, with
/// `sleeper@1` published: the processes, the control plane's URL and a
/// channel to it.
async fn sleeper_cluster(tmp: &Path, nodes: &[&str]) -> (Vec<cluster::Proc>, String, Conn) {
    let logs = cluster::log_dir(tmp);
    let (cp, url) = cluster::control_plane(
        &bin(),
        free_port(),
        &tmp.join("cp.sqlite3").display().to_string(),
        &tmp.join("cp-data"),
        &[],
        &logs,
    );
    let mut procs = vec![cp];
    for id in nodes {
        procs.push(cluster::node(
            &bin(),
            &url,
            id,
            tmp,
            &["--slots", "8"],
            &logs,
        ));
    }
    let ch = connect(&url).await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    (procs, url, ch)
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
    let (_cluster, url, ch) = sleeper_cluster(tmp.path(), &["n1", "n2"]).await;

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
        let runs = &by_stream[&name(stream)];
        let most = most_at_once(runs.iter());
        assert!(
            most <= limit,
            "{stream}: {most} runs at once, limit {limit}"
        );
        // And the bridge used its limit: as it sees its runs, from submit
        // to the end of their last attempt, `limit` were in flight at once
        // (the first read of a stream submits that many together).
        let in_flight: Vec<warden_proto::v1::Run> = runs
            .iter()
            .map(|r| warden_proto::v1::Run {
                attempts: vec![warden_proto::v1::Attempt {
                    started_unix_ms: r.created_unix_ms,
                    ended_unix_ms: r.attempts.last().map_or(0, |a| a.ended_unix_ms),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        assert_eq!(
            most_at_once(in_flight.iter()),
            limit,
            "{stream}: the bridge never had {limit} runs in flight"
        );
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

/// How many results `results` holds for each (stream, entry id), checking
/// each result's state and output against `jobs`.
async fn results_per_job(
    conn: &mut redis::aio::MultiplexedConnection,
    results: &str,
    jobs: &BTreeMap<(String, String), String>,
) -> BTreeMap<(String, String), usize> {
    let reply: StreamRangeReply = conn.xrange_all(results).await.unwrap();
    let mut counts = BTreeMap::new();
    for entry in &reply.ids {
        let field = |k: &str| -> String {
            entry
                .get::<String>(k)
                .unwrap_or_else(|| panic!("result without {k}: {entry:?}"))
        };
        let key = (field("stream"), field("id"));
        let expected = jobs
            .get(&key)
            .unwrap_or_else(|| panic!("a result for no job: {key:?}"));
        assert_eq!(field("state"), "succeeded", "{entry:?}");
        assert_eq!(&field("output"), expected, "{key:?}");
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Adds `n` sleeper jobs of `ms` to `stream`, recording their outputs.
async fn add_jobs(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
    ms: u64,
    jobs: &mut BTreeMap<(String, String), String>,
) {
    for _ in 0..n {
        let tag = format!("job-{}", jobs.len());
        let input = serde_json::json!({ "ms": ms, "tag": tag }).to_string();
        let id: String = conn.xadd(stream, "*", &[("input", input)]).await.unwrap();
        jobs.insert((stream.to_string(), id), format!("\"{tag}\""));
    }
}

/// Waits for every job's result, then a while longer for any second one,
/// and checks that each job has exactly one.
async fn assert_one_result_each(
    conn: &mut redis::aio::MultiplexedConnection,
    results: &str,
    jobs: &BTreeMap<(String, String), String>,
) {
    wait_len(conn, results, jobs.len(), Duration::from_secs(60)).await;
    // A second result would come when the other bridge's poll of the same
    // run sees it end (within 0.5 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = results_per_job(conn, results, jobs).await;
    let total: usize = counts.values().sum();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty() && counts.len() == jobs.len(),
        "{total} results for {} jobs ({} with a result); more than one: {twice:?}",
        jobs.len(),
        counts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_with_a_claim_idle_shorter_than_their_jobs_give_one_result_each() {
    let redis = warden_testkit::redis();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = |s: &str| format!("{}{s}", redis.prefix);
    let (stream, results) = (name("jobs"), name("results"));

    let tmp = tempfile::tempdir().unwrap();
    let logs = cluster::log_dir(tmp.path());
    let (_cluster, url, _) = sleeper_cluster(tmp.path(), &["n1"]).await;

    // Jobs of 5 s under a claim idle of 2 s: each bridge's XAUTOCLAIM would
    // see the other's jobs idle long before they end.
    let mut bridges = BTreeMap::new();
    for consumer in ["bridge-1", "bridge-2"] {
        let args: Vec<String> = [
            "bridge",
            "redis",
            "--redis",
            &redis.url,
            "--control-plane",
            &url,
            "--consumer",
            consumer,
            "--results",
            &results,
            "--dead-letter",
            &name("dead"),
            "--claim-idle",
            "2s",
            "--stream",
            &format!("{stream}=sleeper@1:6"),
        ]
        .map(String::from)
        .into();
        let (bridge, line) = cluster::spawn(&bin(), consumer, &args, &logs);
        assert!(line.contains("warden bridge"), "{line}");
        bridges.insert(consumer.to_string(), bridge);
    }
    let mut jobs = BTreeMap::new();
    add_jobs(&mut conn, &stream, 6, 5000, &mut jobs).await;
    assert_one_result_each(&mut conn, &results, &jobs).await;

    // Six more; once they are all taken and more than a claim idle has
    // passed, no job has been claimed by the other bridge (each delivered
    // once); then the bridge holding the most is killed, and the other
    // claims its jobs and publishes each once.
    add_jobs(&mut conn, &stream, 6, 5000, &mut jobs).await;
    let start = Instant::now();
    let holders = loop {
        let pending: redis::streams::StreamPendingReply =
            conn.xpending(&stream, "warden").await.unwrap();
        if let redis::streams::StreamPendingReply::Data(d) = &pending
            && d.count == 6
        {
            break d.consumers.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "jobs not taken: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let taken: redis::streams::StreamPendingCountReply = conn
        .xpending_count(&stream, "warden", "-", "+", 10)
        .await
        .unwrap();
    assert_eq!(taken.ids.len(), 6, "{taken:?}");
    for job in &taken.ids {
        assert_eq!(
            job.times_delivered, 1,
            "a job in flight was claimed: {taken:?}"
        );
    }
    let victim = holders.iter().max_by_key(|c| c.pending).unwrap();
    let bridge = bridges.remove(&victim.name).unwrap();
    bridge.signal("KILL");
    drop(bridge);
    assert_one_result_each(&mut conn, &results, &jobs).await;
    let pending: redis::streams::StreamPendingReply =
        conn.xpending(&stream, "warden").await.unwrap();
    assert_eq!(pending.count(), 0, "unacknowledged jobs: {pending:?}");
}
