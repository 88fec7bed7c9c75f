//! Run logs in the cluster: `warden runs logs ID --follow` prints a
//! running agent's lines as they are logged, across attempts, and a failed
//! attempt's lines are kept; `warden usage` counts both attempts.

use crate::leases::TestCluster;
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};
use warden_core::{AttemptOutcome, RunState};
use warden_proto::v1 as pb;
use warden_tests::cluster::{get_run, outcome, publish, state, submit, wait_run};
use warden_tests::components;

/// The characters that would act on a terminal if printed raw: ESC, CSI (a
/// C1 control) and a right-to-left override.
const ACTIVE: [char; 3] = ['\u{1b}', '\u{9b}', '\u{202e}'];

/// Lines a child prints, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_a_running_agent_s_lines_and_failed_attempts_keep_theirs() {
    let (c, _cp) = TestCluster::start(&[]);
    let mut a = c.node("node-a", &["--drain-grace", "0s"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    // 12 lines, one every 400 ms: `tick N`, even ones through
    // wasi:logging, odd ones on stdout.
    let input = serde_json::json!({ "ms": 4_800, "lines": 12, "tag": "done" }).to_string();
    let id = submit(ch.clone(), "sleeper@1", &input, |r| r.max_attempts = 3).await;

    let mut follower = c
        .command(&["runs", "logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = lines_of(&mut follower);
    // The first lines arrive while the agent is still running.
    let first = followed.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains(" #1 info   agent: tick 0"), "{first}");
    let second = followed.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(second.contains(" #1 stdout tick 1"), "{second}");
    let run = get_run(ch.clone(), &id).await;
    assert_eq!(state(&run), RunState::Running, "{run:?}");

    // Its node stops now: attempt 1 fails (node_shutdown) with the lines
    // it logged so far; attempt 2 runs on node-b.
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(15))
        .expect("node-a exits after draining");
    let _b = c.node("node-b", &[]);
    let run = wait_run(ch.clone(), &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(run.attempts.len(), 2, "{run:?}");
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Failed);
    assert_eq!(run.attempts[0].kind, pb::FailureKind::NodeShutdown as i32);

    // The follower ends with the run, having printed every line of both
    // attempts in order.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "follow never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut all = vec![first, second];
    all.extend(followed.try_iter());
    let of = |attempt: u32| -> Vec<String> {
        all.iter()
            .filter(|l| l.contains(&format!(" #{attempt} ")))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    let ticks: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    let (one, two) = (of(1), of(2));
    assert!(!one.is_empty() && one.len() < 12, "{all:#?}");
    assert_eq!(one[..], ticks[..one.len()], "{all:#?}");
    assert_eq!(two, ticks, "{all:#?}");
    assert_eq!(all.len(), one.len() + two.len(), "{all:#?}");

    // Read back later: attempt 1 alone, as JSON, the same lines.
    let out = c.cli(&["runs", "logs", &id, "--attempt", "1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let docs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), one.len());
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(doc["attempt"], 1);
        assert_eq!(doc["seq"], i as u64);
        assert_eq!(doc["message"], format!("tick {i}"));
        let (source, level) = if i % 2 == 0 {
            ("log", serde_json::json!("info"))
        } else {
            ("stdout", serde_json::Value::Null)
        };
        assert_eq!(doc["source"], source, "{doc}");
        assert_eq!(doc["level"], level, "{doc}");
    }
    // Both attempts count in the day's usage: one failed, one succeeded.
    let out = c.cli(&["usage", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (row, usage) = (&rows[0], run.usage.as_ref().unwrap());
    assert_eq!(row["agent"], "sleeper");
    assert_eq!(row["tenant"], "default");
    assert_eq!(
        (row["attempts"].as_u64(), row["succeeded"].as_u64()),
        (Some(2), Some(1))
    );
    let wall = row["wall_time_ms"].as_f64().unwrap();
    assert!(wall > usage.wall_time_ms, "{wall} {}", usage.wall_time_ms);
    let today = warden_core::day_name(warden_core::utc_day(warden_core::now_ms()));
    assert_eq!(row["day"], today);
    let out = c.cli(&["usage", "--agent", "other"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");

    // An unknown run is an error that says so.
    let out = c.cli(&["runs", "logs", "r-none"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no run r-none"), "{stderr}");
}

/// `warden runs logs` shows a guest's text with every control character
/// escaped, as text and as JSON lines: a guest's stderr with an escape
/// sequence, a C1 control, a bidi override and a would-be log line of its
/// own reaches the terminal as inert text, each line behind the real
/// time, attempt and source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_escapes_a_guest_s_control_characters() {
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("n1", &[]);
    let ch = c.channel().await;
    publish(ch.clone(), components::BIG_OUTPUT, "big-output@1").await;
    let evil = "boom\n2026-11-23T00:00:00.000Z #1 info   forged\u{1b}[2J\u{9b}31m\u{202e}";
    let input = serde_json::json!({ "tail": evil }).to_string();
    let id = submit(ch.clone(), "big-output@1", &input, |_| {}).await;
    wait_run(ch, &id, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;

    let out = c.cli(&["runs", "logs", &id]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for active in ACTIVE {
        assert!(
            !text.contains(active),
            "{active:?} reached the terminal: {text}"
        );
    }
    assert!(text.contains(r"forged\u{1b}[2J\u{9b}31m\u{202e}"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert!(!line.starts_with("2026-11-23"), "a forged line: {text}");
        assert!(line.contains(" #1 stderr "), "{text}");
    }

    let out = c.cli(&["runs", "logs", &id, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8(out.stdout).unwrap();
    for active in ACTIVE {
        assert!(
            !json.contains(active),
            "{active:?} reached the terminal: {json}"
        );
    }
    // Still JSON lines, with the guest's text intact once decoded.
    let docs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{json}");
    assert_eq!(docs[0]["message"], "boom", "{json}");
    assert!(
        docs[1]["message"]
            .as_str()
            .unwrap()
            .ends_with("forged\u{1b}[2J\u{9b}31m\u{202e}"),
        "{json}"
    );
}
