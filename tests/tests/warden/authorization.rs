//! One authorization layer decides who may call what (issue 24, item 9).
//! Every method of the protocol, read from its own descriptors, has a
//! rule; over real TLS each method refuses an anonymous caller and every
//! role below its rule's, a node's certificate is no client token nor a
//! client token a node's certificate, the weakest role allowed gets past
//! the layer, and every denial is in the audit log under the method's
//! name.

use prost::Message;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use warden_control_plane::auth::{Rule, rule};
use warden_core::Role;
use warden_tests::in_process::SecureControlPlane;

/// `/warden.v1.Service/Method` of every method the protocol has.
fn methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(warden_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptors decode");
    let mut out = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "warden.v1") {
        for service in &file.service {
            for method in &service.method {
                out.push(format!("/warden.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    out
}

#[test]
fn every_method_has_the_rule_of_the_policy_and_only_enrollment_is_public() {
    let methods = methods();
    // All five services were read (39 methods today); a method added
    // without a rule fails below.
    for service in [
        "NodeService",
        "LeaseService",
        "RunService",
        "RegistryService",
        "AuthService",
    ] {
        let prefix = format!("/warden.v1.{service}/");
        assert!(
            methods.iter().any(|m| m.starts_with(&prefix)),
            "no {service} in {methods:?}"
        );
    }
    for m in &methods {
        let r = rule(m).unwrap_or_else(|| panic!("{m} has no authorization rule"));
        if r == Rule::Public {
            assert_eq!(
                m, "/warden.v1.NodeService/Enroll",
                "only enrollment is public"
            );
        }
    }
    // The policy, stated a second time: changing who may call a method
    // means changing it here too.
    let expected = [
        ("NodeService/Enroll", "public"),
        ("NodeService/Register", "node"),
        ("NodeService/Heartbeat", "node"),
        ("NodeService/Deregister", "node"),
        ("NodeService/CreateJoinToken", "system"),
        ("NodeService/ListJoinTokens", "system"),
        ("NodeService/RevokeJoinToken", "system"),
        ("NodeService/RevokeNode", "system"),
        ("NodeService/ListNodes", "system"),
        ("LeaseService/Pull", "node"),
        ("LeaseService/Ack", "node"),
        ("LeaseService/Renew", "node"),
        ("LeaseService/Complete", "node"),
        ("LeaseService/Fail", "node"),
        ("LeaseService/Report", "node"),
        ("LeaseService/AppendLogs", "node"),
        ("RunService/Submit", "submitter"),
        ("RunService/SubmitBatch", "submitter"),
        ("RunService/Cancel", "submitter"),
        ("RunService/Get", "viewer"),
        ("RunService/List", "viewer"),
        ("RunService/Watch", "viewer"),
        ("RunService/Logs", "viewer"),
        ("RunService/Usage", "viewer"),
        ("RegistryService/Publish", "publisher"),
        ("RegistryService/Validate", "publisher"),
        ("RegistryService/Resolve", "node or viewer"),
        ("RegistryService/Fetch", "node or viewer"),
        ("RegistryService/List", "viewer"),
        ("AuthService/WhoAmI", "viewer"),
        ("AuthService/GetQuotas", "viewer"),
        ("AuthService/SetQuotas", "system"),
        ("AuthService/SetConcurrencyLimit", "admin"),
        ("AuthService/ListAudit", "admin"),
        ("AuthService/CreateToken", "admin"),
        ("AuthService/ListTokens", "admin"),
        ("AuthService/RevokeToken", "admin"),
        ("AuthService/SetRegistryCredential", "admin"),
        ("AuthService/ListRegistryCredentials", "admin"),
        ("AuthService/DeleteRegistryCredential", "admin"),
        ("AuthService/GetWebhookConfig", "admin"),
        ("AuthService/SetWebhookConfig", "system"),
        ("AuthService/RotateWebhookKey", "admin"),
    ];
    assert_eq!(expected.len(), methods.len(), "{methods:?}");
    for (method, who) in expected {
        let actual = match rule(&format!("/warden.v1.{method}")) {
            Some(Rule::Public) => "public".to_string(),
            Some(Rule::Node) => "node".to_string(),
            Some(Rule::Client(role, _)) => role.to_string(),
            Some(Rule::NodeOrClient(role, _)) => format!("node or {role}"),
            None => "nobody".to_string(),
        };
        assert_eq!(actual, who, "{method}");
    }
    assert_eq!(rule("/warden.v1.RunService/Nope"), None);
    assert_eq!(rule("/other.v1.RunService/Submit"), None);
}

/// Calls `path` with an empty message (the layer decides before the body
/// is read), with `token` if any. `Ok` or a status other than the layer's
/// refusals means the call got past it; a call held open (a stream) did
/// too.
async fn call(channel: &Channel, path: &str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(());
    if let Some(token) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match tokio::time::timeout(Duration::from_secs(2), grpc.unary(req, path, codec)).await {
        Ok(answer) => answer.map(|_| ()),
        Err(_) => Ok(()),
    }
}

#[track_caller]
fn refused(answer: Result<(), Status>, code: Code, what: &str) {
    match answer {
        Err(s) if s.code() == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

#[track_caller]
fn let_through(answer: Result<(), Status>, what: &str) {
    if let Err(s) = &answer {
        assert!(
            !matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied),
            "{what}: refused: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_the_anonymous_and_each_role_too_weak_for_it() {
    every_method_checked_on(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_the_anonymous_and_each_role_too_weak_for_it_on_postgres() {
    let db = warden_testkit::postgres_database();
    every_method_checked_on(Some(&db.url)).await;
}

async fn every_method_checked_on(db: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = SecureControlPlane::start_on(tmp.path(), db).await;
    let endpoint = Endpoint::from_shared(cp.url.clone()).unwrap();
    let anonymous = endpoint
        .clone()
        .tls_config(cp.client_tls())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let node_tls = cp.enroll("n1", &tmp.path().join("n1")).await;
    let node = endpoint
        .tls_config(node_tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let roles = [
        Role::Viewer,
        Role::Submitter,
        Role::Publisher,
        Role::Admin,
        Role::System,
    ];
    let tokens: Vec<(Role, String)> = roles
        .iter()
        .map(|&role| {
            let (_, token) = cp
                .cp
                .store()
                .create_token("default", role, "authorization test", None)
                .unwrap();
            (role, token)
        })
        .collect();

    let mut checked = 0;
    for path in methods() {
        let r = rule(&path).unwrap();
        if r == Rule::Public {
            continue;
        }
        refused(
            call(&anonymous, &path, None).await,
            Code::Unauthenticated,
            &format!("{path} with neither token nor certificate"),
        );
        match r {
            Rule::Node => {
                // The strongest client token is no node.
                let (_, system) = tokens.last().unwrap();
                refused(
                    call(&anonymous, &path, Some(system)).await,
                    Code::Unauthenticated,
                    &format!("{path} with a system token"),
                );
                let_through(call(&node, &path, None).await, &format!("{path} by a node"));
            }
            Rule::Client(need, _) | Rule::NodeOrClient(need, _) => {
                for (role, token) in &tokens {
                    let answer = call(&anonymous, &path, Some(token)).await;
                    let what = format!("{path} as {role} (needs {need})");
                    if *role < need {
                        refused(answer, Code::PermissionDenied, &what);
                    } else if *role == need {
                        let_through(answer, &what);
                    }
                }
                let by_node = call(&node, &path, None).await;
                if matches!(r, Rule::NodeOrClient(..)) {
                    let_through(by_node, &format!("{path} by a node"));
                } else {
                    refused(
                        by_node,
                        Code::Unauthenticated,
                        &format!("{path} by a node with no token"),
                    );
                }
            }
            Rule::Public => unreachable!(),
        }
        checked += 1;
    }
    assert_eq!(checked, methods().len() - 1, "every method but Enroll");

    // Each method's anonymous denial is in the audit log, by its name.
    let audit = cp.cp.store().list_audit(None, 1000).unwrap();
    for path in methods() {
        if rule(&path) == Some(Rule::Public) {
            continue;
        }
        let name = path.trim_start_matches("/warden.v1.").replace('/', ".");
        assert!(
            audit
                .iter()
                .any(|e| e.action == "denied" && e.target == name),
            "no denial of {name} audited"
        );
    }
}
