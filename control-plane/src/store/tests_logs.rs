//! Unit tests of run logs: lines are kept per attempt in order, a retried
//! append is not kept twice, only the attempt's own lease (and node) may
//! append, gaps and the bound are marked, and a failed attempt's lines stay.

use super::tests::{TTL, complete, lease, lease_ref, new_run, on_both_backends, register};
use super::*;
use warden_proto::v1::{self as pb, LogChunk, LogLine, LogSource};

fn line(seq: u64, message: &str) -> LogLine {
    LogLine {
        seq,
        unix_ms: 1_000 + seq as i64,
        source: LogSource::Stdout as i32,
        message: message.into(),
        ..Default::default()
    }
}

fn chunk(lease: &pb::LeaseRef, lines: Vec<LogLine>) -> LogChunk {
    LogChunk {
        lease: Some(lease.clone()),
        lines,
        end: 0,
    }
}

/// Every line of the run (attempt `attempt`, or all for 0), as
/// (attempt, seq, source, message).
fn read(store: &Store, id: &str, attempt: u32) -> Vec<(u32, u64, i32, String)> {
    let (lines, _) = store
        .run_logs(None, id, attempt, (0, -1), 1_000)
        .unwrap()
        .unwrap();
    lines
        .into_iter()
        .map(|l| (l.attempt, l.seq, l.source, l.message))
        .collect()
}

fn messages(lines: &[(u32, u64, i32, String)]) -> Vec<&str> {
    lines.iter().map(|l| l.3.as_str()).collect()
}

fn lines_are_kept_in_order_once_and_only_from_the_attempt_s_own_lease(store: &Store) {
    register(store, "n1", 1);
    let id = store.insert_runs(&[new_run(3)]).unwrap().remove(0).run_id;
    let l = lease_ref(&lease(store, "n1", 1, TTL)[0]);
    let first = chunk(&l, vec![line(0, "a"), line(1, "b")]);
    assert_eq!(
        store
            .append_logs(Some("n1"), std::slice::from_ref(&first), 1 << 20)
            .unwrap(),
        0
    );
    // A retried call, then one overlapping it: each line once.
    assert_eq!(store.append_logs(Some("n1"), &[first], 1 << 20).unwrap(), 0);
    let overlap = chunk(&l, vec![line(1, "b"), line(2, "c")]);
    store.append_logs(Some("n1"), &[overlap], 1 << 20).unwrap();
    assert_eq!(messages(&read(store, &id, 0)), ["a", "b", "c"]);

    // Another token, an unknown attempt, another node: refused, not kept.
    let forged = pb::LeaseRef {
        token: "00".repeat(16),
        ..l.clone()
    };
    let later = pb::LeaseRef {
        attempt: 2,
        ..l.clone()
    };
    let refused = store
        .append_logs(
            Some("n1"),
            &[
                chunk(&forged, vec![line(3, "x")]),
                chunk(&later, vec![line(0, "y")]),
            ],
            1 << 20,
        )
        .unwrap();
    assert_eq!(refused, 2);
    assert_eq!(
        store
            .append_logs(Some("n2"), &[chunk(&l, vec![line(3, "z")])], 1 << 20)
            .unwrap(),
        1
    );
    // Authentication off (no node): the token alone decides.
    store
        .append_logs(None, &[chunk(&l, vec![line(3, "d")])], 1 << 20)
        .unwrap();
    assert_eq!(messages(&read(store, &id, 0)), ["a", "b", "c", "d"]);
    // Unknown runs have no log; a run's log is its tenant's.
    assert!(
        store
            .run_logs(None, "r-none", 0, (0, -1), 10)
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .run_logs(Some("other"), &id, 0, (0, -1), 10)
            .unwrap()
            .is_none()
    );
    // Pages resume after (attempt, seq).
    let (page, ended) = store.run_logs(None, &id, 0, (1, 1), 1).unwrap().unwrap();
    assert_eq!(
        (page.len(), page[0].message.as_str(), ended),
        (1, "c", false)
    );
    assert_eq!(complete(store, &l, "\"ok\""), LeaseCheck::Recorded);
    let (_, ended) = store.run_logs(None, &id, 0, (0, -1), 1).unwrap().unwrap();
    assert!(ended);
}

fn gaps_and_the_bound_are_marked_and_failed_attempts_keep_their_lines(store: &Store) {
    register(store, "n1", 1);
    let id = store.insert_runs(&[new_run(3)]).unwrap().remove(0).run_id;
    // Leased already expired: the reaper ends this attempt at once.
    let first = lease_ref(&lease(store, "n1", 1, -1)[0]);
    // Lines 1 and 2 were dropped on the node; its log ended with 6 lines,
    // the last two dropped too.
    let c = LogChunk {
        end: 6,
        ..chunk(&first, vec![line(0, "a"), line(3, "d")])
    };
    store.append_logs(None, &[c], 1 << 20).unwrap();
    let got = read(store, &id, 1);
    let warden = LogSource::Warden as i32;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[1].1, 1);
    assert_eq!(got[1].2, warden);
    assert!(got[1].3.contains("lines 1 to 2 are missing"), "{got:?}");
    assert_eq!(got[3].1, 4);
    assert!(got[3].3.contains("lines 4 to 5 are missing"), "{got:?}");

    // The attempt expires; the next one's log is bounded at 10 bytes.
    assert_eq!(store.expire_leases().unwrap(), 1);
    let second = lease_ref(&lease(store, "n1", 1, TTL)[0]);
    assert_eq!(second.attempt, 2);
    let long = "x".repeat(70 << 10);
    let lines = vec![
        line(0, "12345"),
        line(1, "678"),
        line(2, "9ab"),
        line(3, "c"),
    ];
    store
        .append_logs(None, &[chunk(&second, lines)], 10)
        .unwrap();
    store
        .append_logs(None, &[chunk(&second, vec![line(4, &long)])], 10)
        .unwrap();
    let got = read(store, &id, 2);
    assert_eq!(messages(&got)[..2], ["12345", "678"]);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].2, warden);
    assert!(got[2].3.contains("truncated"), "{got:?}");
    // The failed attempt's lines are still there, and all reads both.
    assert_eq!(read(store, &id, 1).len(), 4);
    assert_eq!(read(store, &id, 0).len(), 7);
    assert_eq!(complete(store, &second, "\"ok\""), LeaseCheck::Recorded);
    // A line longer than a line may be is cut, saying so.
    let run = store.insert_runs(&[new_run(1)]).unwrap().remove(0).run_id;
    let third = lease_ref(&lease(store, "n1", 1, TTL)[0]);
    store
        .append_logs(None, &[chunk(&third, vec![line(0, &long)])], 1 << 20)
        .unwrap();
    let got = read(store, &run, 0);
    assert!(got[0].3.len() < 17 << 10, "{}", got[0].3.len());
    assert!(
        got[0].3.ends_with("bytes cut)"),
        "{}",
        &got[0].3[16 << 10..]
    );
}

on_both_backends!(
    lines_are_kept_in_order_once_and_only_from_the_attempt_s_own_lease,
    gaps_and_the_bound_are_marked_and_failed_attempts_keep_their_lines,
);
