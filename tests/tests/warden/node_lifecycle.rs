//! A node's life with a TLS control plane: enrolled with a join token
//! (through the first replica that answers), known by its certificate, a
//! lease its own alone; join tokens listed and revoked before use; a
//! revoked node exits non-zero and says what to do, a new join token
//! enrolls it again, a spent one left on its command line does no harm
//! (issue 24, item 1), and a second node on a running node's data dir is
//! refused (item 2).

use crate::security::{Secure, bin, csr, stderr};
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_tests::cluster::free_port;
use warden_tests::{cluster, examples};

fn log(cp: &Secure, name: &str) -> String {
    let path: PathBuf = cluster::log_dir(cp.tmp.path()).join(format!("{name}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs `hello` through the cluster and checks it succeeded.
fn hello_runs(cp: &Secure) {
    let out = cp.cli(
        &cp.admin,
        &[
            "submit",
            "hello@1.0.0",
            "--input",
            r#"{"name":"n1"}"#,
            "--wait",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"]["greeting"], "hello, n1", "{run}");
}

#[test]
fn a_revoked_node_exits_and_a_new_join_token_enrolls_it_again() {
    let cp = Secure::start();
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let mut first = cp.enrolled_node(&[]);
    cp.wait_node("n1", "ready");
    hello_runs(&cp);

    // Revoked, it stops at once, non-zero, saying why and what to do.
    let revoked = cp.cli(&cp.admin, &["nodes", "revoke", "n1"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let status = first
        .wait_exit(Duration::from_secs(20))
        .expect("the revoked node exits");
    assert!(!status.success(), "{status:?}");
    let said = log(&cp, "n1");
    assert!(
        said.contains("the control plane refuses this node")
            && said.contains("revoked")
            && said.contains("--join-token"),
        "{said}"
    );

    // Started again as it was, it stops again.
    let before = log(&cp, "n1").len();
    let mut again = cp.node(&[]);
    let status = again
        .wait_exit(Duration::from_secs(20))
        .expect("a revoked node started again exits");
    assert!(!status.success(), "{status:?}");
    assert!(
        log(&cp, "n1")[before..].contains("the control plane refuses this node"),
        "{}",
        log(&cp, "n1")
    );

    // A new join token enrolls it again, no files removed by hand.
    let join = cp.secret(&cp.admin, &["nodes", "join-token", "create"]);
    let mut enrolled = cp.node(&["--join-token", &join]);
    cp.wait_node("n1", "ready");
    hello_runs(&cp);

    // The spent token left on its command line does no harm: it goes on
    // with the certificate it has.
    enrolled.signal("TERM");
    assert!(
        enrolled
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "a drained node exits 0"
    );
    cp.wait_node("n1", "gone");
    let _restarted = cp.node(&["--join-token", &join]);
    cp.wait_node("n1", "ready");
    hello_runs(&cp);
}

#[test]
fn a_second_node_on_a_running_node_s_data_dir_is_refused() {
    let cp = Secure::start();
    let _first = cp.enrolled_node(&[]);
    cp.wait_node("n1", "ready");
    // The same data dir, under another name or the same.
    for id in ["n2", "n1"] {
        let data = cp.tmp.path().join("n1").display().to_string();
        let ca = cp.ca().display().to_string();
        let args: Vec<String> = [
            "node",
            "--control-plane",
            &cp.url,
            "--ca",
            &ca,
            "--node-id",
            id,
            "--data-dir",
            &data,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let name = format!("second-{id}");
        let (mut second, _) =
            cluster::spawn(&bin(), &name, &args, &cluster::log_dir(cp.tmp.path()));
        let status = second
            .wait_exit(Duration::from_secs(20))
            .expect("the second node exits");
        assert!(!status.success(), "{status:?}");
        let said = log(&cp, &name);
        assert!(
            said.contains("in use by another warden node") && said.contains(&data),
            "{said}"
        );
    }
    // The first goes on.
    cp.wait_node("n1", "ready");
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    hello_runs(&cp);
}

fn register(id: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        node_id: id.into(),
        hostname: "test".into(),
        labels: Default::default(),
        capacity: Some(pb::NodeCapacity {
            slots: 4,
            ..Default::default()
        }),
    }
}

fn lease_ref(l: &pb::Lease) -> pb::LeaseRef {
    pb::LeaseRef {
        run_id: l.run_id.clone(),
        attempt: l.attempt,
        token: l.token.clone(),
    }
}

fn complete(lease: pb::LeaseRef) -> pb::CompleteRequest {
    pb::CompleteRequest {
        lease: Some(lease),
        output: "\"forged\"".into(),
        usage: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_enrolled_and_a_lease_is_its_node_s_alone() {
    let cp = Secure::start();
    // No certificate: no registering, no pulling.
    let anonymous = cp.channel(None).await;
    let e = NodeServiceClient::new(anonymous.clone())
        .register(register("intruder"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = LeaseServiceClient::new(anonymous.clone())
        .pull(pb::PullRequest {
            node_id: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A made-up join token enrolls nobody; a real one enrolls once.
    let (csr, _) = csr();
    let bogus = pb::EnrollRequest {
        join_token: format!("wjt_{}", "0".repeat(64)),
        node_id: "intruder".into(),
        csr_pem: csr.clone(),
    };
    let e = NodeServiceClient::new(anonymous.clone())
        .enroll(bogus)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let join = cp.secret(&cp.admin, &["nodes", "join-token", "create", "--ttl", "5m"]);
    let enroll = pb::EnrollRequest {
        join_token: join,
        node_id: "a".into(),
        csr_pem: csr,
    };
    NodeServiceClient::new(anonymous.clone())
        .enroll(enroll.clone())
        .await
        .unwrap();
    let again = NodeServiceClient::new(anonymous.clone())
        .enroll(pb::EnrollRequest {
            node_id: "c".into(),
            ..enroll
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated, "used twice: {again:?}");

    let a = cp.enroll("node-a").await;
    let b = cp.enroll("node-b").await;
    let (chan_a, chan_b) = (cp.channel(Some(&a)).await, cp.channel(Some(&b)).await);
    // A certificate speaks for its own node only.
    let e = NodeServiceClient::new(chan_a.clone())
        .register(register("node-b"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // And it names its node: a request naming none is refused (it once
    // made a ready node '' with labels of the caller's choosing).
    let e = NodeServiceClient::new(chan_a.clone())
        .register(register(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = LeaseServiceClient::new(chan_a.clone())
        .pull(pb::PullRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = NodeServiceClient::new(chan_a.clone())
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let nodes = cp.cli(&cp.admin, &["nodes", "list", "--json"]);
    assert!(nodes.status.success(), "{}", stderr(&nodes));
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).unwrap();
    assert!(
        nodes.as_array().unwrap().iter().all(|n| n["node_id"] != ""),
        "a node with no id: {nodes}"
    );
    for (chan, id) in [(&chan_a, "node-a"), (&chan_b, "node-b")] {
        NodeServiceClient::new(chan.clone())
            .register(register(id))
            .await
            .unwrap();
    }

    // A run, leased to node A (only A pulls).
    let published = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@1.0.0"]);
    assert!(published.status.success(), "{}", stderr(&published));
    let submitted = cp.cli(&cp.admin, &["submit", "hello@1.0.0", "--input", "{}"]);
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let mut stream = LeaseServiceClient::new(chan_a.clone())
        .pull(pb::PullRequest {
            node_id: "node-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lease = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(lease.token.len(), 32, "128 random bits, hex");

    // Node B, holding the right token, cannot ack, renew or complete it.
    let mut leases_b = LeaseServiceClient::new(chan_b.clone());
    let acked = leases_b
        .ack(pb::AckRequest {
            leases: vec![lease_ref(&lease)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.stale.len(), 1);
    let renewed = leases_b
        .renew(pb::RenewRequest {
            node_id: "node-b".into(),
            leases: vec![lease_ref(&lease)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        renewed.results[0].renew_status,
        pb::RenewStatus::Lost as i32
    );
    let e = leases_b
        .complete(complete(lease_ref(&lease)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Nor can node A with a guessed token.
    let mut guessed = lease_ref(&lease);
    guessed.token = "0123456789abcdef0123456789abcdef".into();
    let mut leases_a = LeaseServiceClient::new(chan_a.clone());
    let e = leases_a.complete(complete(guessed)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let run = cp.get_run(&lease.run_id).await;
    assert_ne!(run.output, "\"forged\"");

    // Revoking A cuts it off at once and gives its lease back.
    let revoked = cp.cli(&cp.admin, &["nodes", "revoke", "node-a"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        String::from_utf8_lossy(&revoked.stdout).contains("1 of its runs"),
        "{revoked:?}"
    );
    let e = NodeServiceClient::new(chan_a.clone())
        .heartbeat(pb::HeartbeatRequest {
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the revoked node's lease stream ends");
    assert!(ended.is_err(), "{ended:?}");
    let run = cp.get_run(&lease.run_id).await;
    assert_eq!(
        warden_core::RunState::from_proto(run.run_state),
        Some(warden_core::RunState::Queued),
        "{run:?}"
    );
}

/// Join tokens are listed (id, expiry, labels, used or not; never the
/// secret) and revoked before use: a revoked one enrolls nobody. A used
/// one is not revoked (its node is), and only the system role sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_listed_and_revoked_before_use() {
    let cp = Secure::start();
    let made = cp.cli(
        &cp.admin,
        &[
            "nodes",
            "join-token",
            "create",
            "--ttl",
            "2h",
            "--label",
            "zone=a",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let made = String::from_utf8(made.stdout).unwrap();
    let secret = made.lines().last().unwrap().to_string();
    let id = made.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(id.len(), 16, "{made}");
    let list = |token: &str| {
        let out = cp.cli(token, &["nodes", "join-token", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains(&secret[4..]), "a secret listed: {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let listed = list(&cp.admin);
    assert_eq!(listed[0]["id"], id, "{listed}");
    assert_eq!(listed[0]["valid"], true, "{listed}");
    assert_eq!(listed[0]["labels"]["zone"], "a", "{listed}");
    assert!(listed[0]["used_by"].is_null(), "{listed}");
    let table = cp.cli(&cp.admin, &["nodes", "join-token", "list"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains(&id) && table.contains("valid"), "{table}");
    // Only the system role.
    let tenant_admin = cp.token("default", "admin");
    let out = cp.cli(&tenant_admin, &["nodes", "join-token", "list"]);
    assert!(!out.status.success(), "an admin listed join tokens");

    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(list(&cp.admin).as_array().unwrap().is_empty());
    let (csr, _) = csr();
    let e = NodeServiceClient::new(cp.channel(None).await)
        .enroll(pb::EnrollRequest {
            join_token: secret.clone(),
            node_id: "late".into(),
            csr_pem: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unauthenticated,
        "a revoked token enrolled: {e:?}"
    );
    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &id]);
    assert!(stderr(&out).contains("no join token"), "{}", stderr(&out));

    // A used one shows its node, and revoking it points at the node.
    cp.enroll("node-u").await;
    let listed = list(&cp.admin);
    assert_eq!(listed[0]["used_by"], "node-u", "{listed}");
    assert_eq!(listed[0]["valid"], false, "{listed}");
    let used = listed[0]["id"].as_str().unwrap().to_string();
    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &used]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("warden nodes revoke node-u"),
        "{}",
        stderr(&out)
    );
}

/// Enrollment tries every control-plane address a node is given: with the
/// first one down, the node enrolls through the next and runs.
#[test]
fn a_node_enrolls_through_the_first_replica_that_answers() {
    let cp = Secure::start();
    let down = format!("https://127.0.0.1:{}", free_port());
    let urls = format!("{down},{}", cp.url);
    let join = cp.secret(&cp.admin, &["nodes", "join-token", "create"]);
    let ca = cp.ca().display().to_string();
    let _node = cluster::node(
        &bin(),
        &urls,
        "n-second",
        cp.tmp.path(),
        &["--ca", &ca, "--join-token", &join],
        &cluster::log_dir(cp.tmp.path()),
    );
    // Ready: it enrolled through its second address.
    cp.wait_node("n-second", "ready");
}
