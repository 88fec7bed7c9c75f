//! The hostile-guest suite: guests that try to make the host spend what
//! their budget does not count. Each case asserts how the run ends (or what
//! the guest saw), and that a normal run on the same sandbox succeeds
//! right after; one runs a hostile guest and normal guests at once. (The
//! handle flood and fields bomb are in `limits`, compile bombs in
//! `compile_bounds`.)

use crate::output;
use std::time::Duration;
use warden_core::HOST_CALL_FUEL;
use warden_host::capability::fs::ENTRY_BYTES;
use warden_host::{FailureKind, Grant, RunBudget, RunOutcome, RunRequest, Sandbox};
use warden_tests::{components, examples, load, sandbox_with};

fn scratch_run(input: &str, max_disk: u64) -> RunRequest {
    let mut req = RunRequest::new("scratch", input);
    req.grant = Grant {
        scratch_dir: true,
        ..Grant::default()
    };
    req.budget = RunBudget {
        max_disk_bytes: max_disk,
        timeout: Duration::from_secs(60),
        ..RunBudget::default()
    };
    req
}

/// A normal run on `sb` succeeds.
async fn a_normal_run_succeeds(sb: &Sandbox) {
    let hello = load(sb, examples::HELLO);
    let out = sb
        .run(&hello, RunRequest::new("hello", r#"{"name":"after"}"#))
        .await;
    assert_eq!(output(&out)["greeting"], "hello, after");
}

fn report(outcome: &RunOutcome) -> serde_json::Value {
    output(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_fill_stops_at_the_quota_and_the_guest_sees_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), |_| {});
    let fill = load(&sb, components::SCRATCH_FILL);
    let quota = 8 << 20;
    let outcome = sb
        .run(&fill, scratch_run(r#"{"mode": "fill"}"#, quota))
        .await;
    let r = report(&outcome);
    // The write past the quota failed inside the guest, which went on.
    assert!(r["error"].is_string(), "{r}");
    let on_disk = r["on_disk"].as_u64().unwrap();
    assert!(on_disk + ENTRY_BYTES <= quota, "{on_disk} bytes on disk");
    assert!(
        on_disk + ENTRY_BYTES + (64 << 10) > quota,
        "stopped early: {on_disk}"
    );
    assert_eq!(r["bytes"], on_disk);
    // Usage says how much the directory held, at most the quota.
    assert!(
        outcome.usage.disk_bytes <= quota,
        "{}",
        outcome.usage.disk_bytes
    );
    assert_eq!(outcome.usage.disk_bytes, on_disk + ENTRY_BYTES);
    // The run's directory is gone, and the next run is served.
    let left = std::fs::read_dir(dir.path().join("scratch"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .count();
    assert_eq!(left, 0, "run directories left behind");
    a_normal_run_succeeds(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_stop_at_the_entry_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), |c| c.engine.max_scratch_entries = 500);
    let fill = load(&sb, components::SCRATCH_FILL);
    let outcome = sb
        .run(&fill, scratch_run(r#"{"mode": "files"}"#, 64 << 20))
        .await;
    let r = report(&outcome);
    assert_eq!(r["files"], 500, "{r}");
    assert!(r["error"].as_str().unwrap().contains("StorageFull"), "{r}");
    // The byte quota bounds entries too: each costs ENTRY_BYTES.
    let outcome = sb
        .run(
            &fill,
            scratch_run(r#"{"mode": "files"}"#, 100 * ENTRY_BYTES),
        )
        .await;
    assert_eq!(report(&outcome)["files"], 100);
    // Every name counts, hard links included.
    let outcome = sb
        .run(&fill, scratch_run(r#"{"mode": "links"}"#, 64 << 20))
        .await;
    let r = report(&outcome);
    assert_eq!(r["files"], 499, "{r}");
    assert!(r["error"].as_str().unwrap().contains("StorageFull"), "{r}");
    a_normal_run_succeeds(&sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_and_removing_files_gives_space_back() {
    // 200 MiB written in all through a 16 MiB quota: truncation and
    // removal give the space back.
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), |_| {});
    let fill = load(&sb, components::SCRATCH_FILL);
    for mode in ["rewrite", "churn"] {
        let input = format!(r#"{{"mode": "{mode}", "size": 4194304, "times": 50}}"#);
        let outcome = sb.run(&fill, scratch_run(&input, 16 << 20)).await;
        let r = report(&outcome);
        assert_eq!(r["bytes"], 50 * 4194304u64, "{mode}: {r}");
        assert!(
            outcome.usage.disk_bytes <= (4 << 20) + ENTRY_BYTES,
            "{mode}: {:?}",
            outcome.usage
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_guest_and_normal_guests_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), |_| {});
    let fill = load(&sb, components::SCRATCH_FILL);
    let flood = load(&sb, components::HANDLE_FLOOD);
    let hello = load(&sb, examples::HELLO);
    let hostile = {
        let sb = sb.clone();
        tokio::spawn(async move {
            let filled = sb
                .run(&fill, scratch_run(r#"{"mode": "fill"}"#, 32 << 20))
                .await;
            let flooded = sb
                .run(&flood, RunRequest::new("flood", r#"{"fill": 28}"#))
                .await;
            (filled, flooded)
        })
    };
    for i in 0..20 {
        let out = sb
            .run(&hello, RunRequest::new("hello", format!("{{\"i\":{i}}}")))
            .await;
        assert_eq!(output(&out)["echo"]["i"], i);
    }
    let (filled, flooded) = hostile.await.unwrap();
    assert!(report(&filled)["error"].is_string());
    let failure = flooded.result.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ResourceLimit, "{failure}");
    assert!(!failure.kind.retryable());
    // Usage up to the bound is reported.
    assert!(flooded.usage.wall_time_ms > 0.0);
}

#[test]
fn scratch_directories_a_dead_process_left_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    // A process id that is not running (above the kernel's pid_max), and
    // one that is (init).
    let dead = scratch.join("4294967295").join("run-x");
    let live = scratch.join("1").join("run-y");
    for d in [&dead, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("data"), vec![0; 1000]).unwrap();
    }
    let _sb = sandbox_with(dir.path(), |_| {});
    assert!(!dead.exists(), "a dead process's scratch was left");
    assert!(live.exists(), "a live process's scratch was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_flood_is_stopped_by_fuel_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox_with(dir.path(), |_| {});
    let flood = load(&sb, components::HANDLE_FLOOD);
    let mut req = RunRequest::new("calls", r#"{"calls": true}"#);
    req.budget.fuel = Some(5_000_000);
    let outcome = sb.run(&flood, req).await;
    assert_eq!(crate::failure_kind(&outcome), FailureKind::FuelExhausted);
    let fuel_used = outcome.usage.fuel_used.unwrap();
    assert!(fuel_used >= 5_000_000 - HOST_CALL_FUEL, "{fuel_used}");
    // The calls are counted, and each cost its share of the fuel.
    let calls = outcome.usage.host_calls;
    assert!(calls > 1_000, "{calls} host calls");
    assert!(calls * HOST_CALL_FUEL <= fuel_used, "{calls} host calls");
    assert!(calls * HOST_CALL_FUEL * 2 > fuel_used, "{calls} host calls");
    let mut req = RunRequest::new("calls", r#"{"calls": true}"#);
    req.budget.timeout = Duration::from_millis(300);
    let outcome = sb.run(&flood, req).await;
    assert_eq!(crate::failure_kind(&outcome), FailureKind::Timeout);
    assert!(outcome.usage.host_calls > 1_000, "{:?}", outcome.usage);
    assert!(!FailureKind::Timeout.retryable() && !FailureKind::FuelExhausted.retryable());
    a_normal_run_succeeds(&sb).await;
}
