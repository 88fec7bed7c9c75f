//! Components in a real OCI registry on loopback (Debian's docker-registry),
//! and capability manifests: publish → pull round trips, an artifact pushed
//! by an independent client (PyPI `oras`), registry errors, OCI submits
//! through the control plane, and grants refused beyond the manifest.

use crate::leases::TestCluster;
use sha2::{Digest, Sha256};
use std::process::Output;
use warden_tests::http_server::{Response, TestServer};
use warden_tests::oci_registry::{OciRegistry, blob_response, manifest_response, wasm_artifact};
use warden_tests::{components, examples};

fn warden(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_warden-cli"))
        .args(args)
        .env_remove("WARDEN_CONTROL_PLANE")
        .env(
            "WARDEN_DATA_DIR",
            std::env::temp_dir().join("warden-oci-tests"),
        )
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit 2 and a stderr naming `expected`.
fn refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn sha256_of(path: &str) -> String {
    format!(
        "sha256:{}",
        hex(&Sha256::digest(std::fs::read(path).unwrap()))
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn manifest_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn publish_then_pull_round_trips_with_digest_verification() {
    let registry = OciRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_file(tmp.path(), "[budget]\ntimeout = \"5s\"\n");
    let reference = registry.reference("agents/hello:1.0");
    let out = ok(&warden(&[
        "publish",
        examples::HELLO,
        &reference,
        "--manifest",
        &manifest,
    ]));
    let digest = sha256_of(examples::HELLO);
    assert!(out.contains(&digest), "{out}");

    let out = ok(&warden(&[
        "run",
        &reference,
        "--input",
        r#"{"name":"oci"}"#,
        "--json",
    ]));
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["output"]["greeting"], "hello, oci", "{result}");

    // Pinned by the manifest digest the push printed: the same component.
    let manifest_digest = out_manifest_digest(&ok(&warden(&[
        "publish",
        examples::HELLO,
        &reference,
        "--manifest",
        &manifest,
    ])));
    let pinned = format!("oci://{}/agents/hello@{manifest_digest}", registry.host);
    let shown = ok(&warden(&["inspect", &pinned, "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["digest"], digest.as_str());
    assert_eq!(shown["world"], "warden:agent/agent");
    assert!(
        shown["capabilities"].as_str().unwrap().contains("timeout"),
        "{shown}"
    );
    let exports = shown["exports"].to_string();
    assert!(exports.contains("\"run\""), "{exports}");
}

fn out_manifest_digest(publish_output: &str) -> String {
    publish_output
        .rsplit("manifest ")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn an_artifact_pushed_by_oras_is_pulled_and_run() {
    let registry = OciRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(examples::HELLO, tmp.path().join("hello.wasm")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"architecture":"wasm","os":"wasip2"}"#,
    )
    .unwrap();
    let script = format!(
        r#"
import oras.client
c = oras.client.OrasClient(hostname="{host}", insecure=True)
c.push(target="{host}/oras/hello:v1", files=["hello.wasm:application/wasm"],
       manifest_config="config.json:application/vnd.wasm.config.v0+json",
       disable_path_validation=True, quiet=True)
c.push(target="{host}/oras/notes:v1", files=["config.json:text/plain"],
       disable_path_validation=True, quiet=True)
"#,
        host = registry.host
    );
    let pushed = std::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(tmp.path())
        .output()
        .expect("python3 runs");
    assert!(
        pushed.status.success(),
        "oras push failed (`pip install oras`; .ci/run does this): {}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let out = ok(&warden(&[
        "run",
        &registry.reference("oras/hello:v1"),
        "--input",
        r#"{"name":"oras"}"#,
        "--json",
    ]));
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
    assert!(result["output"].to_string().contains("oras"), "{result}");

    // Something that is not a wasm component artifact is named as such.
    let out = warden(&["run", &registry.reference("oras/notes:v1")]);
    refused(&out, "no application/wasm layer");
}

#[test]
fn wrong_digest_missing_tag_and_unreachable_registry_are_clear_errors() {
    let registry = OciRegistry::start();
    ok(&warden(&[
        "publish",
        examples::HELLO,
        &registry.reference("agents/hello:1.0"),
    ]));
    let wrong = format!(
        "oci://{}/agents/hello@sha256:{}",
        registry.host,
        "0".repeat(64)
    );
    refused(&warden(&["run", &wrong]), "no such tag or digest");
    refused(
        &warden(&["run", &registry.reference("agents/hello:nope")]),
        "no such tag or digest",
    );
    let port = warden_tests::cluster::free_port();
    refused(
        &warden(&["run", &format!("oci://127.0.0.1:{port}/agents/hello:1.0")]),
        "cannot reach the registry",
    );
    refused(
        &warden(&["run", "oci://just-a-host"]),
        "not an OCI reference",
    );
    refused(
        &warden(&[
            "publish",
            components::WRONG_WORLD,
            &registry.reference("agents/bad:1"),
        ]),
        "not a warden:agent/agent component",
    );
}

#[test]
fn submit_of_an_oci_reference_pins_the_digest_the_tag_had() {
    let registry = OciRegistry::start();
    // A loopback registry: the control plane may pull from it only once
    // the operator allows it.
    let (c, _cp) = TestCluster::start(&["--allow-registry", &registry.host]);
    let _node = c.node("n1", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_file(tmp.path(), "[grant]\nkv = true\n");
    let tag = registry.reference("agents/counter:latest");
    ok(&warden(&[
        "publish",
        examples::KV_COUNTER,
        &tag,
        "--manifest",
        &manifest,
    ]));

    let out = c.cli(&[
        "submit",
        &tag,
        "--input",
        r#"{"key":"k"}"#,
        "--wait",
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        result["output"]["count"], 1,
        "kv declared and granted: {result}"
    );
    // `warden run` of the same agent on the node's data dir sees the same
    // key-value namespace (oci://HOST/REPO), so the count goes on.
    let node_data = c.tmp.path().join("n1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden-cli"))
        .args(["run", &tag, "--input", r#"{"key":"k"}"#, "--json"])
        .args(["--data-dir", node_data.to_str().unwrap()])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["output"]["count"], 2, "another namespace: {result}");

    // Move the tag to another component: new submits get the new digest.
    ok(&warden(&["publish", examples::HELLO, &tag]));
    let id = ok(&c.cli(&["submit", &tag, "--input", r#"{"name":"x"}"#]));
    let out = c.cli(&["runs", "watch", id.trim(), "--json"]);
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["output"]["greeting"], "hello, x", "{result}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&c.cli(&["runs", "list", "--json"]))).unwrap();
    let digests: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        [sha256_of(examples::HELLO), sha256_of(examples::KV_COUNTER)],
        "newest first; each run keeps the digest its tag had at submit"
    );
    let agent = listed[0]["agent"].as_str().unwrap();
    assert!(
        agent.starts_with(&format!("oci://{}/agents/counter@sha256:", registry.host)),
        "{agent}"
    );
}

#[test]
fn a_grant_beyond_the_manifest_is_refused_before_the_run_exists() {
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("n1", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let manifest = manifest_file(
        tmp.path(),
        "[grant]\nhttp = [\"https://api.example.com\"]\nmodels = [\"small\"]\nconfig = [\"greeting\"]\n",
    );
    ok(&c.cli(&[
        "publish",
        components::HTTP_PROBE,
        "probe@1",
        "--manifest",
        &manifest,
    ]));
    for (flags, expected) in [
        (
            vec!["--allow-http", "https://other.example.com"],
            "does not declare http https://other.example.com",
        ),
        (vec!["--allow-model", "big"], "does not declare model big"),
        (vec!["--scratch-dir"], "does not declare scratch_dir"),
        (
            vec!["--config", "secret=1"],
            "does not declare config key secret",
        ),
    ] {
        let mut args = vec!["submit", "probe@1"];
        args.extend(flags);
        refused(&c.cli(&args), expected);
    }
    // A bad manifest is refused on publish, naming the problem.
    let bad = manifest_file(tmp.path(), "[grant]\nhttp = \"one\"\n");
    refused(
        &c.cli(&[
            "publish",
            components::HTTP_PROBE,
            "probe@2",
            "--manifest",
            &bad,
        ]),
        "invalid capability manifest",
    );

    // No manifest: the agent may use nothing; asking is refused, and a
    // run that tries kv anyway is denied it.
    ok(&c.cli(&["publish", examples::KV_COUNTER, "counter@1"]));
    refused(
        &c.cli(&["submit", "counter@1", "--allow-model", "small"]),
        "without a capability manifest",
    );
    let out = c.cli(&[
        "submit",
        "counter@1",
        "--input",
        r#"{"key":"k"}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        result["error"]
            .to_string()
            .to_lowercase()
            .contains("not granted"),
        "{result}"
    );

    let listed: serde_json::Value =
        serde_json::from_str(&ok(&c.cli(&["runs", "list", "--json"]))).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the run that was allowed: {listed}"
    );
}

#[test]
fn credentials_come_from_flags_or_the_docker_config() {
    let registry = OciRegistry::start_with_auth("alice", "secret");
    let tag = registry.reference("private/hello:1");
    refused(
        &warden(&["publish", examples::HELLO, &tag]),
        "requires credentials",
    );
    let publish_as = |password: &str| {
        warden(&[
            "publish",
            examples::HELLO,
            &tag,
            "--registry-username",
            "alice",
            "--registry-password",
            password,
        ])
    };
    refused(&publish_as("wrong"), "refused the credentials");
    ok(&publish_as("secret"));

    // What `docker login` writes: base64 of user:password per registry.
    let docker = tempfile::tempdir().unwrap();
    let auth = base64_of("alice:secret");
    std::fs::write(
        docker.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden-cli"))
        .args(["run", &tag, "--input", r#"{"name":"docker"}"#, "--json"])
        .env("DOCKER_CONFIG", docker.path())
        .env(
            "WARDEN_DATA_DIR",
            std::env::temp_dir().join("warden-oci-tests"),
        )
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["status"], "ok", "{result}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

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

/// `--max-component` bounds what a publish brings and what an OCI import
/// would pull (refused from the size its manifest declares, before the
/// download), naming the flag.
#[test]
fn the_largest_component_is_the_operator_s_choice() {
    let registry = OciRegistry::start();
    let tag = registry.reference("agents/hello:1");
    ok(&warden(&["publish", examples::HELLO, &tag]));
    let (c, _cp) = TestCluster::start(&[
        "--allow-registry",
        &registry.host,
        "--max-component",
        "4KiB",
    ]);
    let out = c.cli(&["publish", examples::HELLO, "hello@1"]);
    assert!(!out.status.success());
    let says = String::from_utf8_lossy(&out.stderr);
    assert!(says.contains("--max-component"), "{says}");
    let out = c.cli(&["submit", &tag, "--input", "{}"]);
    assert!(!out.status.success());
    let says = String::from_utf8_lossy(&out.stderr);
    assert!(says.contains("--max-component"), "{says}");
    // Nonsense sizes are refused at start.
    refused(
        &warden(&["control-plane", "--insecure", "--max-component", "0"]),
        "component size",
    );
}

/// Submits `reference` (the hello example) for `name` and waits: it greets.
fn greets(c: &TestCluster, reference: &str, name: &str) {
    let input = serde_json::json!({ "name": name }).to_string();
    let out = c.cli(&["submit", reference, "--input", &input, "--wait", "--json"]);
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        result["output"]["greeting"],
        format!("hello, {name}"),
        "{result}"
    );
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
