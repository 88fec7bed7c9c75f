//! Components in a real OCI registry on loopback (Debian's docker-registry),
//! and capability manifests: publish → pull round trips, an artifact pushed
//! by an independent client (PyPI `oras`), registry errors, OCI submits
//! through the control plane, and grants refused beyond the manifest.

use crate::leases::TestCluster;
use sha2::{Digest, Sha256};
use std::process::Output;

use warden_tests::oci_registry::OciRegistry;
use warden_tests::{components, examples};

pub(crate) fn warden(args: &[&str]) -> Output {
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

pub(crate) fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Exit 2 and a stderr naming `expected`.
pub(crate) fn refused(out: &Output, expected: &str) {
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

pub(crate) fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
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
pub(crate) fn greets(c: &TestCluster, reference: &str, name: &str) {
    let input = serde_json::json!({ "name": name }).to_string();
    let out = c.cli(&["submit", reference, "--input", &input, "--wait", "--json"]);
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        result["output"]["greeting"],
        format!("hello, {name}"),
        "{result}"
    );
}
