//! Unit tests of the lease store, the heart of exactly-once recording:
//! claims respect free slots, renewals extend, expiry re-queues with
//! attempt + 1, stale tokens are rejected, repeats are idempotent,
//! retryable failures back off and then dead-letter, cancels land.

use super::*;
use std::collections::BTreeMap;
use warden_core::{Backoff, FailureKind, RenewStatus, RunState};
use warden_proto::v1 as pb;

pub(super) const TTL: i64 = 10_000;

/// A store on one backend, with what it lives in.
pub(super) struct Backend {
    pub(super) store: Store,
    _dir: tempfile::TempDir,
    _db: Option<warden_testkit::PostgresDatabase>,
}

pub(super) fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        store: Store::open(&dir.path().join("cp.sqlite3")).unwrap(),
        _dir: dir,
        _db: None,
    }
}

/// A store on a new database of the test run's PostgreSQL server.
pub(super) fn postgres() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = warden_testkit::postgres_database();
    Backend {
        store: Store::open_postgres(&db.url, 8, &dir.path().join("cp.key")).unwrap(),
        _dir: dir,
        _db: Some(db),
    }
}

/// Each test (a `fn(&Store)`) once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&crate::store::tests::sqlite().store);
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&crate::store::tests::postgres().store);
            })*
        }
    };
}
pub(super) use on_both_backends;

pub(super) fn register(store: &Store, id: &str, slots: u32) {
    store
        .register_node(&pb::RegisterRequest {
            node_id: id.into(),
            hostname: "test".into(),
            labels: Default::default(),
            capacity: Some(pb::NodeCapacity {
                slots,
                ..Default::default()
            }),
        })
        .unwrap();
}

/// A run of the default tenant's agent a@1, with no input.
pub(super) fn new_run(max_attempts: u32) -> NewRun {
    NewRun {
        tenant: "default".into(),
        id: warden_core::new_run_id(),
        agent: "a@1".into(),
        digest: "sha256:00".into(),
        input: "null".into(),
        budget: Default::default(),
        grant: Default::default(),
        selector: BTreeMap::new(),
        labels: BTreeMap::new(),
        max_attempts,
        traceparent: String::new(),
        idempotency_key: None,
        webhook_url: None,
    }
}

fn submit(store: &Store, n: usize, max_attempts: u32) -> Vec<String> {
    let runs: Vec<NewRun> = (0..n).map(|_| new_run(max_attempts)).collect();
    store
        .insert_runs(&runs)
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect()
}

pub(super) fn lease(store: &Store, node: &str, max: u32, ttl: i64) -> Vec<pb::Lease> {
    store.lease_runs(node, max, ttl, 0).unwrap()
}

pub(super) fn lease_ref(l: &pb::Lease) -> pb::LeaseRef {
    pb::LeaseRef {
        run_id: l.run_id.clone(),
        attempt: l.attempt,
        token: l.token.clone(),
    }
}

pub(super) fn complete(store: &Store, l: &pb::LeaseRef, output: &str) -> LeaseCheck {
    let usage = pb::Usage::default();
    store
        .record(
            None,
            &[RunReport {
                lease: l,
                outcome: Outcome::Succeeded { output },
                usage: &usage,
            }],
        )
        .unwrap()
        .remove(0)
}

fn fail(store: &Store, l: &pb::LeaseRef, kind: FailureKind) -> LeaseCheck {
    let usage = pb::Usage::default();
    store
        .record(
            None,
            &[RunReport {
                lease: l,
                outcome: Outcome::Failed {
                    kind,
                    message: "boom",
                },
                usage: &usage,
            }],
        )
        .unwrap()
        .remove(0)
}

fn state(store: &Store, id: &str) -> RunState {
    let run = store.get_run(None, id).unwrap().unwrap();
    RunState::from_proto(run.run_state).unwrap()
}

fn column(store: &Store, id: &str, column: &str) -> i64 {
    store
        .with_conn(|c| {
            c.query_one(
                &format!("SELECT {column} FROM runs WHERE id = ?1"),
                sql::p![id],
                |r| r.get(0),
            )
        })
        .unwrap()
}

/// Moves a run's retry time to now, as if its backoff had passed.
fn skip_backoff(store: &Store, id: &str) {
    store
        .with_tx(|tx| {
            tx.execute("UPDATE runs SET not_before = 0 WHERE id = ?1", sql::p![id])?;
            Ok(())
        })
        .unwrap();
}

fn claims_never_exceed_free_slots(store: &Store) {
    register(store, "n1", 2);
    submit(store, 5, 3);
    let first = lease(store, "n1", 64, TTL);
    assert_eq!(first.len(), 2, "two slots, two leases");
    assert!(lease(store, "n1", 64, TTL).is_empty(), "no free slot left");
    // Finishing one frees one slot, and only one.
    assert_eq!(
        complete(store, &lease_ref(&first[0]), "1"),
        LeaseCheck::Recorded
    );
    assert_eq!(lease(store, "n1", 64, TTL).len(), 1);
    assert!(lease(store, "n1", 64, TTL).is_empty());
    // `max` bounds a claim too.
    register(store, "n2", 8);
    assert_eq!(lease(store, "n2", 1, TTL).len(), 1);
    // An unknown or draining node gets nothing.
    assert!(lease(store, "ghost", 64, TTL).is_empty());
    assert!(store.heartbeat("n2", 0, 0, false).unwrap());
    assert!(lease(store, "n2", 64, TTL).is_empty());
    // Lease tokens are distinct, 128 random bits.
    let tokens: Vec<&str> = first.iter().map(|l| l.token.as_str()).collect();
    assert_ne!(tokens[0], tokens[1]);
    assert!(tokens.iter().all(|t| t.len() == 32), "{tokens:?}");
}

fn renew_extends_and_says_cancelled_or_lost(store: &Store) {
    register(store, "n1", 4);
    let ids = submit(store, 1, 3);
    let l = lease(store, "n1", 1, 1_000).remove(0);
    let before = column(store, &ids[0], "lease_expires");
    let renewed = store.renew("n1", &[lease_ref(&l)], 60_000).unwrap();
    assert_eq!(renewed[0].1, RenewStatus::Ok);
    let after = column(store, &ids[0], "lease_expires");
    assert!(after >= before + 59_000, "{before} -> {after}");
    assert_eq!(renewed[0].2, after);
    // Another node cannot renew it; neither can a wrong token.
    assert_eq!(
        store.renew("n2", &[lease_ref(&l)], 60_000).unwrap()[0].1,
        RenewStatus::Lost
    );
    let mut wrong = lease_ref(&l);
    wrong.token = "0".repeat(32);
    assert_eq!(
        store.renew("n1", &[wrong], 60_000).unwrap()[0].1,
        RenewStatus::Lost
    );
    // A cancel request shows on the next renewal, which still extends.
    let run = store.cancel(None, &ids[0]).unwrap().unwrap();
    assert!(run.cancel_requested);
    assert_eq!(state(store, &ids[0]), RunState::Leased);
    assert_eq!(
        store.renew("n1", &[lease_ref(&l)], 60_000).unwrap()[0].1,
        RenewStatus::Cancelled
    );
    // The node reports the cancel; the run ends cancelled.
    assert_eq!(
        fail(store, &lease_ref(&l), FailureKind::Cancelled),
        LeaseCheck::Recorded
    );
    assert_eq!(state(store, &ids[0]), RunState::Cancelled);
}

fn expiry_requeues_with_the_next_attempt_and_stale_tokens_are_rejected(store: &Store) {
    register(store, "n1", 4);
    let ids = submit(store, 1, 3);
    let first = lease(store, "n1", 1, -1).remove(0); // already expired
    assert_eq!(first.attempt, 1);
    assert_eq!(store.expire_leases().unwrap(), 1);
    assert_eq!(state(store, &ids[0]), RunState::Queued);
    let run = store.get_run(None, &ids[0]).unwrap().unwrap();
    assert_eq!(
        FailureKind::from_proto(run.attempts[0].kind),
        Some(FailureKind::LeaseLost)
    );
    assert_eq!(run.attempts[0].outcome, "expired");

    let second = lease(store, "n1", 1, TTL).remove(0);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.token, first.token);
    // The first holder's late result is stale and changes nothing.
    assert!(matches!(
        complete(store, &lease_ref(&first), "late"),
        LeaseCheck::Stale(_)
    ));
    // So is a made-up token for the current attempt.
    let mut forged = lease_ref(&second);
    forged.token = "f".repeat(32);
    assert!(matches!(
        complete(store, &forged, "forged"),
        LeaseCheck::Stale(_)
    ));
    assert_eq!(
        complete(store, &lease_ref(&second), "\"ok\""),
        LeaseCheck::Recorded
    );
    let run = store.get_run(None, &ids[0]).unwrap().unwrap();
    assert_eq!(run.output, "\"ok\"");
    assert!(matches!(
        complete(store, &lease_ref(&first), "late"),
        LeaseCheck::Stale(_)
    ));
    assert_eq!(
        complete(store, &pb::LeaseRef::default(), "x"),
        LeaseCheck::NotFound
    );
}

fn repeats_with_the_current_token_are_idempotent_and_differences_conflict(store: &Store) {
    register(store, "n1", 4);
    let ids = submit(store, 2, 3);
    let leases = lease(store, "n1", 2, TTL);
    let (a, b) = (lease_ref(&leases[0]), lease_ref(&leases[1]));
    assert_eq!(complete(store, &a, "1"), LeaseCheck::Recorded);
    assert_eq!(complete(store, &a, "1"), LeaseCheck::AlreadyRecorded);
    assert!(matches!(
        fail(store, &a, FailureKind::Trap),
        LeaseCheck::Conflict(_)
    ));
    // A repeated Fail, even of a retryable kind that re-queued the run.
    assert_eq!(
        fail(store, &b, FailureKind::HostError),
        LeaseCheck::Recorded
    );
    assert_eq!(
        fail(store, &b, FailureKind::HostError),
        LeaseCheck::AlreadyRecorded
    );
    let run = store.get_run(None, &ids[1]).unwrap().unwrap();
    assert_eq!(run.attempts.len(), 1, "the repeat made no new attempt");
    assert_eq!(state(store, &ids[0]), RunState::Succeeded);
    assert_eq!(state(store, &ids[1]), RunState::Queued);
}

fn retryable_failures_back_off_then_dead_letter_and_others_fail_at_once(store: &Store) {
    register(store, "n1", 4);
    let id = submit(store, 1, 3).remove(0);
    for attempt in 1..=3 {
        let l = lease(store, "n1", 1, TTL);
        assert_eq!(l.len(), 1, "attempt {attempt} is leased");
        assert_eq!(l[0].attempt, attempt);
        let before = now_ms();
        assert_eq!(
            fail(store, &lease_ref(&l[0]), FailureKind::HostError),
            LeaseCheck::Recorded
        );
        let after = now_ms();
        if attempt < 3 {
            assert_eq!(state(store, &id), RunState::Queued);
            let delay = column(store, &id, "not_before");
            let ceiling = Backoff::RUN_RETRY.ceiling(attempt).as_millis() as i64;
            assert!(
                delay >= before + ceiling / 2 && delay <= after + ceiling,
                "attempt {attempt}: not_before {delay} not in [{}, {}]",
                before + ceiling / 2,
                after + ceiling
            );
            assert!(
                lease(store, "n1", 1, TTL).is_empty(),
                "leased during its backoff"
            );
            skip_backoff(store, &id);
        }
    }
    assert_eq!(state(store, &id), RunState::DeadLettered);
    let run = store.get_run(None, &id).unwrap().unwrap();
    assert_eq!(run.attempts.len(), 3);
    assert_eq!(
        FailureKind::from_proto(run.error_kind),
        Some(FailureKind::HostError)
    );

    // node_shutdown re-queues at once; at max attempts it dead-letters.
    let id = submit(store, 1, 2).remove(0);
    let l = lease(store, "n1", 1, TTL).remove(0);
    fail(store, &lease_ref(&l), FailureKind::NodeShutdown);
    assert_eq!(state(store, &id), RunState::Queued);
    let l = lease(store, "n1", 1, TTL).remove(0);
    assert_eq!(l.attempt, 2, "re-leased without a backoff");
    fail(store, &lease_ref(&l), FailureKind::NodeShutdown);
    assert_eq!(state(store, &id), RunState::DeadLettered);

    // A guest's own failure is final on the first attempt.
    let id = submit(store, 1, 3).remove(0);
    let l = lease(store, "n1", 1, TTL).remove(0);
    fail(store, &lease_ref(&l), FailureKind::GuestError);
    assert_eq!(state(store, &id), RunState::Failed);
}

fn expiry_at_max_attempts_dead_letters_and_cancel_then_expiry_cancels(store: &Store) {
    register(store, "n1", 4);
    let id = submit(store, 1, 1).remove(0);
    lease(store, "n1", 1, -1);
    assert_eq!(store.expire_leases().unwrap(), 1);
    assert_eq!(state(store, &id), RunState::DeadLettered);
    let run = store.get_run(None, &id).unwrap().unwrap();
    assert_eq!(
        FailureKind::from_proto(run.error_kind),
        Some(FailureKind::LeaseLost)
    );

    let id = submit(store, 1, 3).remove(0);
    lease(store, "n1", 1, -1);
    store.cancel(None, &id).unwrap();
    assert_eq!(store.expire_leases().unwrap(), 1);
    assert_eq!(state(store, &id), RunState::Cancelled);
}

fn cancel_of_a_queued_run_is_immediate_and_of_an_ended_one_changes_nothing(store: &Store) {
    register(store, "n1", 4);
    let ids = submit(store, 2, 3);
    let run = store.cancel(None, &ids[0]).unwrap().unwrap();
    assert_eq!(
        RunState::from_proto(run.run_state),
        Some(RunState::Cancelled)
    );
    assert_eq!(
        FailureKind::from_proto(run.error_kind),
        Some(FailureKind::Cancelled)
    );
    let leased = lease(store, "n1", 4, TTL);
    assert_eq!(leased.len(), 1, "the cancelled run is never leased");
    assert_eq!(leased[0].run_id, ids[1]);
    complete(store, &lease_ref(&leased[0]), "1");
    let run = store.cancel(None, &ids[1]).unwrap().unwrap();
    assert_eq!(
        RunState::from_proto(run.run_state),
        Some(RunState::Succeeded)
    );
    assert!(!run.cancel_requested);
    assert!(store.cancel(None, "nope").unwrap().is_none());
}

fn a_lost_node_s_leases_are_requeued_and_it_gets_none_until_it_registers(store: &Store) {
    register(store, "n1", 4);
    let id = submit(store, 1, 3).remove(0);
    lease(store, "n1", 1, TTL);
    assert_eq!(store.mark_lost_nodes(-1_000).unwrap(), 1);
    assert_eq!(store.expire_leases().unwrap(), 1);
    assert_eq!(state(store, &id), RunState::Queued);
    assert!(
        lease(store, "n1", 4, TTL).is_empty(),
        "lost nodes get nothing"
    );
    assert!(
        !store.heartbeat("n1", 0, 4, true).unwrap(),
        "told to register again"
    );
    register(store, "n1", 4);
    let l = lease(store, "n1", 4, TTL);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].attempt, 2);
}

fn a_lease_is_its_node_s_alone(store: &Store) {
    register(store, "n1", 4);
    register(store, "n2", 4);
    submit(store, 1, 3);
    let l = lease(store, "n1", 1, TTL).remove(0);
    let usage = pb::Usage::default();
    let report = RunReport {
        lease: &lease_ref(&l),
        outcome: Outcome::Succeeded { output: "\"x\"" },
        usage: &usage,
    };
    // Node n2, with the right token, can neither ack nor complete it.
    assert_eq!(store.ack(Some("n2"), &[lease_ref(&l)]).unwrap().len(), 1);
    assert!(matches!(
        store.record(Some("n2"), &[report]).unwrap()[0],
        LeaseCheck::Stale(_)
    ));
    assert!(store.ack(Some("n1"), &[lease_ref(&l)]).unwrap().is_empty());
    assert_eq!(
        store.record(Some("n1"), &[report]).unwrap()[0],
        LeaseCheck::Recorded
    );
    // Nor is n1's recorded result n2's to repeat.
    assert!(matches!(
        store.record(Some("n2"), &[report]).unwrap()[0],
        LeaseCheck::Stale(_)
    ));
}

fn a_used_idempotency_key_answers_with_the_first_run(store: &Store) {
    let run = |key: &str| NewRun {
        idempotency_key: Some(key.into()),
        ..new_run(3)
    };
    let first = store.insert_runs(&[run("job-1")]).unwrap().remove(0);
    let again = store.insert_runs(&[run("job-1")]).unwrap().remove(0);
    assert_eq!(again.run_id, first.run_id);
    // Twice in one batch: one run.
    let batch = store.insert_runs(&[run("job-2"), run("job-2")]).unwrap();
    assert_eq!(batch[0].run_id, batch[1].run_id);
    // Another tenant's key is its own.
    let mut other = run("job-1");
    other.tenant = "acme".into();
    let other = store.insert_runs(&[other]).unwrap().remove(0);
    assert_ne!(other.run_id, first.run_id);
    assert_eq!(store.count_runs(RunState::Queued).unwrap(), 3);
}

/// Acks and results come in batches, written a few statements per batch
/// (and in chunks past 256): each is still checked on its own, a repeat
/// within a batch is answered like a repeat in a later one, and runs
/// get their own outputs.
fn a_large_batch_is_recorded_result_by_result(store: &Store) {
    register(store, "n1", 300);
    let ids = submit(store, 300, 3);
    let leases: Vec<pb::LeaseRef> = lease(store, "n1", 300, TTL).iter().map(lease_ref).collect();
    assert_eq!(leases.len(), 300, "one poll leases past a chunk");
    let order: Vec<&str> = leases.iter().map(|l| l.run_id.as_str()).collect();
    assert_eq!(
        order, ids,
        "runs of one batch are queued in the order given"
    );
    let mut wrong_token = leases[2].clone();
    wrong_token.token = "0".repeat(32);
    let mut acks = leases.clone();
    acks.push(wrong_token.clone());
    assert_eq!(
        store.ack(Some("n1"), &acks).unwrap(),
        vec![wrong_token.clone()]
    );
    assert_eq!(
        store.ack(Some("n1"), &leases[..1]).unwrap(),
        leases[..1].to_vec(),
        "acked once"
    );

    let usage = pb::Usage::default();
    let outputs: Vec<String> = leases.iter().map(|l| format!("out-{}", l.run_id)).collect();
    let mut reports: Vec<RunReport<'_>> = leases
        .iter()
        .zip(&outputs)
        .map(|(lease, output)| RunReport {
            lease,
            outcome: Outcome::Succeeded { output },
            usage: &usage,
        })
        .collect();
    let unknown = pb::LeaseRef {
        run_id: "no-such-run".into(),
        ..leases[3].clone()
    };
    let failed = Outcome::Failed {
        kind: FailureKind::Trap,
        message: "boom",
    };
    reports.push(RunReport {
        lease: &leases[0],
        outcome: reports[0].outcome,
        usage: &usage,
    });
    reports.push(RunReport {
        lease: &leases[1],
        outcome: failed,
        usage: &usage,
    });
    reports.push(RunReport {
        lease: &wrong_token,
        outcome: failed,
        usage: &usage,
    });
    reports.push(RunReport {
        lease: &unknown,
        outcome: failed,
        usage: &usage,
    });
    let answers = store.record(Some("n1"), &reports).unwrap();
    assert_eq!(answers.len(), 304);
    assert!(
        answers[..300].iter().all(|a| *a == LeaseCheck::Recorded),
        "{answers:?}"
    );
    assert_eq!(answers[300], LeaseCheck::AlreadyRecorded);
    assert!(
        matches!(answers[301], LeaseCheck::Conflict(_)),
        "{:?}",
        answers[301]
    );
    assert!(
        matches!(answers[302], LeaseCheck::Stale(_)),
        "{:?}",
        answers[302]
    );
    assert_eq!(answers[303], LeaseCheck::NotFound);
    for id in &ids {
        let run = store.get_run(None, id).unwrap().unwrap();
        assert_eq!(
            RunState::from_proto(run.run_state),
            Some(RunState::Succeeded)
        );
        assert_eq!(run.output, format!("out-{id}"));
        assert_eq!(run.attempts.len(), 1);
        assert_eq!(run.attempts[0].outcome, "succeeded");
        assert!(run.attempts[0].ended_unix_ms > 0);
    }
}

on_both_backends!(
    a_used_idempotency_key_answers_with_the_first_run,
    claims_never_exceed_free_slots,
    renew_extends_and_says_cancelled_or_lost,
    expiry_requeues_with_the_next_attempt_and_stale_tokens_are_rejected,
    repeats_with_the_current_token_are_idempotent_and_differences_conflict,
    retryable_failures_back_off_then_dead_letter_and_others_fail_at_once,
    expiry_at_max_attempts_dead_letters_and_cancel_then_expiry_cancels,
    cancel_of_a_queued_run_is_immediate_and_of_an_ended_one_changes_nothing,
    a_lost_node_s_leases_are_requeued_and_it_gets_none_until_it_registers,
    a_lease_is_its_node_s_alone,
    a_large_batch_is_recorded_result_by_result,
);
