//! The store conformance suite: what every backend must do alike, run on
//! SQLite and on PostgreSQL (`on_both_backends!`). Leases, logs, quotas and
//! usage have suites of their own (`tests.rs`, `tests_logs.rs`,
//! `tests_quotas.rs`); this one holds tokens and roles, join tokens,
//! enrollment and node identities, nodes, the registry (with publishes
//! racing on one version), registry credentials and the audit log.

use super::tests::{on_both_backends, register};
use super::*;
use std::collections::BTreeMap;
use warden_core::Role;
use warden_proto::v1 as pb;

fn tokens_are_found_by_secret_listed_by_tenant_and_revoked(store: &Store) {
    assert!(!store.has_tokens().unwrap());
    let (a, a_secret) = store.create_token("acme", Role::Admin, "a", None).unwrap();
    let (b, b_secret) = store.create_token("beta", Role::Viewer, "b", None).unwrap();
    let (old, old_secret) = store
        .create_token("acme", Role::Viewer, "old", Some(now_ms() - 1))
        .unwrap();
    assert!(store.has_tokens().unwrap());
    let found = store
        .token(&a_secret)
        .unwrap()
        .expect("found by its secret");
    assert_eq!(
        (found.id.as_str(), found.tenant.as_str(), found.role),
        (a.id.as_str(), "acme", Role::Admin)
    );
    assert!(found.usable(now_ms()));
    assert!(
        !store.token(&old_secret).unwrap().unwrap().usable(now_ms()),
        "expired"
    );
    assert!(store.token("wdn_not-a-token").unwrap().is_none());
    let ids = |tenant| -> Vec<String> {
        let mut ids: Vec<String> = store
            .list_tokens(tenant)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        ids.sort();
        ids
    };
    let mut acme = vec![a.id.clone(), old.id.clone()];
    acme.sort();
    assert_eq!(ids(Some("acme")), acme);
    assert_eq!(ids(Some("beta")), std::slice::from_ref(&b.id));
    assert_eq!(ids(None).len(), 3);
    // A tenant revokes only its own.
    assert!(!store.revoke_token(&b.id, Some("acme")).unwrap());
    assert!(store.revoke_token(&b.id, Some("beta")).unwrap());
    let revoked = store.token(&b_secret).unwrap().unwrap();
    assert!(revoked.revoked_ms.is_some() && !revoked.usable(now_ms()));
}

fn a_join_token_enrolls_one_node_once_and_a_revoked_node_enrolls_again(store: &Store) {
    let labels: BTreeMap<String, String> = [("zone".to_string(), "eu-1".to_string())].into();
    let (join, id, _) = store.create_join_token(&labels, 60_000).unwrap();
    assert_eq!(
        store.enroll(&join, "n1", "fp-1").unwrap(),
        Ok(labels.clone())
    );
    // Spent.
    assert_eq!(
        store.enroll(&join, "n2", "fp-2").unwrap(),
        Err(EnrollError::BadToken)
    );
    let listed = store.list_join_tokens().unwrap();
    let used = listed.iter().find(|t| t.id == id).expect("listed");
    assert_eq!(used.used_by, "n1");
    // A live node id is taken, and the token that tried stays unused.
    let (second, second_id, _) = store.create_join_token(&BTreeMap::new(), 60_000).unwrap();
    assert_eq!(
        store.enroll(&second, "n1", "fp-3").unwrap(),
        Err(EnrollError::Taken("n1".into()))
    );
    let listed = store.list_join_tokens().unwrap();
    assert_eq!(
        listed.iter().find(|t| t.id == second_id).unwrap().used_by,
        ""
    );
    assert_eq!(
        store.node_identity("fp-1").unwrap(),
        Some(("n1".to_string(), labels))
    );
    // Revoked, its certificate is unknown; a new token enrolls it again.
    assert_eq!(store.revoke_node("n1").unwrap(), Some(0));
    assert_eq!(store.node_identity("fp-1").unwrap(), None);
    assert_eq!(
        store.enroll(&second, "n1", "fp-4").unwrap(),
        Ok(BTreeMap::new())
    );
    assert_eq!(store.node_identity("fp-4").unwrap().unwrap().0, "n1");
    assert_eq!(store.revoke_node("never-enrolled").unwrap(), None);
    // An unused token can be revoked; then it enrolls nobody.
    let (third, third_id, _) = store.create_join_token(&BTreeMap::new(), 60_000).unwrap();
    assert_eq!(store.revoke_join_token(&third_id).unwrap(), Ok(()));
    assert_eq!(
        store.enroll(&third, "n3", "fp-5").unwrap(),
        Err(EnrollError::BadToken)
    );
    // An expired one too.
    let (expired, _, _) = store.create_join_token(&BTreeMap::new(), -1).unwrap();
    assert_eq!(
        store.enroll(&expired, "n4", "fp-6").unwrap(),
        Err(EnrollError::BadToken)
    );
}

fn nodes_register_heartbeat_drain_and_leave(store: &Store) {
    register(store, "n1", 4);
    let state = |id: &str| {
        store
            .list_nodes()
            .unwrap()
            .into_iter()
            .find(|n| n.node_id == id)
            .map(|n| warden_core::NodeState::from_wire(n.node_state, &n.state))
    };
    assert_eq!(state("n1"), Some(Some(warden_core::NodeState::Ready)));
    assert!(store.heartbeat("n1", 1, 3, true).unwrap());
    assert!(store.heartbeat("n1", 1, 3, false).unwrap());
    assert_eq!(state("n1"), Some(Some(warden_core::NodeState::Draining)));
    // An unknown node is told to register.
    assert!(!store.heartbeat("nobody", 0, 0, true).unwrap());
    store.deregister_node("n1").unwrap();
    assert_eq!(state("n1"), Some(Some(warden_core::NodeState::Gone)));
    assert!(!store.heartbeat("n1", 0, 4, true).unwrap());
}

fn publishes_of_one_version_at_once_create_it_once(store: &Store) {
    let data = b"component bytes".to_vec();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
    );
    let outcomes: Vec<Published> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| store.publish("acme", "race", "1.0.0", &digest, &data, "")))
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().unwrap().unwrap())
            .collect()
    });
    let created = outcomes
        .iter()
        .filter(|o| **o == Published::Created)
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Published::Created | Published::Unchanged)),
        "{outcomes:?}"
    );
    // Other bytes under the same version are refused, naming the first.
    let other = b"other bytes".to_vec();
    let other_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&other))
    );
    assert_eq!(
        store
            .publish("acme", "race", "1.0.0", &other_digest, &other, "")
            .unwrap(),
        Published::Conflict {
            existing_digest: digest.clone()
        }
    );
    // Another tenant's name is its own.
    assert_eq!(
        store
            .publish("beta", "race", "1.0.0", &other_digest, &other, "")
            .unwrap(),
        Published::Created
    );
    let found = store.resolve("acme", "race", "1.0.0").unwrap().unwrap();
    assert_eq!(found.digest, digest);
    assert_eq!(store.resolve("acme", "race", "2.0.0").unwrap(), Err(true));
    assert_eq!(store.resolve("gamma", "race", "1.0.0").unwrap(), Err(false));
}

fn published_agents_are_listed_by_tenant_name_and_version_a_page_at_a_time(store: &Store) {
    let publish = |tenant: &str, name: &str, version: &str| {
        let data = format!("{tenant}/{name}@{version}").into_bytes();
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
        );
        let published = store
            .publish(tenant, name, version, &digest, &data, "")
            .unwrap();
        assert_eq!(published, Published::Created);
    };
    publish("b", "hello", "1.0.0");
    publish("a", "zeta", "1");
    publish("a", "hello", "2.0.0");
    publish("a", "hello", "1.0.0");
    let refs = |list: Vec<pb::ResolveResponse>| -> Vec<String> {
        list.into_iter()
            .map(|c| format!("{}/{}@{}", c.tenant, c.name, c.version))
            .collect()
    };
    let all = [
        "a/hello@1.0.0",
        "a/hello@2.0.0",
        "a/zeta@1",
        "b/hello@1.0.0",
    ];
    assert_eq!(
        refs(store.list_components(None, None, None, 100).unwrap()),
        all
    );
    assert_eq!(
        refs(
            store
                .list_components(Some("a"), Some("hello"), None, 100)
                .unwrap()
        ),
        ["a/hello@1.0.0", "a/hello@2.0.0"]
    );
    assert_eq!(
        refs(store.list_components(Some("b"), None, None, 100).unwrap()),
        ["b/hello@1.0.0"]
    );
    // A page at a time, each after the last one seen.
    let mut walked = Vec::new();
    let mut after: Option<(String, String, String)> = None;
    loop {
        let page = store
            .list_components(
                None,
                None,
                after
                    .as_ref()
                    .map(|(t, n, v)| (t.as_str(), n.as_str(), v.as_str())),
                1,
            )
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.tenant.clone(), last.name.clone(), last.version.clone()));
        walked.extend(refs(page));
    }
    assert_eq!(walked, all);
}

fn audit_entries_are_kept_and_listed_by_tenant(store: &Store) {
    for (tenant, action) in [
        ("acme", "token.create"),
        ("beta", "publish"),
        ("acme", "denied"),
    ] {
        store
            .audit(AuditEntry {
                tenant: tenant.into(),
                actor: "tok_1".into(),
                action: action.into(),
                target: "RunService.Submit".into(),
                detail: "role viewer needs submitter".into(),
                ..Default::default()
            })
            .unwrap();
    }
    let actions = |tenant, limit| -> Vec<String> {
        store
            .list_audit(tenant, limit)
            .unwrap()
            .into_iter()
            .map(|e| format!("{}:{}", e.tenant, e.action))
            .collect()
    };
    let mut acme = actions(Some("acme"), 100);
    acme.sort();
    assert_eq!(acme, ["acme:denied", "acme:token.create"]);
    assert_eq!(actions(None, 100).len(), 3);
    assert_eq!(actions(None, 2).len(), 2);
    let entry = &store.list_audit(Some("beta"), 10).unwrap()[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.target.as_str(),
            entry.detail.as_str()
        ),
        ("tok_1", "RunService.Submit", "role viewer needs submitter")
    );
    assert!(entry.at_ms > 0);
}

fn registry_credentials_are_a_tenant_s_own(store: &Store) {
    store
        .set_registry_credential("acme", "Registry.Example.com", "alice", "pw-1")
        .unwrap();
    store
        .set_registry_credential("beta", "registry.example.com", "bob", "pw-2")
        .unwrap();
    assert_eq!(
        store
            .registry_credential("acme", "registry.example.com")
            .unwrap(),
        Some(("alice".to_string(), "pw-1".to_string()))
    );
    // Set again: replaced.
    store
        .set_registry_credential("acme", "registry.example.com", "alice", "pw-3")
        .unwrap();
    assert_eq!(
        store
            .registry_credential("acme", "registry.example.com")
            .unwrap(),
        Some(("alice".to_string(), "pw-3".to_string()))
    );
    let listed: Vec<String> = store
        .registry_credentials("acme")
        .unwrap()
        .into_iter()
        .map(|c| format!("{}:{}", c.registry, c.username))
        .collect();
    assert_eq!(listed, ["registry.example.com:alice"]);
    assert!(
        !store
            .delete_registry_credential("acme", "other.example.com")
            .unwrap()
    );
    assert!(
        store
            .delete_registry_credential("acme", "registry.example.com")
            .unwrap()
    );
    assert_eq!(
        store
            .registry_credential("acme", "registry.example.com")
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .registry_credential("beta", "registry.example.com")
            .unwrap(),
        Some(("bob".to_string(), "pw-2".to_string()))
    );
}

on_both_backends!(
    tokens_are_found_by_secret_listed_by_tenant_and_revoked,
    a_join_token_enrolls_one_node_once_and_a_revoked_node_enrolls_again,
    nodes_register_heartbeat_drain_and_leave,
    publishes_of_one_version_at_once_create_it_once,
    published_agents_are_listed_by_tenant_name_and_version_a_page_at_a_time,
    audit_entries_are_kept_and_listed_by_tenant,
    registry_credentials_are_a_tenant_s_own,
);
