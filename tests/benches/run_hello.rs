//! Per-run cost of the sandbox, side by side with a process per run.
//!
//! - `per_run/warden_instantiate_run_drop`: a fresh instance of `hello` from
//!   its `InstancePre` (pooling allocator), one call, store dropped.
//! - `per_run/native_process_spawn`: spawning a native program that does the
//!   same echo (the process-per-run design).
//! - `load/{cold_compile,warm_cache,warm_cache_by_digest}`: the largest
//!   example, compiled from scratch vs loaded from the on-disk cache: from
//!   its bytes (what `warden run FILE` does: hash them, then the cache) and
//!   by its digest (what a node does: it knows the digest, and needs no
//!   bytes when the cache has the component).
//!
//! Run: `cargo bench -p warden-tests --bench run_hello`. Results go in
//! docs/BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use std::process::Command;
use std::time::Duration;
use warden_host::RunRequest;
use warden_host::engine::Quiet;
use warden_tests::{examples, load, sandbox};

const INPUT: &str = r#"{"name":"bench"}"#;

fn per_run(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let hello = load(&sb, examples::HELLO);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Check the two sides do the same work.
    let out = rt.block_on(sb.run(&hello, RunRequest::new("hello", INPUT)));
    let native = Command::new(env!("CARGO_BIN_EXE_echo-native"))
        .arg(INPUT)
        .output()
        .unwrap();
    let native: serde_json::Value = serde_json::from_slice(&native.stdout).unwrap();
    let sandboxed: serde_json::Value = serde_json::from_str(&out.result.unwrap()).unwrap();
    assert_eq!(native, sandboxed);

    let mut group = c.benchmark_group("per_run");
    group.bench_function("warden_instantiate_run_drop", |b| {
        b.iter(|| {
            let out = rt.block_on(sb.run(&hello, RunRequest::new("hello", INPUT)));
            assert!(out.result.is_ok());
        })
    });
    group.bench_function("native_process_spawn", |b| {
        b.iter(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_echo-native"))
                .arg(INPUT)
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    });
    group.finish();
}

fn load_times(c: &mut Criterion) {
    let bytes = std::fs::read(examples::RESEARCH_AGENT).unwrap();
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    let cold_dir = tempfile::tempdir().unwrap();
    let config = warden_host::config::EngineConfig {
        cache: false,
        pool_slots: 4,
        ..Default::default()
    };
    let no_cache = warden_host::AgentEngine::new(&config, 64 << 20, None).unwrap();
    group.bench_function("cold_compile", |b| {
        b.iter(|| no_cache.load("research_agent", &bytes, &Quiet).unwrap())
    });

    let warm = sandbox(cold_dir.path(), None);
    warm.engine()
        .load("research_agent", &bytes, &Quiet)
        .unwrap();
    group.bench_function("warm_cache", |b| {
        b.iter(|| {
            let (_, source) = warm
                .engine()
                .load("research_agent", &bytes, &Quiet)
                .unwrap();
            assert_eq!(source, warden_host::LoadSource::Cache);
        })
    });
    let digest = warden_host::cache::sha256_hex(&bytes);
    group.bench_function("warm_cache_by_digest", |b| {
        b.iter(|| {
            warm.engine()
                .load_cached("research_agent", &digest)
                .unwrap()
                .expect("in the cache")
        })
    });
    group.finish();
}

criterion_group!(benches, per_run, load_times);
criterion_main!(benches);
