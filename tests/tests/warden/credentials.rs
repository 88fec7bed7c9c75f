//! Registry credentials go only where they belong: a tenant's own
//! credentials (`warden credentials set`) pull its `oci://` references and
//! no other tenant's, sealed at rest; a registry whose token service is on
//! another host gets none sent there, and one the operator did not allow is
//! not contacted at all.

use crate::leases::TestCluster;
use crate::security::{Secure, bin, stderr};
use std::io::Write;
use std::sync::{Arc, Mutex};
use warden_tests::examples;
use warden_tests::http_server::{Response, TestServer};
use warden_tests::oci_registry::OciRegistry;

const PASSWORD: &str = "S3cretPassw0rd";

/// `warden credentials set` for `token`, the password on stdin.
fn set_credentials(cp: &Secure, token: &str, registry: &str) -> std::process::Output {
    let ca = cp.ca().display().to_string();
    let mut child = std::process::Command::new(bin())
        .args(["credentials", "set", registry, "--username", "alice"])
        .args(["--password-stdin", "--control-plane", &cp.url, "--ca", &ca])
        .args(["--token", token])
        .env("WARDEN_DATA_DIR", cp.tmp.path().join("client"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    child.wait_with_output().unwrap()
}

/// A registry that wants alice's password, holding the hello example at
/// the reference returned.
fn private_registry() -> (OciRegistry, String) {
    let registry = OciRegistry::start_with_auth("alice", PASSWORD);
    let tag = registry.reference("private/hello:1");
    let client = tempfile::tempdir().unwrap();
    let pushed = crate::warden(
        client.path(),
        &[
            "publish",
            examples::HELLO,
            &tag,
            "--registry-username",
            "alice",
            "--registry-password",
            PASSWORD,
        ],
    );
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    (registry, tag)
}

#[test]
fn a_tenant_s_registry_credentials_are_its_own() {
    let (registry, tag) = private_registry();
    let cp = Secure::start_with(&["--allow-registry", &registry.host]);
    let acme = cp.token("acme", "admin");
    let beta = cp.token("beta", "admin");
    let submit = |token: &str| cp.cli(token, &["submit", &tag, "--input", "{}"]);

    let out = submit(&acme);
    assert!(
        stderr(&out).contains("requires credentials"),
        "{}",
        stderr(&out)
    );
    // A submitter may not set them; acme's admin does.
    let submitter = cp.token("acme", "submitter");
    let out = set_credentials(&cp, &submitter, &registry.host);
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    let out = set_credentials(&cp, &acme, &registry.host);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = submit(&acme);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = cp.cli(&acme, &["credentials", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["registry"], registry.host.as_str(), "{listed}");
    assert_eq!(listed[0]["username"], "alice", "{listed}");
    assert!(!listed.to_string().contains(PASSWORD));

    // The component is on the control plane now, yet beta and the default
    // tenant (no operator credentials) are asked for their own.
    for token in [&beta, &cp.admin] {
        let out = submit(token);
        assert!(
            stderr(&out).contains("requires credentials"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        cp.cli(&beta, &["credentials", "list"])
            .stdout
            .starts_with(b"no registry")
    );

    // Sealed at rest: the password is in no file of the data dir.
    for entry in std::fs::read_dir(cp.tmp.path().join("cp")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes());
            assert!(!found, "the password is in {}", path.display());
        }
    }
    // Deleted, they are no longer used.
    let out = cp.cli(&acme, &["credentials", "delete", &registry.host]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = submit(&acme);
    assert!(
        stderr(&out).contains("requires credentials"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_token_service_on_another_host_gets_no_credentials() {
    // Every request the token service sees, with its Authorization header.
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let token_service = {
        let seen = seen.clone();
        TestServer::start(move |req| {
            seen.lock()
                .unwrap()
                .push(req.header("authorization").map(str::to_string));
            Response::json(200, &serde_json::json!({"token": "anonymous"}))
        })
    };
    // `localhost` is another host name than the registry's 127.0.0.1.
    let realm = format!("localhost:{}", token_service.port());
    let challenge = format!("Bearer realm=\"http://{realm}/token\",service=\"registry\"");
    let registry = TestServer::start(move |_| {
        Response::text(401, "unauthorized").with_header("WWW-Authenticate", &challenge)
    });
    let host = registry.addr().to_string();
    let tag = format!("oci://{host}/private/hello:1");
    let start = |allowed: &[&str]| {
        let mut args = vec![
            "--registry-username",
            "alice",
            "--registry-password",
            PASSWORD,
            "--registry-host",
            &host,
        ];
        for a in allowed {
            args.extend(["--allow-registry", a]);
        }
        TestCluster::start(&args)
    };

    // The token service is not allowed: it is never contacted.
    let (c, _cp) = start(&[&host]);
    let out = c.cli(&["submit", &tag, "--input", "{}"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("token service"), "{}", stderr(&out));
    assert_eq!(token_service.connections(), 0);
    drop((c, _cp));

    // Allowed, it is asked for a token without the credentials.
    let (c, _cp) = start(&[&host, &realm]);
    let out = c.cli(&["submit", &tag, "--input", "{}"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not on the registry's host"),
        "{}",
        stderr(&out)
    );
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the token service was not asked");
    assert!(
        seen.iter()
            .all(|auth| auth.as_deref().is_none_or(|a| !a.starts_with("Basic"))),
        "credentials were sent to the token service: {seen:?}"
    );
}

/// The operator's `--registry-username/--registry-password` are the
/// `default` tenant's alone: another tenant submitting the same private
/// reference is asked for its own, before and after the default tenant
/// pulled the component onto the control plane.
#[test]
fn the_operator_s_registry_credentials_are_the_default_tenant_s_alone() {
    let (registry, tag) = private_registry();
    let cp = Secure::start_with(&[
        "--allow-registry",
        &registry.host,
        "--registry-username",
        "alice",
        "--registry-password",
        PASSWORD,
        "--registry-host",
        &registry.host,
    ]);
    let acme = cp.token("acme", "admin");
    let default = cp.token("default", "submitter");
    let submit = |token: &str| cp.cli(token, &["submit", &tag, "--input", "{}"]);
    let asked = |out: &std::process::Output| {
        assert!(!out.status.success(), "submitted without credentials");
        assert!(
            stderr(out).contains("requires credentials"),
            "{}",
            stderr(out)
        );
    };
    asked(&submit(&acme));
    for token in [&default, &cp.admin] {
        let out = submit(token);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    asked(&submit(&acme));
}
