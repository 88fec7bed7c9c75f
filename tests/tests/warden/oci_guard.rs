//! The control plane's guard on registries: only the registries the
//! operator allowed are contacted, at every redirect hop and token service;
//! credentials go only to the registry they are for; proxy variables and a
//! Docker config are not used.

use crate::leases::TestCluster;
use crate::oci::{base64_of, greets, ok, refused, warden};
use warden_tests::examples;
use warden_tests::http_server::{Response, TestServer};
use warden_tests::oci_registry::{OciRegistry, blob_response, manifest_response, wasm_artifact};

/// A submit naming a registry on a loopback, private, link-local or
/// metadata address, in any of the forms the agents' HTTP guard is tested
/// with, is refused before any connection; one outside the allow-list too.
#[test]
fn registries_the_operator_did_not_allow_are_never_contacted() {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Listeners that count connections, on two loopback addresses.
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut ports = Vec::new();
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let (p1, p2) = (ports[0], ports[1]);
    let (c, _cp) = TestCluster::start(&[]);
    let refused = |host: String| {
        let out = c.cli(&[
            "submit",
            &format!("oci://{host}/agents/x:1"),
            "--input",
            "{}",
        ]);
        assert!(!out.status.success(), "{host}: submitted");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("address") || err.contains("not an OCI reference"),
            "{host}: {err}"
        );
        err
    };
    for host in [
        format!("127.0.0.1:{p1}"),
        format!("localhost:{p1}"),
        format!("127.0.0.2:{p2}"),
        format!("[::1]:{p1}"),
        format!("[::ffff:127.0.0.1]:{p1}"),
        format!("2130706433:{p1}"),
        format!("0x7f000001:{p1}"),
        format!("127.1:{p1}"),
        format!("0.0.0.0:{p1}"),
        "169.254.169.254".to_string(),
        "10.1.2.3:5000".to_string(),
        "192.168.0.1".to_string(),
        "[fd00::1]:5000".to_string(),
    ] {
        let err = refused(host.clone());
        if err.contains("address") {
            assert!(err.contains("--allow-registry"), "{host}: {err}");
        }
    }
    // With an allow-list, anything else is refused by name.
    let (c2, _cp2) = TestCluster::start(&["--allow-registry", "registry.example.com"]);
    let out = c2.cli(&[
        "submit",
        &format!("oci://127.0.0.1:{p1}/agents/x:1"),
        "--input",
        "{}",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("not one this control plane may pull from"),
        "{err}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused registry was contacted"
    );
}

/// The control plane's registry credentials go to the registry they were
/// given for and no other: a registry a submit names that asks for
/// credentials gets none (the right password, sent, would have let it in).
#[test]
fn control_plane_credentials_go_only_to_their_registry() {
    let registry = OciRegistry::start_with_auth("alice", "S3cretPassw0rd");
    let tag = registry.reference("private/hello:1");
    ok(&warden(&[
        "publish",
        examples::HELLO,
        &tag,
        "--registry-username",
        "alice",
        "--registry-password",
        "S3cretPassw0rd",
    ]));
    let creds = |host: &str| {
        vec![
            "--allow-registry".to_string(),
            registry.host.clone(),
            "--registry-username".into(),
            "alice".into(),
            "--registry-password".into(),
            "S3cretPassw0rd".into(),
            "--registry-host".into(),
            host.to_string(),
        ]
    };
    // Credentials for no registry in particular are refused at start.
    refused(
        &warden(&[
            "control-plane",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--registry-username",
            "alice",
            "--registry-password",
            "S3cretPassw0rd",
        ]),
        "--registry-host",
    );
    let submit = |c: &TestCluster| c.cli(&["submit", &tag, "--input", "{}"]);
    // Credentials for another registry: this one gets none.
    let args = creds("registry.example.com");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (c, _cp) = TestCluster::start(&args);
    refused(&submit(&c), "requires credentials");
    drop((c, _cp));
    // For this registry: they are used.
    let args = creds(&registry.host);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (c, _cp) = TestCluster::start(&args);
    ok(&submit(&c));
}

/// The token service a registry names is checked on the very answer that
/// names it. A registry on an allowed address that answers its first
/// `/v2/` with 200 and then asks for a token from `127.0.0.2` (another
/// host, not allowed) gets the pull refused, and nothing (least of all the
/// tenant's password) reaches 127.0.0.2. A token service on the
/// registry's own host gets the credentials and its token is used.
#[test]
fn registry_credentials_never_follow_a_token_service_the_guard_did_not_check() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    let component = std::fs::read(examples::HELLO).unwrap();
    let (manifest, layer) = wasm_artifact(&component);
    let elsewhere = TestServer::start_at("127.0.0.2:0".parse().unwrap(), |_| {
        Response::json(200, &serde_json::json!({ "token": "stolen" }))
    });
    let foreign_realm = format!("http://127.0.0.2:{}/token", elsewhere.port());
    // `realm`: where this registry's own token service is (set once its
    // port is known); None: the foreign one.
    let registry = |own_realm: Option<Arc<OnceLock<String>>>| {
        let probes = AtomicUsize::new(0);
        let (manifest, layer, component) = (manifest.clone(), layer.clone(), component.clone());
        let foreign_realm = foreign_realm.clone();
        TestServer::start(move |req| {
            let realm = match &own_realm {
                Some(own) => own.get().unwrap().clone(),
                None => foreign_realm.clone(),
            };
            let challenge = || {
                Response::text(401, "token needed").with_header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="{realm}",service="test""#),
                )
            };
            if req.path == "/v2/" {
                // The first look finds no token service at all.
                return if probes.fetch_add(1, Ordering::SeqCst) == 0 {
                    Response::json(200, &serde_json::json!({}))
                } else {
                    challenge()
                };
            }
            if req.path.starts_with("/token") {
                // alice:password, as HTTP Basic.
                return if req.header("authorization") == Some("Basic YWxpY2U6cGFzc3dvcmQ=") {
                    Response::json(200, &serde_json::json!({ "token": "good" }))
                } else {
                    Response::text(401, "who are you")
                };
            }
            if req.header("authorization") != Some("Bearer good") {
                return challenge();
            }
            if req.path.ends_with("/manifests/1") {
                manifest_response(&manifest)
            } else if req.path.ends_with(&format!("/blobs/{layer}")) {
                blob_response(&component)
            } else {
                Response::text(404, "no such thing")
            }
        })
    };
    let cluster_for = |registry: &TestServer| {
        let host = registry.addr().to_string();
        TestCluster::start(&[
            "--allow-registry",
            &host,
            "--registry-username",
            "alice",
            "--registry-password",
            "password",
            "--registry-host",
            &host,
        ])
    };
    let hostile = registry(None);
    let (c, _cp) = cluster_for(&hostile);
    let out = c.cli(&[
        "submit",
        &format!("oci://{}/agents/x:1", hostile.addr()),
        "--input",
        "{}",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "submitted: {err}");
    assert!(
        err.contains("token service") && err.contains("not one this control plane may pull from"),
        "{err}"
    );
    assert_eq!(elsewhere.connections(), 0, "127.0.0.2 was contacted");
    drop((c, _cp));

    let own = Arc::new(OnceLock::new());
    let honest = registry(Some(own.clone()));
    own.set(format!("{}/token", honest.url())).unwrap();
    let (c, _cp) = cluster_for(&honest);
    let _node = c.node("n1", &[]);
    greets(&c, &format!("oci://{}/agents/x:1", honest.addr()), "realm");
    assert_eq!(elsewhere.connections(), 0, "127.0.0.2 was contacted");
}

/// Every hop of a registry request passes the guard: a manifest or blob
/// redirected to a host the operator did not allow (127.0.0.2, or a "CDN"
/// on another port) is refused without contacting it, and once the CDN is
/// allowed the blob is pulled from it.
#[test]
fn registry_redirects_pass_the_guard_at_every_hop() {
    let component = std::fs::read(examples::HELLO).unwrap();
    let (manifest, layer) = wasm_artifact(&component);
    let elsewhere = TestServer::start_at("127.0.0.2:0".parse().unwrap(), |_| {
        Response::text(200, "internal")
    });
    let cdn = {
        let component = component.clone();
        TestServer::start(move |_| blob_response(&component))
    };
    let (internal, cdn_url) = (format!("http://127.0.0.2:{}", elsewhere.port()), cdn.url());
    let registry = TestServer::start(move |req| {
        let moved = |to: String| Response::text(302, "moved").with_header("Location", &to);
        let repo = req.path.split('/').nth(2).unwrap_or_default();
        match (repo, req.path.contains("/manifests/")) {
            ("moved", true) => moved(format!("{internal}{}", req.path)),
            (_, true) => manifest_response(&manifest),
            ("internal", false) => moved(format!("{internal}/blob")),
            ("cdn", false) if req.path.ends_with(&layer) => moved(format!("{cdn_url}/blob")),
            _ => Response::text(404, "no such thing"),
        }
    });
    let reference = |repo: &str| format!("oci://{}/{repo}/hello:1", registry.addr());
    let allowed = registry.addr().to_string();
    let cdn_host = cdn.addr().to_string();
    let (c, _cp) = TestCluster::start(&["--allow-registry", &allowed]);
    for (repo, names) in [
        ("moved", "registry 127.0.0.2:"),
        ("internal", "registry 127.0.0.2:"),
        ("cdn", &*format!("registry {cdn_host} ")),
    ] {
        let out = c.cli(&["submit", &reference(repo), "--input", "{}"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{repo}: submitted");
        assert!(
            err.contains("not one this control plane may pull from") && err.contains(names),
            "{repo}: {err}"
        );
    }
    assert_eq!(elsewhere.connections(), 0, "127.0.0.2 was contacted");
    assert_eq!(cdn.connections(), 0, "the CDN was contacted unallowed");
    drop((c, _cp));

    let (c, _cp) =
        TestCluster::start(&["--allow-registry", &allowed, "--allow-registry", &cdn_host]);
    let _node = c.node("n1", &[]);
    greets(&c, &reference("cdn"), "cdn");
    assert_eq!(cdn.connections(), 1, "the blob came from the CDN");
    assert_eq!(elsewhere.connections(), 0, "127.0.0.2 was contacted");
}

/// The control plane pulls only through its own guard: it ignores the
/// proxy variables (a proxy would connect where the guard never looked)
/// and the docker config (credentials on the host are not a tenant's). A
/// control plane started with every proxy variable pointing at a counting
/// listener and `DOCKER_CONFIG` holding the right password for a private
/// registry pulls an open registry's component directly (the listener sees
/// no connection) and gets no credentials for the private one. Without
/// `no_proxy()` in `oci/src/pull.rs` reqwest would send the pulls to the
/// listener (it does not skip loopback); without the guard's check there,
/// the docker config's password would open the private registry.
#[test]
fn the_control_plane_ignores_proxy_variables_and_the_docker_config() {
    let open = OciRegistry::start();
    let private = OciRegistry::start_with_auth("alice", "secret");
    let (open_tag, private_tag) = (
        open.reference("agents/hello:1"),
        private.reference("private/hello:1"),
    );
    ok(&warden(&["publish", examples::HELLO, &open_tag]));
    ok(&warden(&[
        "publish",
        examples::HELLO,
        &private_tag,
        "--registry-username",
        "alice",
        "--registry-password",
        "secret",
    ]));
    let proxy = TestServer::start(|_| Response::text(502, "the proxy"));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            private.host,
            base64_of("alice:secret")
        ),
    )
    .unwrap();
    let mut env: Vec<(&str, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy.url()))
    .collect();
    env.push(("NO_PROXY", String::new()));
    env.push(("no_proxy", String::new()));
    env.push(("DOCKER_CONFIG", tmp.path().display().to_string()));
    let port = warden_tests::cluster::free_port();
    let (_cp, url) = warden_tests::cluster::control_plane_with_env(
        env!("CARGO_BIN_EXE_warden-cli").as_ref(),
        port,
        &tmp.path().join("cp.sqlite3").display().to_string(),
        &tmp.path().join("cp-data"),
        &[
            "--allow-registry",
            &open.host,
            "--allow-registry",
            &private.host,
        ],
        &env,
        &warden_tests::cluster::log_dir(tmp.path()),
    );
    let submit = |tag: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden-cli"))
            .args(["submit", tag, "--input", "{}"])
            .env("WARDEN_CONTROL_PLANE", &url)
            .output()
            .unwrap()
    };
    ok(&submit(&open_tag));
    refused(&submit(&private_tag), "requires credentials");
    assert_eq!(proxy.connections(), 0, "the proxy was used");
}
