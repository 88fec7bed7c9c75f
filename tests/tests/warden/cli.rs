//! CLI commands end to end against `warden dev`: publish, inspect, submit
//! (with `--selector`), runs list/get/cancel, nodes list, and a second node
//! started with `--prewarm`.

use crate::json;
use crate::leases::TestCluster;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use warden_tests::cluster::{self, dev, free_port};
use warden_tests::{components, examples};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_warden-cli")
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `warden dev` with `extra` under `tmp`, and the CLI pointed at it.
fn dev_cli(
    tmp: &std::path::Path,
    extra: &[&str],
) -> (cluster::Proc, String, impl Fn(&[&str]) -> Output) {
    let (proc, url) = dev(
        bin().as_ref(),
        &tmp.join("dev"),
        extra,
        &cluster::log_dir(tmp),
    );
    let cli_url = url.clone();
    let warden = move |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .env("WARDEN_CONTROL_PLANE", &cli_url)
            .env_remove("WARDEN_CONFIG")
            .env_remove("WARDEN_LLM_BASE_URL")
            .output()
            .unwrap()
    };
    (proc, url, warden)
}

#[test]
fn the_cli_drives_warden_dev() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dev, url, warden) = dev_cli(tmp.path(), &["--slots", "2"]);
    let logs = cluster::log_dir(tmp.path());

    let published = ok(&warden(&["publish", examples::HELLO, "hello@1"]));
    assert!(
        published.starts_with("published hello@1 sha256:"),
        "{published}"
    );
    ok(&warden(&["publish", components::SPIN, "spin@1"]));

    // inspect reads the registry's copy.
    let doc = json(&warden(&["inspect", "hello@1", "--json"]));
    assert_eq!(doc["world"], "warden:agent/agent", "{doc}");
    assert!(published.contains(doc["digest"].as_str().unwrap()), "{doc}");
    assert!(doc["exports"].to_string().contains("run"), "{doc}");

    let doc = json(&warden(&[
        "submit",
        "hello@1",
        "--input",
        r#"{"name":"dev"}"#,
        "--wait",
        "--json",
    ]));
    assert_eq!(doc["output"]["greeting"], "hello, dev", "{doc}");

    // One node, ready, with the slots it was given.
    let nodes = json(&warden(&["nodes", "list", "--json"]));
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["state"], "ready");
    assert_eq!(nodes[0]["slots"], 2);

    // --selector: no node has region=eu, so the run waits in the queue,
    // and a cancel ends it at once.
    let queued = ok(&warden(&["submit", "hello@1", "--selector", "region=eu"]));
    let queued = queued.trim();
    // A run queued after it ends: the node has looked at the queue since.
    ok(&warden(&["submit", "hello@1", "--wait"]));
    let listed = json(&warden(&["runs", "list", "--state", "queued", "--json"]));
    assert_eq!(listed[0]["run_id"], queued, "{listed}");
    assert_eq!(
        listed[0]["waiting"], "no ready node has the labels region=eu",
        "{listed}"
    );
    // The table says it too, in its last column.
    let table = ok(&warden(&["runs", "list", "--state", "queued"]));
    let mut lines = table.lines();
    assert!(
        lines.next().unwrap().ends_with("AGENT    WAITING ON"),
        "{table}"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with(queued), "{table}");
    assert!(
        row.ends_with("hello@1  no ready node has the labels region=eu"),
        "{table}"
    );
    let said = ok(&warden(&["runs", "cancel", queued]));
    assert_eq!(said.trim(), format!("{queued} cancelled"));

    // Cancel of a running run goes through its node.
    let spinning = ok(&warden(&["submit", "spin@1", "--timeout", "10m"]));
    let spinning = spinning.trim();
    let started = Instant::now();
    while json(&warden(&["runs", "get", spinning, "--json"]))["state"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(20), "never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = ok(&warden(&["runs", "cancel", spinning]));
    assert!(said.contains("cancel requested"), "{said}");
    let out = warden(&["runs", "watch", spinning, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["error"]["kind"], "cancelled");

    // A second node with --prewarm fetches hello@1 before it runs anything.
    let _node = cluster::node(
        bin().as_ref(),
        &url,
        "warm",
        tmp.path(),
        &["--prewarm", "hello@1"],
        &logs,
    );
    let log = logs.join("warm.log");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("pre-warmed") {
            assert!(text.contains("hello@1"), "{text}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no pre-warm: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        tmp.path()
            .join("warm/blobs")
            .read_dir()
            .unwrap()
            .next()
            .is_some()
    );
}

#[test]
fn the_default_data_dir_is_under_xdg_data_home_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "run",
            components::KV_PROBE,
            "--input",
            r#"{"op":"set","key":"k","value":"v"}"#,
        ])
        .env("XDG_DATA_HOME", tmp.path())
        .env_remove("WARDEN_DATA_DIR")
        .env_remove("WARDEN_CONFIG")
        .output()
        .unwrap();
    ok(&out);
    assert!(
        tmp.path().join("warden/kv.sqlite3").is_file(),
        "no kv file under $XDG_DATA_HOME/warden"
    );
}

/// `warden dev` serves plaintext without authentication, so it refuses to
/// listen anywhere but loopback: it exits at once with a message, before
/// it binds. Without the check in `cli/src/cluster.rs` it would serve on
/// every interface (here: still running after 20 s, and the test fails).
#[test]
fn warden_dev_refuses_to_listen_beyond_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, listen) in [
        ("--listen", "0.0.0.0:0"),
        ("--listen", "[::]:0"),
        ("--http-listen", "0.0.0.0:0"),
    ] {
        let mut child = Command::new(bin())
            .args(["dev", flag, listen])
            .env("WARDEN_DATA_DIR", tmp.path())
            .env_remove("WARDEN_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("`warden dev --listen {listen}` kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{listen}: {stderr}");
        assert!(
            stderr.contains("listens on loopback only"),
            "{listen}: {stderr}"
        );
    }
}

/// `warden dev --mock-llm` answers LLM calls itself, with no provider and
/// no test binary: the README's first LLM run (issue 24, item 8). Its
/// sample page is what the HTTP examples fetch.
#[test]
fn warden_dev_mock_llm_answers_llm_calls_without_a_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dev, _, warden) = dev_cli(tmp.path(), &["--mock-llm"]);
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/llm-summarize/warden.toml"
    );
    ok(&warden(&[
        "publish",
        examples::LLM_SUMMARIZE,
        "llm-summarize@0.1.0",
        "--manifest",
        manifest,
    ]));
    let doc = json(&warden(&[
        "submit",
        "llm-summarize@0.1.0",
        "--allow-model",
        "any-model",
        "--wait",
        "--json",
        "--input",
        r#"{"model":"any-model","text":"Warden runs agents under hard budgets.","max_words":10}"#,
    ]));
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(
        doc["output"]["summary"], "Summary: Warden runs agents under hard budgets.",
        "{doc}"
    );
    assert!(doc["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(doc["usage"]["llm_calls"], 1, "{doc}");
}

#[test]
fn cli_submits_a_json_lines_file_as_one_batch() {
    let (c, _cp) = TestCluster::start(&[]);
    let _node = c.node("n1", &[]);
    let warden = |args: &[&str]| c.cli(args);
    assert!(
        warden(&["publish", examples::HELLO, "hello@1"])
            .status
            .success()
    );
    let file = c.tmp.path().join("inputs.jsonl");
    std::fs::write(&file, "{\"name\": \"a\"}\n\n{\"name\": \"b\"}\n\"c\"\n").unwrap();
    let out = warden(&["submit", "hello@1", "--inputs", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (id, input) in ids
        .iter()
        .zip(["{\"name\": \"a\"}", "{\"name\": \"b\"}", "\"c\""])
    {
        let out = warden(&["runs", "watch", id, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = warden(&["runs", "get", id, "--json"]);
        let run: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        let input: serde_json::Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            run["input"], input,
            "runs keep their line's input, in order"
        );
        assert_eq!(run["state"], "succeeded");
    }

    // A bad line is named, and nothing from the file is queued.
    std::fs::write(&file, "1\n{oops\n").unwrap();
    let out = warden(&["submit", "hello@1", "--inputs", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2: the input is not valid JSON"),
        "{stderr}"
    );
    let listed = warden(&["runs", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}

#[test]
fn cli_errors_name_the_problem() {
    let (c, _cp) = TestCluster::start(&[]);
    let warden = |args: &[&str]| c.cli(args);
    let out = warden(&["publish", examples::HELLO, "hello@1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let manifest = c.tmp.path().join("kv.toml");
    std::fs::write(&manifest, "[grant]\nkv = true\n").unwrap();
    let manifest = manifest.display().to_string();
    for (args, expected) in [
        (
            vec!["submit", "nobody@1"],
            "tenant default has no agent named nobody",
        ),
        (
            vec!["submit", "hello@9"],
            "agent hello of tenant default has no version 9",
        ),
        // The same bytes with another manifest: the manifest is named, not
        // the bytes.
        (
            vec![
                "publish",
                examples::HELLO,
                "hello@1",
                "--manifest",
                &manifest,
            ],
            "with these bytes but another manifest",
        ),
        (vec!["submit", "Bad Name"], "is not NAME or NAME@VERSION"),
        (
            vec!["submit", "nosuch"],
            "tenant default has no agent named nosuch",
        ),
        (
            vec!["submit", "hello@1", "--input", "{oops"],
            "not valid JSON",
        ),
        (
            vec!["publish", components::WRONG_WORLD, "other@1"],
            "not a warden:agent/agent component",
        ),
        (
            vec!["publish", components::SPIN, "hello@1"],
            "versions are immutable",
        ),
        (vec!["runs", "get", "nonexistent"], "no run nonexistent"),
        (
            vec!["runs", "list", "--control-plane", &unreachable],
            "cannot reach the control plane",
        ),
    ] {
        let out = warden(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
