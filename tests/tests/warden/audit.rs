//! The audit log records who changed what: join tokens made and revoked,
//! nodes enrolled and revoked, publishes and cancels, each with its actor
//! (a token id, or the node) and its tenant. A tenant's admin reads its own
//! tenant's entries; the system role reads every tenant's.

use crate::security::{Secure, stderr};
use warden_tests::examples;

/// The token id of `token` (`warden whoami`: `tenant T, role R (tok_…)`).
fn token_id(cp: &Secure, token: &str) -> String {
    let whoami = cp.cli(token, &["whoami"]);
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let id = String::from_utf8_lossy(&whoami.stdout)
        .split(['(', ')'])
        .nth(1)
        .unwrap()
        .to_string();
    assert!(id.starts_with("tok_"), "{id}");
    id
}

/// The audit log as `token` reads it.
fn audit(cp: &Secure, token: &str) -> Vec<serde_json::Value> {
    let out = cp.cli(token, &["audit", "list", "--limit", "1000", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    entries.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_nodes_publishes_and_cancels_are_audited_with_their_actor() {
    let cp = Secure::start();
    let system = token_id(&cp, &cp.admin);

    // A join token made, then revoked before use.
    let made = cp.cli(&cp.admin, &["nodes", "join-token", "create"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let made = String::from_utf8(made.stdout).unwrap();
    let join_id = made.split_whitespace().nth(2).unwrap().to_string();
    let out = cp.cli(&cp.admin, &["nodes", "join-token", "revoke", &join_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A node enrolled (with a join token of its own), then revoked.
    cp.enroll("node-a").await;
    let out = cp.cli(&cp.admin, &["nodes", "revoke", "node-a"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // acme's admin publishes, submits and cancels (no node: it is queued).
    let acme = cp.token("acme", "admin");
    let acme_id = token_id(&cp, &acme);
    let out = cp.cli(&acme, &["publish", examples::HELLO, "hello@1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = cp.secret(&acme, &["submit", "hello@1", "--input", "{}"]);
    let out = cp.cli(&acme, &["runs", "cancel", &run]);
    assert!(out.status.success(), "{}", stderr(&out));

    let all = audit(&cp, &cp.admin);
    let has =
        |entries: &[serde_json::Value], tenant: &str, actor: &str, action: &str, target: &str| {
            entries.iter().any(|e| {
                e["tenant"] == tenant
                    && e["actor"] == actor
                    && e["action"] == action
                    && e["target"].as_str().unwrap_or("").contains(target)
            })
        };
    let node = "node:node-a";
    for (tenant, actor, action, target) in [
        (
            "default",
            system.as_str(),
            "join_token.create",
            join_id.as_str(),
        ),
        ("default", &system, "join_token.revoke", &join_id),
        ("", node, "node.enroll", "node-a"),
        ("default", &system, "node.revoke", "node-a"),
        ("acme", &acme_id, "publish", "hello@1"),
        ("acme", &acme_id, "cancel", &run),
    ] {
        assert!(
            has(&all, tenant, actor, action, target),
            "no {action} of {target} by {actor} in {tenant:?}: {all:#?}"
        );
    }
    // acme's admin reads acme's entries, and no other tenant's.
    let own = audit(&cp, &acme);
    assert!(
        has(&own, "acme", &acme_id, "publish", "hello@1"),
        "{own:#?}"
    );
    assert!(has(&own, "acme", &acme_id, "cancel", &run), "{own:#?}");
    assert!(own.iter().all(|e| e["tenant"] == "acme"), "{own:#?}");
}
