//! Agents in Python and JavaScript: the SDKs' ports of `kv-counter` and
//! `research-agent` (`examples/python/`, `examples/js/`), built with `warden
//! build` (componentize-py, componentize-js), run through a real node with
//! the fake OpenAI-compatible server: the same inputs give the Rust
//! examples' outputs.

use crate::leases::TestCluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use warden_tests::cluster::{publish_with, submit, wait_ended};
use warden_tests::examples;
use warden_tests::fake_openai::FakeOpenAi;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `examples/LANG/NAME` built by `warden build` into
/// `target/LANG-agents/NAME.wasm`, again only when a source (the agent, the
/// SDK, the WIT) is newer.
fn built(lang: &str, name: &str) -> PathBuf {
    let root = root();
    let out = root.join(format!("target/{lang}-agents/{name}.wasm"));
    let agent = root.join("examples").join(lang).join(name);
    let sdk = match lang {
        "python" => root.join("guest-sdk/python/warden"),
        _ => root.join("guest-sdk/js"),
    };
    let sources = [agent.clone(), sdk, root.join("wit")];
    let built_at = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    let stale = built_at.is_none_or(|at| sources.iter().any(|s| newest(s) > at));
    if stale {
        let data = root.join(format!("target/{lang}-agents/data"));
        let done = crate::warden(
            &data,
            &[
                "build",
                agent.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(
            done.status.success(),
            "warden build {name} ({lang}) failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    out
}

/// The newest modification time under `path`.
fn newest(path: &Path) -> std::time::SystemTime {
    let own = std::fs::metadata(path).and_then(|m| m.modified()).unwrap();
    match std::fs::read_dir(path) {
        Ok(entries) => entries
            .map(|e| newest(&e.unwrap().path()))
            .fold(own, std::cmp::max),
        Err(_) => own,
    }
}

/// The run's output, or its failure kind and message; granted what its
/// manifest declares.
async fn outcome(c: &TestCluster, agent: &str, input: &str) -> Value {
    let id = submit(c.channel().await, agent, input, |r| {
        r.grant = Some(warden_proto::v1::Grant {
            as_declared: true,
            kv: true,
            ..Default::default()
        })
    })
    .await;
    let run = wait_ended(c.channel().await, &id, Duration::from_secs(120)).await;
    match run.output.is_empty() {
        false => serde_json::from_str(&run.output).unwrap(),
        true => serde_json::json!({ "error_kind": run.error_kind, "message": run.error_message }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_ports_of_kv_counter_and_research_agent_give_the_rust_outputs() {
    let (kv_py, research_py) = (
        built("python", "kv-counter"),
        built("python", "research-agent"),
    );
    let (kv_js, research_js) = (built("js", "kv-counter"), built("js", "research-agent"));
    let llm = FakeOpenAi::start();
    let web = llm.server().url();
    let (c, _cp) = TestCluster::start(&[]);
    let config = c.tmp.path().join("node.toml");
    std::fs::write(&config, llm.node_config()).unwrap();
    let _node = c.node(
        "node-a",
        &["--node-config", config.to_str().unwrap(), "--slots", "2"],
    );
    let read = |dir: &str| std::fs::read_to_string(root().join(dir).join("warden.toml")).unwrap();
    let kv_manifest = read("examples/kv-counter");
    // The fake server is on loopback, which a wildcard origin does not
    // cover: the manifest names it too (as scripts/demo.sh does).
    let research_manifest = read("examples/research-agent").replace(
        r#"http = ["*://*:*"]"#,
        &format!(r#"http = ["*://*:*", "{web}"]"#),
    );
    assert!(research_manifest.contains(&web));
    for (path, reference, manifest) in [
        (examples::KV_COUNTER, "kv-rs@1", &kv_manifest),
        (kv_py.to_str().unwrap(), "kv-py@1", &kv_manifest),
        (kv_js.to_str().unwrap(), "kv-js@1", &kv_manifest),
        (
            examples::RESEARCH_AGENT,
            "research-rs@1",
            &research_manifest,
        ),
        (
            research_py.to_str().unwrap(),
            "research-py@1",
            &research_manifest,
        ),
        (
            research_js.to_str().unwrap(),
            "research-js@1",
            &research_manifest,
        ),
    ] {
        publish_with(c.channel().await, path, reference, manifest).await;
    }

    // Counts in each one's own namespace: 1, then 2; the same documents.
    for input in [
        r#"{"key":"visits"}"#,
        r#"{"key":"visits"}"#,
        "null",
        r#"{"key":"other"}"#,
    ] {
        let rust = outcome(&c, "kv-rs@1", input).await;
        let python = outcome(&c, "kv-py@1", input).await;
        assert_eq!(python, rust, "kv-counter in Python, input {input}");
        let js = outcome(&c, "kv-js@1", input).await;
        assert_eq!(js, rust, "kv-counter in JS, input {input}");
    }

    // The tool loop: fetch, save a note, answer; and out of tokens.
    let question =
        format!(r#"{{"question":"What is Wasm? Start at {web}/docs/wasm","model":"m"}}"#);
    let rust = outcome(&c, "research-rs@1", &question).await;
    assert_eq!(rust["stopped"], "answered", "{rust}");
    let python = outcome(&c, "research-py@1", &question).await;
    assert_eq!(python, rust, "research-agent in Python");
    let js = outcome(&c, "research-js@1", &question).await;
    assert_eq!(js, rust, "research-agent in JS");
    let tight = format!(
        r#"{{"question":"What is Wasm? Start at {web}/docs/wasm","model":"m","max_steps":1}}"#
    );
    let rust = outcome(&c, "research-rs@1", &tight).await;
    assert_eq!(rust["stopped"], "max_steps", "{rust}");
    for port in ["research-py@1", "research-js@1"] {
        assert_eq!(
            outcome(&c, port, &tight).await,
            rust,
            "{port} with one step"
        );
    }
}
