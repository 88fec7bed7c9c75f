//! Every budget produces its failure kind, and the host survives it.

use crate::{failure_kind, output};
use std::time::{Duration, Instant};
use warden_host::capability::logging::LogSource;
use warden_host::engine::LoadError;
use warden_host::{FailureKind, RunBudget, RunRequest};
use warden_tests::{components, examples, load, sandbox};

fn budget(edit: impl FnOnce(&mut RunBudget)) -> RunBudget {
    let mut b = RunBudget::default();
    edit(&mut b);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guest_times_out_and_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let spin = load(&sb, components::SPIN);
    let hello = load(&sb, examples::HELLO);

    let started = Instant::now();
    let spinning = {
        let sb = sb.clone();
        tokio::spawn(async move {
            let mut req = RunRequest::new("spin", "null");
            req.budget = budget(|b| b.timeout = Duration::from_secs(1));
            let outcome = sb.run(&spin, req).await;
            (outcome, started.elapsed())
        })
    };
    // While the guest spins, other runs are served: all 20 finish before
    // the spinning run does (it cannot end before its 1 s deadline).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        let out = sb
            .run(&hello, RunRequest::new("hello", format!("{{\"i\":{i}}}")))
            .await;
        assert_eq!(output(&out)["echo"]["i"], i);
    }
    assert!(
        !spinning.is_finished(),
        "hello runs waited for the spinning guest to end"
    );
    let (outcome, elapsed) = spinning.await.unwrap();
    assert_eq!(failure_kind(&outcome), FailureKind::Timeout);
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped early: {elapsed:?}"
    );
    // Generous: the deadline, not some later event, stopped it.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn fuel_budget_stops_cpu_work() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let burn = load(&sb, components::FUEL_BURN);

    let mut req = RunRequest::new("burn", r#"{"iterations": 100000000}"#);
    req.budget = budget(|b| b.fuel = Some(1_000_000));
    let outcome = sb.run(&burn, req).await;
    assert_eq!(failure_kind(&outcome), FailureKind::FuelExhausted);
    assert_eq!(outcome.usage.fuel_used, Some(1_000_000));

    let mut req = RunRequest::new("burn", r#"{"iterations": 1000}"#);
    req.budget = budget(|b| b.fuel = Some(1_000_000));
    let outcome = sb.run(&burn, req).await;
    assert_eq!(output(&outcome), 499_500);
    let used = outcome.usage.fuel_used.unwrap();
    assert!(used > 1000 && used < 1_000_000, "fuel used: {used}");
}

/// Peak resident memory of this process, from /proc.
fn vm_hwm_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs the ignored test `name` of this binary in a fresh process, so the
/// process's peak memory is that test's alone, whatever the test runner
/// shares; panics unless it passed and printed `expect`.
fn in_fresh_process(name: &str, expect: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            name,
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
    assert!(text.contains(expect), "{text}");
}

#[test]
fn memory_bomb_hits_the_limit_without_growing_the_host() {
    in_fresh_process(
        "limits::memory_bomb_in_a_fresh_process",
        "host peak grew by",
    );
}

#[test]
fn a_fields_bomb_holds_host_memory_within_twice_its_budget() {
    in_fresh_process(
        "limits::fields_bomb_in_a_fresh_process",
        "host peak grew by",
    );
}

/// Fills as many wasi-http `fields` as the host allows, each as full as it
/// allows, under a 64 MiB memory budget, while other runs go on: the host
/// holds at most about the budget again for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_fields_bomb_holds_host_memory_within_twice_its_budget in its own process"]
async fn fields_bomb_in_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let bomb = load(&sb, components::HANDLE_FLOOD);
    let hello = load(&sb, examples::HELLO);
    let cap: u64 = 64 << 20;
    // Warm up: the first runs map the pool and the runtime's buffers.
    let warm = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(warm.result.is_ok());
    let before = vm_hwm_bytes();

    // 28 values of 1 KiB (plus names and overhead) stay under the 32 KiB
    // a fields map may hold.
    let mut req = RunRequest::new("bomb", r#"{"fill": 28}"#);
    req.budget = budget(|b| b.max_memory_bytes = cap);
    let running = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.run(&bomb, req).await })
    };
    // Other runs are served meanwhile.
    for i in 0..20 {
        let out = sb
            .run(&hello, RunRequest::new("hello", format!("{{\"i\":{i}}}")))
            .await;
        assert_eq!(output(&out)["echo"]["i"], i);
    }
    let outcome = running.await.unwrap();
    let failure = outcome.result.as_ref().unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(failure.message.contains("host resources"), "{failure}");
    assert!(failure.message.contains("max_handle_bytes"), "{failure}");

    let grown = vm_hwm_bytes().saturating_sub(before);
    println!("host peak grew by {grown} bytes for a {cap}-byte budget");
    assert!(
        grown < 2 * cap,
        "host peak memory grew by {grown} bytes for a {cap}-byte budget"
    );
}

#[tokio::test]
#[ignore = "run by memory_bomb_hits_the_limit_without_growing_the_host in its own process"]
async fn memory_bomb_in_a_fresh_process() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let bomb = load(&sb, components::MEMORY_BOMB);
    let cap: u64 = 32 << 20;
    let before = vm_hwm_bytes();

    let mut req = RunRequest::new("bomb", "null");
    req.budget = budget(|b| b.max_memory_bytes = cap);
    let outcome = sb.run(&bomb, req).await;
    assert_eq!(failure_kind(&outcome), FailureKind::MemoryLimit);
    assert!(outcome.usage.peak_memory_bytes <= cap);
    assert!(
        outcome.usage.peak_memory_bytes > cap / 2,
        "the bomb grew memory"
    );

    let grown = vm_hwm_bytes().saturating_sub(before);
    println!("host peak grew by {grown} bytes for a {cap}-byte cap");
    assert!(
        grown < cap + (16 << 20),
        "host peak memory grew by {grown} bytes for a {cap}-byte cap"
    );
}

#[tokio::test]
async fn oversized_output_and_logs_fail_as_output_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let big = load(&sb, components::BIG_OUTPUT);

    let mut req = RunRequest::new("big", r#"{"bytes": 5000}"#);
    req.budget = budget(|b| b.max_output_bytes = 4096);
    let outcome = sb.run(&big, req).await;
    assert_eq!(failure_kind(&outcome), FailureKind::OutputTooLarge);

    let mut req = RunRequest::new("big", r#"{"log_lines": 1000}"#);
    req.budget = budget(|b| b.max_log_bytes = 10_000);
    let outcome = sb.run(&big, req).await;
    assert_eq!(failure_kind(&outcome), FailureKind::OutputTooLarge);
    assert!(outcome.usage.log_bytes <= 10_000);

    // Within budget, output and logs come back whole.
    let outcome = sb
        .run(
            &big,
            RunRequest::new(
                "big",
                r#"{"bytes": 3000, "log_lines": 3, "tail": "no newline"}"#,
            ),
        )
        .await;
    assert_eq!(output(&outcome).as_str().unwrap().len(), 3000);
    assert_eq!(outcome.logs.len(), 4);
    assert!(outcome.logs[2].message.starts_with("log line 2"));
    // A last line without a newline is kept, not dropped.
    assert_eq!(outcome.logs[3].message, "no newline");
    assert_eq!(outcome.logs[3].source, LogSource::Stderr);
}

#[tokio::test]
async fn traps_are_reported_with_a_message_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), None);
    let deep = load(&sb, components::DEEP_RECURSION);
    let panic = load(&sb, components::PANIC);
    let hello = load(&sb, examples::HELLO);

    let native = sb.run(&deep, RunRequest::new("deep", "\"native\"")).await;
    let f = native.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Trap);
    assert!(f.message.contains("stack overflow"), "{}", f.message);

    let shadow = sb.run(&deep, RunRequest::new("deep", "\"shadow\"")).await;
    let f = shadow.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Trap);
    assert!(f.message.contains("out of bounds"), "{}", f.message);

    let panicked = sb.run(&panic, RunRequest::new("panic", "42")).await;
    let f = panicked.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Trap);
    assert!(f.message.contains("agent gave up on 42"), "{}", f.message);

    let guest_error = load(&sb, components::GUEST_ERROR);
    let failed = sb
        .run(&guest_error, RunRequest::new("e", "\"no luck\""))
        .await;
    assert_eq!(
        failed.result.unwrap_err(),
        warden_host::RunFailure::new(FailureKind::GuestError, "no luck")
    );

    let ok = sb
        .run(&hello, RunRequest::new("hello", r#"{"name":"after"}"#))
        .await;
    assert_eq!(output(&ok)["greeting"], "hello, after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_flood_fails_resource_limit_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |c| c.engine.max_handles = 1_000);
    let flood = load(&sb, components::HANDLE_FLOOD);
    let outcome = sb.run(&flood, RunRequest::new("flood", "{}")).await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(!failure.kind.retryable());
    assert!(failure.message.contains("max_handles"), "{failure}");
    // One fields map over its byte bound is refused the same way.
    let outcome = sb
        .run(
            &flood,
            RunRequest::new("flood", r#"{"limit": 1, "fill": 40}"#),
        )
        .await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(failure.message.contains("fields map"), "{failure}");
    // Under the bound the same guest is fine, and so is the next run.
    let under = sb
        .run(&flood, RunRequest::new("flood", r#"{"limit": 900}"#))
        .await;
    assert_eq!(output(&under), 900);
    let hello = load(&sb, examples::HELLO);
    let out = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_breaking_the_interface_is_its_own_fault() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |_| {});
    let flood = load(&sb, components::HANDLE_FLOOD);
    // 80 MiB handed over in one call, from 1 MiB of memory aliased: over
    // the bytes one call may pass (the 64 MiB memory budget).
    let outcome = sb
        .run(&flood, RunRequest::new("alias", r#"{"alias": 80}"#))
        .await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(!failure.kind.retryable());
    assert!(failure.message.contains("in one call"), "{failure}");
    // Within it the same call goes through to the host (which refuses
    // a fields map that large, as its own bound).
    let outcome = sb
        .run(&flood, RunRequest::new("alias", r#"{"alias": 8}"#))
        .await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(failure.message.contains("fields map"), "{failure}");
    // A handle the host never gave out.
    let outcome = sb
        .run(&flood, RunRequest::new("forged", r#"{"bad_handle": true}"#))
        .await;
    let failure = outcome.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::Trap, "{failure}");
    assert!(!failure.kind.retryable());
    assert!(
        failure.message.contains("misused a host interface"),
        "{failure}"
    );
    let hello = load(&sb, examples::HELLO);
    let out = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
}

/// An agent of one core module made of `fields`, which export `memory`,
/// `realloc` and `run` (the core function lifted as the agent's `run`).
fn one_module_agent(fields: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
             (core module $m {fields})
             (core instance $i (instantiate $m))
             (type $r (result string (error string)))
             (func (export "run") (param "input" string) (result $r)
               (canon lift (core func $i "run") (memory (core memory $i "memory"))
                 (realloc (core func $i "realloc")))))"#
    ))
    .unwrap()
}

/// An agent whose one core module asks for `pages` of memory at start.
fn wants_memory(pages: u32) -> Vec<u8> {
    one_module_agent(&format!(
        r#"(memory (export "memory") {pages})
           (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
           (func (export "run") (param i32 i32) (result i32) i32.const 0)"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_asking_for_too_much_memory_is_refused_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |_| {});
    // More than the node's largest memory: refused when loaded, naming it.
    let Err(LoadError::Invalid(message)) = sb.engine().load(
        "huge.wasm",
        &wants_memory(20_000),
        &warden_host::engine::Quiet,
    ) else {
        panic!("a component asking for 1.2 GiB of memory loaded");
    };
    assert!(message.contains("minimum byte size"), "{message}");
    // More than the run's budget (64 MiB): the budget refuses it.
    let big = sb
        .engine()
        .load(
            "big.wasm",
            &wants_memory(2_000),
            &warden_host::engine::Quiet,
        )
        .expect("valid component")
        .0;
    let failure = sb
        .run(&big, RunRequest::new("big", "{}"))
        .await
        .result
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::MemoryLimit, "{failure}");
    let hello = load(&sb, examples::HELLO);
    let out = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
}

/// An agent whose start function (run while it is instantiated) drops a
/// `pollable` handle the host never gave out.
const FORGES_AT_START: &str = r#"(component
  (import "wasi:io/poll@0.2.12" (instance $poll
    (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (core func $drop (canon resource.drop $pollable))
  (core module $m
    (import "" "drop" (func $drop (param i32)))
    (memory (export "memory") 1)
    (func $start i32.const 12345 call $drop)
    (start $start)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
    (func (export "run") (param i32 i32) (result i32) i32.const 0))
  (core instance $i (instantiate $m
    (with "" (instance (export "drop" (func $drop))))))
  (type $r (result string (error string)))
  (func (export "run") (param "input" string) (result $r)
    (canon lift (core func $i "run") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc")))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_misusing_the_host_is_not_a_host_error() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |_| {});
    let forger = sb
        .engine()
        .load(
            "forger.wasm",
            &wat::parse_str(FORGES_AT_START).unwrap(),
            &warden_host::engine::Quiet,
        )
        .expect("valid component")
        .0;
    let failure = sb
        .run(&forger, RunRequest::new("forger", "{}"))
        .await
        .result
        .unwrap_err();
    // Before, this was `host_error`: retried on every node.
    assert_eq!(failure.kind, FailureKind::InvalidComponent, "{failure}");
    assert!(!failure.kind.retryable(), "{failure}");
    assert!(failure.message.contains("unknown handle"), "{failure}");
    let hello = load(&sb, examples::HELLO);
    let out = sb.run(&hello, RunRequest::new("hello", "{}")).await;
    assert!(out.result.is_ok(), "{:?}", out.result);
}

/// An agent whose `run` grows its one table (of 1 element) to `elements`
/// and answers whether `table.grow` succeeded (`true`) or was refused
/// (`false`).
fn grows_table_to(elements: u32) -> Vec<u8> {
    let delta = elements - 1;
    one_module_agent(&format!(
        r#"(memory (export "memory") 1)
           (table $t 1 funcref)
           (data (i32.const 100) "truefalse")
           (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
           (func (export "run") (param i32 i32) (result i32)
             (i32.store (i32.const 16) (i32.const 0))
             (i32.store (i32.const 20) (i32.const 100))
             (i32.store (i32.const 24) (i32.const 4))
             (if (i32.eq (table.grow $t (ref.null func) (i32.const {delta})) (i32.const -1))
               (then (i32.store (i32.const 20) (i32.const 104))
                     (i32.store (i32.const 24) (i32.const 5))))
             i32.const 16)"#
    ))
}

/// An agent whose `run` asks `wasi:random` for `len` bytes in one call and
/// answers whether it got them (`true`).
fn asks_for_random_bytes(len: u64) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
             (import "wasi:random/random@0.2.12" (instance $random
               (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))
             ;; Memory and a bump allocator that grows it as needed.
             (core module $libc
               (memory (export "memory") 1)
               (global $next (mut i32) (i32.const 4096))
               (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                 (local $ptr i32)
                 (local.set $ptr (global.get $next))
                 (global.set $next (i32.add (global.get $next) (local.get 3)))
                 (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
                   (then (drop (memory.grow
                     (i32.add (i32.const 1) (i32.div_u
                       (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
                       (i32.const 65536)))))))
                 local.get $ptr))
             (core instance $libc (instantiate $libc))
             (core func $get (canon lower (func $random "get-random-bytes")
               (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
             (core module $m
               (import "libc" "memory" (memory 1))
               (import "random" "get" (func $get (param i64 i32)))
               (data (i32.const 100) "truefalse")
               (func (export "run") (param i32 i32) (result i32)
                 (call $get (i64.const {len}) (i32.const 8))
                 (i32.store (i32.const 16) (i32.const 0))
                 (i32.store (i32.const 20) (i32.const 100))
                 (i32.store (i32.const 24) (i32.const 4))
                 (if (i32.ne (i32.load (i32.const 12)) (i32.const {len}))
                   (then (i32.store (i32.const 20) (i32.const 104))
                         (i32.store (i32.const 24) (i32.const 5))))
                 i32.const 16))
             (core instance $i (instantiate $m
               (with "libc" (instance $libc))
               (with "random" (instance (export "get" (func $get))))))
             (type $r (result string (error string)))
             (func (export "run") (param "input" string) (result $r)
               (canon lift (core func $i "run") (memory (core memory $libc "memory"))
                 (realloc (core func $libc "realloc")))))"#
    ))
    .unwrap()
}

/// Loads a hand-written component into `sb`.
fn load_wat(sb: &warden_host::Sandbox, name: &str, wasm: &[u8]) -> warden_host::AgentComponent {
    sb.engine()
        .load(name, wasm, &warden_host::engine::Quiet)
        .expect("valid component")
        .0
}

/// SECURITY.md's table-element bound, as it holds: a guest's table grows
/// to 20,000 elements and no further (`table.grow` answers -1). The bound
/// that bites is the pooling allocator's (wasmtime's default
/// `table_elements`, 20,000), below `MemoryLimiter`'s own 100,000 in
/// `store.rs`, which no table can reach. Fails if the pool's bound is
/// raised or dropped without the store's taking over at the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_grows_to_20_000_elements_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |_| {});
    for (elements, grows) in [(20_000, true), (20_001, false), (100_001, false)] {
        let table = load_wat(&sb, "table.wasm", &grows_table_to(elements));
        let out = sb.run(&table, RunRequest::new("table", "{}")).await;
        assert_eq!(output(&out), grows, "a table of {elements} elements");
    }
}

/// One `wasi:random` call may ask for 1 MiB, not a byte more: the call
/// traps (the guest's fault, not retried). Without `max_random_size` in
/// `run.rs`, wasmtime-wasi's own 64 MiB would let the larger call through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_random_call_gets_at_most_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let sb = warden_tests::sandbox_with(dir.path(), |_| {});
    let at_bound = load_wat(&sb, "random.wasm", &asks_for_random_bytes(1 << 20));
    let out = sb.run(&at_bound, RunRequest::new("random", "{}")).await;
    assert_eq!(output(&out), true, "1 MiB of random bytes");
    let over = load_wat(&sb, "random.wasm", &asks_for_random_bytes((1 << 20) + 1));
    let failure = sb
        .run(&over, RunRequest::new("random", "{}"))
        .await
        .result
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Trap, "{failure}");
    assert!(!failure.kind.retryable());
    assert!(
        failure.message.contains("exceeds limit 1048576"),
        "{failure}"
    );
}
