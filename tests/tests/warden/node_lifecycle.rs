//! A node's life with a TLS control plane, as an operator meets it
//! (issue 24, items 1 and 2): a revoked node exits non-zero and says what
//! to do, a new join token enrolls it again, a spent one left on its
//! command line does no harm, and a second node on a running node's data
//! dir is refused.

use crate::security::{Secure, bin, stderr};
use std::path::PathBuf;
use std::time::Duration;
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
