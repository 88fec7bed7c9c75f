//! From an empty directory, as a new user: `warden new`, `warden build`,
//! `warden run` (with the scripted LLM and without an LLM), and `warden
//! submit DIR` to a dev cluster, for each language; and the errors a user
//! meets on the way (not an agent directory, a toolchain missing, a taken
//! directory, a bad script).

use crate::{json, warden_in};
use std::process::{Command, Output};
use warden_tests::cluster::{self, dev};

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// new, build, run with the template's LLM script and without an LLM,
/// then submit the directory to a dev cluster: the template's greeting.
fn new_build_run(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (home, data) = (tmp.path(), tmp.path().join("data"));
    let name = format!("greeter-{lang}");
    let created = ok(&warden_in(home, &data, &["new", "--lang", lang, &name]));
    assert!(created.contains(&format!("created {name}")), "{created}");
    let dir = home.join(&name);
    for file in ["warden.toml", "input.json", "llm-script.json", "README.md"] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }

    let built = ok(&warden_in(&dir, &data, &["build"]));
    let wasm = dir.join(format!("target/{name}.wasm"));
    assert_eq!(built.trim(), wasm.display().to_string());
    assert!(std::fs::metadata(&wasm).unwrap().len() > 1000);

    // With the scripted LLM: its reply is the greeting.
    let scripted = json(&warden_in(
        home,
        &data,
        &[
            "run",
            &name,
            "--llm-script",
            &format!("{name}/llm-script.json"),
            "--json",
        ],
    ));
    assert_eq!(scripted["status"], "ok", "{scripted}");
    assert_eq!(
        scripted["output"],
        serde_json::json!({ "greeting": "Hello, Ada! Lovely to see you.", "times": 1 })
    );
    assert_eq!(scripted["usage"]["llm_calls"], 1);
    // With no LLM: the agent says hello itself, and says why in its log;
    // the count lives on in its namespace. Another input by flag.
    let plain = json(&warden_in(
        &dir,
        &data,
        &["run", ".", "--input", r#"{"name":"Ada"}"#, "--json"],
    ));
    assert_eq!(
        plain["output"],
        serde_json::json!({ "greeting": "hello, Ada", "times": 2 }),
        "{plain}"
    );
    assert!(
        plain["logs"]
            .to_string()
            .contains("no greeting from the LLM"),
        "{plain}"
    );

    // `warden submit DIR` to a dev cluster with the mock LLM: built
    // already, published as a dev version, run on the node.
    let (_dev, url) = dev(
        env!("CARGO_BIN_EXE_warden-cli").as_ref(),
        &home.join("dev"),
        &[
            "--slots",
            "1",
            "--mock-llm",
            "--watch",
            dir.to_str().unwrap(),
        ],
        &cluster::log_dir(home),
    );
    let submit = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warden-cli"))
            .args(args)
            .current_dir(home)
            .env("WARDEN_DATA_DIR", &data)
            .env("WARDEN_CONTROL_PLANE", &url)
            .output()
            .unwrap()
    };
    let local = format!("./{name}");
    let run = submit(&["submit", &local, "--wait", "--json"]);
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    let run = json(&run);
    assert_eq!(run["status"], "ok", "{run}\n{said}");
    assert!(said.contains(&format!("published {name}@dev-")), "{said}");
    assert_eq!(run["output"]["times"], 1, "the cluster's own namespace");
    assert!(
        run["output"]["greeting"]
            .as_str()
            .unwrap()
            .starts_with("Summary: Write a one-line greeting for Ada"),
        "the mock LLM's answer: {run}"
    );
    // The same build again: the same version, unchanged.
    let again = submit(&["submit", &local]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(", unchanged"), "{said}");

    // `dev --watch DIR`: an edit is rebuilt and published as the newest
    // version, which a submit of the bare name runs. (Rust only: cargo
    // rebuilds in seconds; the watcher is the same for every language.)
    if lang == "rust" {
        let source = dir.join("src/lib.rs");
        let code = std::fs::read_to_string(&source).unwrap();
        let edited = code.replace("Write a one-line greeting", "Write a warm greeting");
        assert_ne!(code, edited);
        std::fs::write(&source, edited).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            // `NAME` alone is the published agent, though `./NAME` is a
            // directory here: nothing is built or published by the submit.
            let out = submit(&["submit", &name, "--input", "{}", "--wait", "--json"]);
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!said.contains("published"), "{said}");
            let run = json(&out);
            let greeting = run["output"]["greeting"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if greeting.contains("Write a warm greeting") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher did not publish the edit: {run}"
            );
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

#[test]
fn a_python_agent_from_an_empty_directory() {
    new_build_run("python");
}

#[test]
fn a_js_agent_from_an_empty_directory() {
    new_build_run("js");
}

#[test]
fn a_rust_agent_from_an_empty_directory() {
    new_build_run("rust");
}

#[test]
fn what_a_new_user_gets_wrong_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, data) = (tmp.path(), tmp.path().join("data"));

    // Not an agent directory.
    std::fs::create_dir(home.join("empty")).unwrap();
    let said = failed(&warden_in(home, &data, &["build", "empty"]), 2);
    assert!(said.contains("is not an agent directory"), "{said}");
    assert!(said.contains("warden new"), "{said}");
    let said = failed(&warden_in(home, &data, &["run", "empty"]), 2);
    assert!(said.contains("is not an agent directory"), "{said}");

    // Two agents in one directory.
    std::fs::write(home.join("empty/app.py"), "").unwrap();
    std::fs::write(home.join("empty/app.js"), "").unwrap();
    let said = failed(&warden_in(home, &data, &["build", "empty"]), 2);
    assert!(said.contains("app.py and app.js"), "{said}");

    // A taken directory; a name the registry would refuse; a crate name.
    let said = failed(
        &warden_in(home, &data, &["new", "--lang", "python", "empty"]),
        2,
    );
    assert!(said.contains("already exists and is not empty"), "{said}");
    let said = failed(
        &warden_in(home, &data, &["new", "--lang", "js", "my agent"]),
        2,
    );
    assert!(said.contains("not a valid one"), "{said}");
    let said = failed(
        &warden_in(home, &data, &["new", "--lang", "rust", "v1.2"]),
        2,
    );
    assert!(said.contains("cannot name a Rust agent"), "{said}");

    // The toolchain missing: the error says how to install it.
    let without_path = |dir: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden-cli"))
            .args(["build", dir])
            .current_dir(home)
            .env("WARDEN_DATA_DIR", &data)
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        failed(&out, 2)
    };
    ok(&warden_in(home, &data, &["new", "--lang", "python", "py"]));
    let said = without_path("py");
    assert!(
        said.contains("componentize-py is not installed")
            && said.contains("pip install componentize-py=="),
        "{said}"
    );
    ok(&warden_in(home, &data, &["new", "--lang", "js", "js"]));
    let said = without_path("js");
    assert!(said.contains("Node.js is not installed"), "{said}");

    // A broken agent: the builder's own message comes through.
    std::fs::write(home.join("py/app.py"), "def run(:\n").unwrap();
    let said = failed(&warden_in(home, &data, &["build", "py"]), 2);
    assert!(
        said.contains("componentize-py could not build py"),
        "{said}"
    );
    assert!(
        said.contains("SyntaxError") || said.contains("syntax"),
        "{said}"
    );

    // A script that is not one.
    std::fs::write(home.join("bad.json"), r#"[{"text":"hi"}]"#).unwrap();
    let said = failed(
        &warden_in(home, &data, &["run", "py", "--llm-script", "bad.json"]),
        2,
    );
    assert!(
        said.contains("bad.json is not an LLM script") && said.contains("`text`"),
        "{said}"
    );
}

/// `warden run --llm-script`: tool calls, a scripted failure and a script
/// that runs out, each as the agent sees it; `warden run --mock-llm`.
#[test]
fn an_llm_script_answers_in_order_and_says_when_it_runs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, data) = (tmp.path(), tmp.path().join("data"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let research = root.join("examples/research-agent/warden.toml");
    let script = |name: &str, text: &str| {
        let path = home.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let run = |script: &str, input: &str| {
        warden_in(
            home,
            &data,
            &[
                "run",
                warden_tests::examples::RESEARCH_AGENT,
                "--manifest",
                research.to_str().unwrap(),
                "--llm-script",
                script,
                "--input",
                input,
                "--json",
            ],
        )
    };
    let question = r#"{"question":"What is Wasm?","model":"m"}"#;

    // A tool call, then the answer: the agent's loop runs on the script.
    let tools = script(
        "tools.json",
        r#"[{"tool_calls": [{"name": "save_note", "arguments": {"key": "k", "text": "scripted"}}]},
            {"content": "Wasm is a portable binary format.", "completion_tokens": 7}]"#,
    );
    let out = run(&tools, question);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let done = json(&out);
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(
        done["output"]["answer"],
        "Wasm is a portable binary format."
    );
    assert_eq!(
        done["output"]["tools_used"],
        serde_json::json!(["save_note"])
    );
    assert_eq!(done["output"]["stopped"], "answered");
    assert_eq!(done["usage"]["llm_calls"], 2);
    assert!(!said.contains("note:"), "every reply used: {said}");

    // A scripted 429 is the provider rate limiting, as the agent sees it.
    let limited = script("limited.json", r#"[{"status": 429}]"#);
    let done = json(&run(&limited, question));
    assert_eq!(done["error"]["kind"], "guest_error", "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limiting"),
        "{done}"
    );

    // A call past the script's end fails, and the run says so.
    let short = script("short.json", "[]");
    let out = run(&short, question);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let done = json(&out);
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has 0 replies and this is chat call 1"),
        "{done}"
    );
    assert!(
        said.contains("the agent made 1 chat call and the LLM script has 0 replies"),
        "{said}"
    );

    // --mock-llm: the canned stand-in, a default model included.
    let summarize = root.join("examples/llm-summarize/warden.toml");
    let done = json(&warden_in(
        home,
        &data,
        &[
            "run",
            warden_tests::examples::LLM_SUMMARIZE,
            "--manifest",
            summarize.to_str().unwrap(),
            "--mock-llm",
            "--input",
            r#"{"text":"Warden runs agents under hard budgets.","max_words":5}"#,
            "--json",
        ],
    ));
    assert_eq!(done["status"], "ok", "{done}");
    assert!(
        done["output"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Summary: "),
        "{done}"
    );
}
