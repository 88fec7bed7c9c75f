//! The web console in a real headless Chromium (Debian's, driven by
//! Playwright for Python: `tests/console/console_test.py`), against a
//! control plane process with TLS and tokens and a real node: a wrong
//! token refused, sign-in, a run submitted from the console's form seen
//! to finish, its page with output and logs, agents, nodes, a usage chart,
//! both themes. Screenshots of each page land in
//! `target/console-screenshots/`.

use crate::http_api::api_cluster;
use std::path::PathBuf;
use warden_tests::cluster::publish_with;
use warden_tests::examples;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_submits_a_run_and_shows_it_its_logs_nodes_and_usage() {
    let (c, _procs, _http, base) = api_cluster().await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // hello@2 with the example's manifest (its [tool] section shows on
    // the agent's page); "hello" alone runs it, the newest.
    let manifest = std::fs::read_to_string(root.join("../examples/hello/warden.toml")).unwrap();
    publish_with(c.channel().await, examples::HELLO, "hello@2", &manifest).await;
    let shots = root.join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(root.join("console/console_test.py"))
        .arg(&base)
        .arg(&c.admin)
        .arg(&c.ca)
        .arg(&shots)
        .env("CONSOLE_DARK_SHOTS", "1")
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the console test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}\n{stderr}");
    for page in [
        "signin",
        "signin-refused",
        "runs",
        "run",
        "agents",
        "agent",
        "nodes",
        "usage",
    ] {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{} is missing or blank ({size} bytes)",
            shot.display()
        );
    }
}
