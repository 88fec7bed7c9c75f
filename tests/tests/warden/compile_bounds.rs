//! Compile bounds: generated compile bombs are refused before compiling
//! (size, functions, body size, locals, nesting) or stopped in the compile
//! worker (memory, time), as `invalid_component` naming the bound; the
//! process that asked (`warden run`, the control plane at publish) stays
//! small and keeps working.

use crate::leases::TestCluster;
use crate::warden;
use std::time::{Duration, Instant};
use warden_host::compile::CompileLimits;
use warden_host::engine::{LoadError, Quiet};
use warden_tests::cluster::try_publish;
use warden_tests::{bombs, examples, sandbox_with};

/// Small bounds, so each bomb is refused fast.
fn small() -> CompileLimits {
    CompileLimits {
        max_component_bytes: 4 << 20,
        max_functions: 1_000,
        max_function_bytes: 64 << 10,
        max_locals: 1_000,
        max_nesting: 100,
        ..CompileLimits::default()
    }
}

fn load_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox_with(dir.path(), |c| {
        c.engine.cache = false;
        c.engine.compile = small();
    });
    match sandbox.engine().load("bomb.wasm", bytes, &Quiet) {
        Ok(_) => panic!("a component that is no agent loaded"),
        Err(LoadError::Invalid(message)) => message,
        Err(e) => panic!("not an invalid component: {e}"),
    }
}

#[test]
fn shape_bounds_refuse_a_component_before_compiling_it() {
    let cases: [(&str, Vec<u8>, Vec<u8>); 5] = [
        (
            "max_component_bytes",
            vec![0; 5 << 20]
                .into_iter()
                .enumerate()
                .map(|(i, b)| b"\0asm\x0d\0\x01\0".get(i).copied().unwrap_or(b))
                .collect(),
            bombs::many_functions(10),
        ),
        (
            "max_functions",
            bombs::many_functions(1_001),
            bombs::many_functions(1_000),
        ),
        (
            "max_function_bytes",
            bombs::huge_function(70 << 10),
            bombs::huge_function(60 << 10),
        ),
        (
            "max_locals",
            bombs::many_locals(1_001),
            bombs::many_locals(1_000),
        ),
        (
            "max_nesting",
            bombs::deep_nesting(101),
            bombs::deep_nesting(100),
        ),
    ];
    for (key, over, under) in cases {
        let message = load_error(&over);
        assert!(
            message.contains(&format!("[engine.compile].{key}"))
                && message.contains("over a compile bound"),
            "{key}: {message}"
        );
        // Just under the bound, the same shape compiles and fails only the
        // world check: the bound, nothing else, refused the first.
        let message = load_error(&under);
        assert!(
            message.contains("is not a warden:agent/agent component"),
            "{key}: {message}"
        );
    }
}

/// A node config with tight compile-worker bounds.
fn worker_config(dir: &std::path::Path, memory: &str, timeout: &str) -> std::path::PathBuf {
    let path = dir.join(format!("node-{memory}-{timeout}.toml"));
    std::fs::write(
        &path,
        format!("[engine.compile]\nmax_memory_bytes = {memory}\ntimeout = \"{timeout}\"\n"),
    )
    .unwrap();
    path
}

#[test]
fn the_compile_worker_stops_a_bomb_by_memory_and_by_time_and_warden_run_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    // 362 KB that Cranelift needs gigabytes and many seconds for.
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, bombs::live_locals(20_000, 2_000)).unwrap();
    let data = dir.path().join("data");
    let cases = [
        (
            worker_config(dir.path(), "536870912", "60s"),
            "max_memory_bytes",
            "bytes of memory",
        ),
        (
            worker_config(dir.path(), "17179869184", "1s"),
            "timeout",
            "took longer than 1s",
        ),
    ];
    for (config, key, what) in cases {
        let started = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden-cli"))
            .args(["run", bomb.to_str().unwrap(), "--json", "--node-config"])
            .arg(&config)
            .env("WARDEN_DATA_DIR", &data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // warden run itself never compiles: its own peak stays small while
        // its worker grows to the bound.
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            peak = peak.max(warden_tests::cluster::peak_rss(child.id()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let result = crate::json(&out);
        assert_eq!(result["error"]["kind"], "invalid_component", "{result}");
        assert_eq!(result["error"]["retryable"], false, "{result}");
        let message = result["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("[engine.compile].{key}")) && message.contains(what),
            "{message}"
        );
        assert!(peak < 200 << 20, "warden run itself peaked at {peak} bytes");
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{:?}",
            started.elapsed()
        );
    }
    // The same data dir serves a normal run right after.
    let out = warden(
        &data,
        &["run", examples::HELLO, "--input", r#"{"name": "after"}"#],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_a_compile_bomb_is_refused_and_the_control_plane_stays_small_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), "536870912", "60s");
    let (cluster, cp) = TestCluster::start(&["--config", config.to_str().unwrap()]);
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, bombs::live_locals(20_000, 2_000)).unwrap();
    let channel = cluster.channel().await;
    let refused = try_publish(channel.clone(), bomb.to_str().unwrap(), "bomb@1", "")
        .await
        .expect_err("the control plane refuses a compile bomb");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("[engine.compile].max_memory_bytes"),
        "{}",
        refused.message()
    );
    let peak = cp.peak_rss().expect("the control plane is still running");
    assert!(peak < 200 << 20, "the control plane peaked at {peak} bytes");
    // A normal publish right after succeeds.
    let published = try_publish(channel, examples::HELLO, "hello@1", "").await;
    assert!(published.is_ok(), "{published:?}");
}
