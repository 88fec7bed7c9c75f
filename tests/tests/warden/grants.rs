//! The one HTTP pattern language at publish and submit, through a real
//! control plane: a pattern the runtime cannot enforce is refused with the
//! pattern and the reason, and an address grant is never covered by a
//! wildcard declaration.

use crate::leases::TestCluster;
use warden_tests::examples;

#[track_caller]
fn refused(out: &std::process::Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "missing `{part}`: {stderr}");
    }
}

#[test]
fn patterns_are_checked_the_same_way_at_publish_and_submit() {
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("node-a", &["--slots", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = |name: &str, http: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("[grant]\nhttp = [\"{http}\"]\n")).unwrap();
        path.to_str().unwrap().to_string()
    };

    // Publish: a path in a manifest's origin is refused, naming it and why.
    let bad = manifest("bad.toml", "https://api.example.com/v1");
    refused(
        &c.cli(&[
            "publish",
            examples::HTTP_FETCH,
            "fetch@1",
            "--manifest",
            &bad,
        ]),
        &[
            "https://api.example.com/v1",
            "paths are not allowed in an origin pattern",
        ],
    );

    // Submit: the same rule for a grant flag.
    let good = manifest("good.toml", "*://*:*");
    let out = c.cli(&[
        "publish",
        examples::HTTP_FETCH,
        "fetch@1",
        "--manifest",
        &good,
    ]);
    assert!(out.status.success(), "{out:?}");
    refused(
        &c.cli(&[
            "submit",
            "fetch@1",
            "--allow-http",
            "https://api.example.com/v1",
        ]),
        &["paths are not allowed in an origin pattern"],
    );
    // A wildcard declaration means public hosts: it does not cover an
    // address block, so asking for one is refused before the run exists.
    refused(
        &c.cli(&["submit", "fetch@1", "--allow-http", "http://0.0.0.0/0:*"]),
        &["does not declare http http://0.0.0.0/0:*"],
    );
    // A name within it is granted.
    let out = c.cli(&[
        "submit",
        "fetch@1",
        "--allow-http",
        "https://api.example.com",
    ]);
    assert!(out.status.success(), "{out:?}");
    let runs = crate::json(&c.cli(&["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_checked_at_submit_and_a_set_zero_survives_the_wire() {
    use warden_proto::v1 as pb;
    use warden_tests::http_server::{Response, TestServer};
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("node-a", &["--slots", "1"]);
    let ch = c.channel().await;
    let srv = TestServer::start(|_| Response::text(200, "hi"));
    let allow = format!("http://127.0.0.1:{}", srv.port());
    warden_tests::cluster::publish_with(
        ch.clone(),
        warden_tests::components::HTTP_PROBE,
        "probe@1",
        &format!("[grant]\nhttp = [\"{allow}\"]\n"),
    )
    .await;

    // The control plane refuses a budget no client should send.
    let mut runs = pb::run_service_client::RunServiceClient::new(ch.clone());
    for budget in [
        pb::Budget {
            max_cost_usd: Some(f64::NAN),
            ..pb::Budget::default()
        },
        pb::Budget {
            timeout_ms: Some(0),
            ..pb::Budget::default()
        },
    ] {
        let e = runs
            .submit(pb::SubmitRequest {
                agent: "probe@1".into(),
                input: "null".into(),
                budget: Some(budget),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().starts_with("the budget: "), "{e}");
    }

    // `--max-http-requests 0` reaches the node as 0, not as "unset".
    let input = serde_json::json!({ "url": srv.url() }).to_string();
    let out = c.cli(&[
        "submit",
        "probe@1",
        "--input",
        &input,
        "--max-http-requests",
        "0",
        "--wait",
        "--json",
    ]);
    let doc = crate::json(&out);
    assert!(
        doc["output"]["error"].as_str().unwrap().contains("budget"),
        "{doc}"
    );
    assert_eq!(srv.connections(), 0);
    let out = c.cli(&["submit", "probe@1", "--input", &input, "--wait", "--json"]);
    assert_eq!(crate::json(&out)["output"]["body"], "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_bounded_at_submit_and_a_large_allowed_one_reaches_the_node() {
    // A lease carries its run's input, and every client that reads the run
    // gets it too: an input no peer can read must be refused at submit,
    // not wedge the node's lease stream (it did, at 5 MB).
    let (c, _cp) = TestCluster::start(&["--max-input", "3MiB"]);
    let _node = c.node("node-a", &["--slots", "1"]);
    let ch = c.channel().await;
    warden_tests::cluster::publish(ch, warden_tests::components::GUEST_ERROR, "echo-error@1").await;
    let dir = tempfile::tempdir().unwrap();
    let input = |bytes: usize| {
        let path = dir.path().join(format!("{bytes}.json"));
        std::fs::write(&path, serde_json::to_string(&"x".repeat(bytes)).unwrap()).unwrap();
        format!("@{}", path.display())
    };
    let out = c.cli(&[
        "submit",
        "echo-error@1",
        "--input",
        &input(4 << 20),
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("takes at most 3145728 (--max-input)"),
        "{stderr}"
    );
    // 2 MiB is allowed here, and larger than gRPC's default 4 MiB limit
    // would allow once it comes back in the run's error message and input.
    let out = c.cli(&[
        "submit",
        "echo-error@1",
        "--input",
        &input(2 << 20),
        "--wait",
        "--json",
    ]);
    let doc = crate::json(&out);
    assert_eq!(doc["error"]["kind"], "guest_error", "{doc}");
    // The guest's 2 MiB error text is cut to 64 KiB, with a marker.
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.len() < (64 << 10) + 100, "{} bytes", message.len());
    assert!(
        message.ends_with(&format!("[truncated: {} bytes in all]", 2 << 20)),
        "{}",
        &message[message.len() - 80..]
    );
    let listed = crate::json(&c.cli(&["runs", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // The node that ran it serves the next run.
    let out = c.cli(&[
        "submit",
        "echo-error@1",
        "--input",
        r#""small""#,
        "--wait",
        "--json",
    ]);
    assert_eq!(crate::json(&out)["error"]["message"], "small", "{out:?}");
}
