//! `warden agents list|get` and `publish --tenant` (issue 24, item 6): a
//! tenant sees what it published, and what the system role published for
//! it; other tenants' agents stay out of sight.

use crate::security::{Secure, stderr};
use warden_tests::examples;

#[test]
fn a_tenant_lists_its_agents_including_those_published_for_it() {
    let cp = Secure::start();
    let dir = cp.tmp.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("kv.toml");
    std::fs::write(&manifest, "[grant]\nkv = true\n").unwrap();
    let manifest = manifest.display().to_string();

    // The system role publishes for tenant acme; the default tenant has its
    // own hello.
    let out = cp.cli(
        &cp.admin,
        &[
            "publish",
            examples::HELLO,
            "hello@1.0.0",
            "--tenant",
            "acme",
            "--manifest",
            &manifest,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("published hello@1.0.0 for tenant acme"),
        "{out:?}"
    );
    let out = cp.cli(&cp.admin, &["publish", examples::HELLO, "hello@2.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Acme's viewer sees acme's hello, with its manifest, and runs it.
    let viewer = cp.token("acme", "viewer");
    let out = cp.cli(&viewer, &["agents", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["tenant"], "acme");
    assert_eq!(listed[0]["name"], "hello");
    assert_eq!(listed[0]["version"], "1.0.0");
    assert!(listed[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    let out = cp.cli(&viewer, &["agents", "get", "hello@1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("tenant     acme") && shown.contains("kv = true"),
        "{shown}"
    );
    let out = cp.cli(&viewer, &["agents", "get", "hello@2.0.0"]);
    assert!(
        stderr(&out).contains("has no version 2.0.0; it has 1.0.0"),
        "{}",
        stderr(&out)
    );
    let submitter = cp.token("acme", "submitter");
    let out = cp.cli(
        &submitter,
        &["submit", "hello@1.0.0", "--input", "{}", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The system role sees both tenants, a table with a header.
    let out = cp.cli(&cp.admin, &["agents", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TENANT") && lines[0].contains("MANIFEST"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("acme") && lines[1].ends_with("yes"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("default") && lines[2].ends_with("none"),
        "{table}"
    );

    // A tenant's admin may not publish for, nor list, another tenant.
    let acme_admin = cp.token("acme", "admin");
    let out = cp.cli(
        &acme_admin,
        &[
            "publish",
            examples::HELLO,
            "hello@3.0.0",
            "--tenant",
            "default",
        ],
    );
    assert!(
        stderr(&out).contains("publishing for another tenant needs system"),
        "{}",
        stderr(&out)
    );
    let out = cp.cli(&acme_admin, &["agents", "list", "--tenant", "default"]);
    assert!(
        stderr(&out).contains("listing another tenant's agents needs system"),
        "{}",
        stderr(&out)
    );
}
