//! The lease protocol spoken directly over gRPC by a stand-in node
//! ([`FakeNode`]), for edge cases a real node does not produce on demand:
//! duplicate and stale results, batched acks and reports, retry backoff,
//! and the CLI's batch submits and errors.

use crate::leases::{Backend, TestCluster, on_both_backends};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use warden_core::{AttemptOutcome, RunState};
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_tests::cluster::{Conn, get_run, outcome, publish, state, submit, wait_run};
use warden_tests::examples;

/// A node spoken to directly over gRPC, to drive lease edge cases. It
/// enrolls like a real node and presents its certificate on every call.
struct FakeNode {
    id: String,
    leases: LeaseServiceClient<Conn>,
    /// What its heartbeats say; false: draining.
    accepting: Arc<AtomicBool>,
}

impl FakeNode {
    async fn register(cluster: &TestCluster, id: &str, slots: u32) -> Self {
        let ch = cluster.enroll(id).await;
        NodeServiceClient::new(ch.clone())
            .register(pb::RegisterRequest {
                node_id: id.into(),
                hostname: "test".into(),
                labels: Default::default(),
                capacity: Some(pb::NodeCapacity {
                    slots,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        // Heartbeat like a real node: leases go only to live nodes.
        let mut nodes = NodeServiceClient::new(ch.clone());
        let node_id = id.to_string();
        let accepting = Arc::new(AtomicBool::new(true));
        let beating = accepting.clone();
        tokio::spawn(async move {
            loop {
                let beat = pb::HeartbeatRequest {
                    node_id: node_id.clone(),
                    active_runs: 0,
                    free_slots: slots,
                    accepting: beating.load(Ordering::SeqCst),
                };
                if nodes.heartbeat(beat).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        FakeNode {
            id: id.into(),
            leases: LeaseServiceClient::new(ch),
            accepting,
        }
    }

    async fn pull(&mut self) -> tonic::Streaming<pb::Lease> {
        self.leases
            .pull(pb::PullRequest {
                node_id: self.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn next_lease(&mut self) -> pb::Lease {
        self.next_leases(1).await.remove(0)
    }

    /// The next `n` leases from one Pull stream.
    async fn next_leases(&mut self, n: usize) -> Vec<pb::Lease> {
        let mut stream = self
            .leases
            .pull(pb::PullRequest {
                node_id: self.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut leases = Vec::new();
        while leases.len() < n {
            let lease = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("a lease within 30 s")
                .unwrap()
                .unwrap();
            leases.push(lease);
        }
        leases
    }
}

fn lease_ref(l: &pb::Lease) -> pb::LeaseRef {
    pb::LeaseRef {
        run_id: l.run_id.clone(),
        attempt: l.attempt,
        token: l.token.clone(),
    }
}

fn complete(l: &pb::Lease, output: &str) -> pb::CompleteRequest {
    pb::CompleteRequest {
        lease: Some(lease_ref(l)),
        output: output.into(),
        usage: None,
    }
}

fn fail(l: &pb::Lease, kind: pb::FailureKind) -> pb::FailRequest {
    pb::FailRequest {
        lease: Some(lease_ref(l)),
        kind: kind as i32,
        message: "boom".into(),
        usage: None,
    }
}

async fn results_are_recorded_exactly_once(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--lease-ttl", "1s", "--node-timeout", "60s"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut node = FakeNode::register(&c, "fake", 4).await;

    // Duplicate Complete with the current token: idempotent OK.
    let id = submit(ch.clone(), "hello@1", "1", |_| {}).await;
    let lease = node.next_lease().await;
    assert_eq!(lease.run_id, id);
    let first = node
        .leases
        .complete(complete(&lease, "\"a\""))
        .await
        .unwrap()
        .into_inner();
    let again = node
        .leases
        .complete(complete(&lease, "\"a\""))
        .await
        .unwrap()
        .into_inner();
    assert!(first.recorded && !again.recorded);
    // Fail after Complete: rejected.
    let err = node
        .leases
        .fail(fail(&lease, pb::FailureKind::Trap))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(get_run(ch.clone(), &id).await.output, "\"a\"");

    // Complete after Fail: rejected.
    let id = submit(ch.clone(), "hello@1", "2", |_| {}).await;
    let lease = node.next_lease().await;
    node.leases
        .fail(fail(&lease, pb::FailureKind::Trap))
        .await
        .unwrap();
    let err = node
        .leases
        .complete(complete(&lease, "\"late\""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(state(&get_run(ch.clone(), &id).await), RunState::Failed);

    // A stale token after expiry and re-lease: rejected; the new one counts.
    let id = submit(ch.clone(), "hello@1", "3", |_| {}).await;
    let old = node.next_lease().await;
    let new = node.next_lease().await; // after the 1 s lease expires
    assert_eq!((new.run_id.as_str(), new.attempt), (id.as_str(), 2));
    assert_ne!(new.token, old.token, "each lease has its own token");
    let err = node
        .leases
        .complete(complete(&old, "\"stale\""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("stale"), "{}", err.message());
    node.leases
        .complete(complete(&new, "\"fresh\""))
        .await
        .unwrap();
    let run = get_run(ch.clone(), &id).await;
    assert_eq!(
        (state(&run), run.output.as_str()),
        (RunState::Succeeded, "\"fresh\"")
    );
}

async fn batched_submits_acks_and_results_are_each_checked(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--node-timeout", "60s"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut runs = pb::run_service_client::RunServiceClient::new(ch.clone());
    let request = |input: &str| pb::SubmitRequest {
        agent: "hello@1".into(),
        input: input.into(),
        ..Default::default()
    };

    // One bad run refuses the whole batch, naming it; nothing is queued.
    let err = runs
        .submit_batch(pb::SubmitBatchRequest {
            runs: vec![request("1"), request("{oops"), request("3")],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("run 1: the input is not valid JSON"),
        "{}",
        err.message()
    );
    let listed = runs.list(pb::ListRunsRequest::default()).await.unwrap();
    assert!(listed.into_inner().runs.is_empty());

    let queued = runs
        .submit_batch(pb::SubmitBatchRequest {
            runs: vec![request("1"), request("2"), request("3")],
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(queued.len(), 3);
    assert!(queued.iter().all(|r| state(r) == RunState::Queued));

    let mut node = FakeNode::register(&c, "fake", 4).await;
    let mut leases = node.next_leases(3).await;
    leases.sort_by_key(|l| l.input.clone());
    let [a, b, c3] = [&leases[0], &leases[1], &leases[2]];

    // Ack many at once; one that is not a current lease comes back as stale.
    let bogus = pb::LeaseRef {
        run_id: "nonexistent".into(),
        attempt: 1,
        token: "00".repeat(16),
    };
    let acked = node
        .leases
        .ack(pb::AckRequest {
            leases: vec![lease_ref(a), lease_ref(b), lease_ref(c3), bogus.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.stale, vec![bogus.clone()]);
    assert_eq!(
        state(&get_run(ch.clone(), &a.run_id).await),
        RunState::Running
    );

    // One Report, one answer per result, in order.
    let done = |l: &pb::Lease, out: &str| pb::RunResult {
        result: Some(pb::run_result::Result::Complete(complete(l, out))),
    };
    let mut unknown = complete(a, "\"x\"");
    unknown.lease = Some(bogus);
    let answers = node
        .leases
        .report(pb::ReportRequest {
            results: vec![
                done(a, "\"a\""),
                done(a, "\"a\""),
                pb::RunResult {
                    result: Some(pb::run_result::Result::Fail(fail(b, pb::FailureKind::Trap))),
                },
                pb::RunResult {
                    result: Some(pb::run_result::Result::Complete(unknown)),
                },
                pb::RunResult { result: None },
                done(c3, "\"c\""),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .answers;
    let statuses: Vec<_> = answers.iter().map(|a| a.status()).collect();
    use pb::ReportStatus::*;
    assert_eq!(
        statuses,
        [
            Recorded,
            AlreadyRecorded,
            Recorded,
            Rejected,
            Rejected,
            Recorded
        ]
    );
    assert_eq!(answers[3].message, "no such run");
    assert!(
        answers[4].message.contains("complete or a fail"),
        "{}",
        answers[4].message
    );
    let states: Vec<_> = [a, b, c3].iter().map(|l| l.run_id.clone()).collect();
    let mut got = Vec::new();
    for id in &states {
        let run = get_run(ch.clone(), id).await;
        got.push((state(&run), run.output));
    }
    assert_eq!(
        got,
        [
            (RunState::Succeeded, "\"a\"".to_string()),
            (RunState::Failed, String::new()),
            (RunState::Succeeded, "\"c\"".to_string()),
        ]
    );
}

async fn retryable_failures_back_off_then_dead_letter(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut node = FakeNode::register(&c, "fake", 4).await;
    let id = submit(ch.clone(), "hello@1", "null", |r| r.max_attempts = 4).await;

    let mut failed_at = Vec::new();
    let mut leased_at = Vec::new();
    for attempt in 1..=4 {
        let lease = node.next_lease().await;
        leased_at.push(Instant::now());
        assert_eq!(lease.attempt, attempt);
        node.leases
            .fail(fail(&lease, pb::FailureKind::HostError))
            .await
            .unwrap();
        failed_at.push(Instant::now());
    }
    let delays: Vec<Duration> = (1..4).map(|i| leased_at[i] - failed_at[i - 1]).collect();
    // Attempt n waits between half and all of its ceiling (0.5 s, 1 s, 2 s),
    // whatever the jitter; the upper bound allows for the lease stream's
    // 200 ms poll and a busy machine.
    for (n, delay) in (1..).zip(&delays) {
        let ceiling = warden_core::Backoff::RUN_RETRY.ceiling(n);
        assert!(*delay >= ceiling / 2, "attempt {n}: {delays:?}");
        assert!(
            *delay <= ceiling + Duration::from_secs(2),
            "attempt {n}: {delays:?}"
        );
    }
    let run = get_run(ch.clone(), &id).await;
    assert_eq!(state(&run), RunState::DeadLettered);
    assert_eq!(run.attempts.len(), 4);
    assert!(run.attempts.iter().all(
        |a| outcome(a) == AttemptOutcome::Failed && a.kind == pb::FailureKind::HostError as i32
    ));
}

/// The next lease on `stream`, or `None` if none comes within `wait`.
async fn lease_within(
    stream: &mut tonic::Streaming<pb::Lease>,
    wait: Duration,
) -> Option<pb::Lease> {
    tokio::time::timeout(wait, stream.message())
        .await
        .ok()
        .map(|m| m.unwrap().expect("the stream stays open"))
}

async fn leases_respect_free_slots_and_draining(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--node-timeout", "60s"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut node = FakeNode::register(&c, "fake", 2).await;
    for i in 0..3 {
        submit(ch.clone(), "hello@1", &i.to_string(), |_| {}).await;
    }
    let mut stream = node.pull().await;
    let first = lease_within(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    lease_within(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    // Two slots, two leases in flight: the third run waits.
    assert!(
        lease_within(&mut stream, Duration::from_secs(1))
            .await
            .is_none(),
        "a third lease with two slots"
    );
    // A slot frees when a result is recorded; the third comes then.
    node.leases.complete(complete(&first, "1")).await.unwrap();
    lease_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the freed slot is filled");

    // Draining (its heartbeat says not accepting): no new leases, though
    // it has free slots and "fake" has none.
    let mut other = FakeNode::register(&c, "draining", 4).await;
    other.accepting.store(false, Ordering::SeqCst);
    // Until a heartbeat saying so has reached the control plane.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = NodeServiceClient::new(ch.clone())
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let state = nodes
            .iter()
            .find(|n| n.node_id == "draining")
            .map(|n| n.node_state());
        if state == Some(pb::NodeState::Draining) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut drained = other.pull().await;
    submit(ch.clone(), "hello@1", "null", |_| {}).await;
    assert!(
        lease_within(&mut drained, Duration::from_secs(1))
            .await
            .is_none(),
        "a draining node got a lease"
    );
    other.accepting.store(true, Ordering::SeqCst);
    lease_within(&mut drained, Duration::from_secs(10))
        .await
        .expect("accepting again, it gets work");
}

async fn node_shutdown_at_max_attempts_dead_letters_and_a_cancel_outlives_an_expiry(
    backend: Backend,
) {
    // The cancel below must come within the lease: the node renews it
    // until then (a stall past one 3 s TTL let it expire first, and the run
    // was leased again).
    let (c, _cp) = TestCluster::start_on(backend, &["--lease-ttl", "3s", "--node-timeout", "60s"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut node = FakeNode::register(&c, "fake", 4).await;

    let id = submit(ch.clone(), "hello@1", "null", |r| r.max_attempts = 1).await;
    let lease = node.next_lease().await;
    node.leases
        .fail(fail(&lease, pb::FailureKind::NodeShutdown))
        .await
        .unwrap();
    let run = get_run(ch.clone(), &id).await;
    assert_eq!(state(&run), RunState::DeadLettered, "{run:?}");
    // Repeating the Fail is an idempotent OK, not a second attempt.
    let again = node
        .leases
        .fail(fail(&lease, pb::FailureKind::NodeShutdown))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.recorded);
    assert_eq!(get_run(ch.clone(), &id).await.attempts.len(), 1);

    // Cancel requested, then the lease expires unrenewed: cancelled, not
    // re-queued.
    let id = submit(ch.clone(), "hello@1", "null", |_| {}).await;
    let lease = node.next_lease().await;
    assert_eq!(lease.run_id, id);
    // The node renews the lease until the cancel is in, so the cancel comes
    // within the lease however long a loaded machine stalls the test; then
    // it stops renewing.
    let renewing = {
        let (mut leases, node_id, lease) =
            (node.leases.clone(), node.id.clone(), lease_ref(&lease));
        tokio::spawn(async move {
            loop {
                let _ = leases
                    .renew(pb::RenewRequest {
                        node_id: node_id.clone(),
                        leases: vec![lease.clone()],
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    pb::run_service_client::RunServiceClient::new(ch.clone())
        .cancel(pb::CancelRunRequest { run_id: id.clone() })
        .await
        .unwrap();
    renewing.abort();
    let run = wait_run(ch.clone(), &id, Duration::from_secs(10), |r| {
        state(r) == RunState::Cancelled
    })
    .await;
    assert_eq!(run.attempts.len(), 1, "{run:?}");
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Expired);
}

on_both_backends!(
    results_are_recorded_exactly_once,
    batched_submits_acks_and_results_are_each_checked,
    retryable_failures_back_off_then_dead_letter,
    leases_respect_free_slots_and_draining,
    node_shutdown_at_max_attempts_dead_letters_and_a_cancel_outlives_an_expiry,
);

/// A node's name and what it says of itself are checked before they are
/// stored: `Enroll` refuses a node id outside the name character set, and
/// `Register` a label outside it or a host name over 255 bytes, each as
/// InvalidArgument, and no such node appears. Without the checks
/// (`service/node.rs`'s `enroll` and `register`) each would be enrolled
/// or registered and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_names_outside_the_character_set() {
    let (c, _cp) = TestCluster::start(&[]);
    for bad in ["bad id\u{1b}[2J", "-dash-first"] {
        let status = c.try_enroll(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let mut node = NodeServiceClient::new(c.enroll("n1").await);
    let request = |label: (&str, &str), hostname: String| pb::RegisterRequest {
        node_id: "n1".into(),
        hostname,
        labels: [(label.0.to_string(), label.1.to_string())].into(),
        capacity: Some(pb::NodeCapacity {
            slots: 1,
            ..Default::default()
        }),
    };
    let fine = ("zone", "a");
    for (what, bad) in [
        ("label", request(("zone", "a b"), "h".into())),
        ("label", request(("@zone", "a"), "h".into())),
        ("hostname", request(fine, "h".repeat(256))),
    ] {
        let status = node.register(bad).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    let listed = NodeServiceClient::new(c.channel().await)
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.nodes.is_empty(), "{listed:?}");
    // The same request with good names registers.
    node.register(request(fine, "h".repeat(255))).await.unwrap();
}
