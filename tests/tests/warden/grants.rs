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
