//! Leases over real gRPC on loopback, with the control plane and nodes as
//! separate OS processes where a process is killed, paused or restarted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden_core::{AttemptOutcome, NodeState, RunState};
use warden_proto::v1 as pb;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_tests::cluster::{
    self, free_port, get_run, node_state, outcome, publish, state, submit, wait_run,
};
use warden_tests::{components, examples};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden-cli"))
}

/// Where a test cluster's control plane keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    /// A new database on the test run's PostgreSQL server.
    Postgres,
}

/// Each test (an `async fn(Backend)`) once on SQLite and once on
/// PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(crate::leases::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(crate::leases::Backend::Postgres).await;
            })*
        }
    };
}
pub(crate) use on_both_backends;

/// A control plane process on a free port as users run one (TLS, tokens,
/// nodes enrolled with join tokens), with its database and logs in a temp
/// dir, and helpers to start nodes and clients against it.
pub(crate) struct TestCluster {
    pub(crate) tmp: tempfile::TempDir,
    port: u16,
    pub(crate) url: String,
    /// `--db`: the SQLite file or the PostgreSQL URL.
    db: String,
    /// The control plane's CA certificate.
    pub(crate) ca: PathBuf,
    /// The first admin token (role system, tenant `default`).
    pub(crate) admin: String,
    _postgres: Option<warden_testkit::PostgresDatabase>,
}

impl TestCluster {
    pub(crate) fn start(cp_args: &[&str]) -> (Self, cluster::Proc) {
        Self::start_on(Backend::Sqlite, cp_args)
    }

    pub(crate) fn start_on(backend: Backend, cp_args: &[&str]) -> (Self, cluster::Proc) {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let postgres = (backend == Backend::Postgres).then(warden_testkit::postgres_database);
        let db = match &postgres {
            Some(pg) => pg.url.clone(),
            None => tmp.path().join("cp.sqlite3").display().to_string(),
        };
        let (cp, url) = Self::spawn(tmp.path(), port, &db, cp_args);
        let data = tmp.path().join("cp-data");
        let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
        let cluster = TestCluster {
            port,
            url,
            db,
            ca: data.join("ca.pem"),
            admin: admin.trim().to_string(),
            tmp,
            _postgres: postgres,
        };
        (cluster, cp)
    }

    fn spawn(tmp: &Path, port: u16, db: &str, cp_args: &[&str]) -> (cluster::Proc, String) {
        let mut args = vec!["--db", db];
        args.extend(cp_args);
        cluster::tls_control_plane(
            &bin(),
            "control-plane",
            port,
            &tmp.join("cp-data"),
            &args,
            &cluster::log_dir(tmp),
        )
    }

    /// Restarts the control plane on the same port, database and CA.
    fn restart(&self, cp_args: &[&str]) -> cluster::Proc {
        Self::spawn(self.tmp.path(), self.port, &self.db, cp_args).0
    }

    /// A `warden node` process `id` with `--ca`; the first time, enrolled
    /// with a fresh join token (after that its data dir holds its identity).
    pub(crate) fn node(&self, id: &str, args: &[&str]) -> cluster::Proc {
        let ca = self.ca.display().to_string();
        let join;
        let mut all = vec!["--ca", &ca];
        if !self.tmp.path().join(id).join("node.pem").exists() {
            join = self.join_token();
            all.extend(["--join-token", &join]);
        }
        all.extend(args);
        cluster::node(
            &bin(),
            &self.url,
            id,
            self.tmp.path(),
            &all,
            &cluster::log_dir(self.tmp.path()),
        )
    }

    /// A new client token of `tenant` with `role`, made by the admin.
    pub(crate) fn token(&self, tenant: &str, role: &str) -> String {
        self.secret(&["tokens", "create", "--tenant", tenant, "--role", role])
    }

    /// A new single-use join token, made by the admin.
    pub(crate) fn join_token(&self) -> String {
        self.secret(&["nodes", "join-token", "create"])
    }

    /// The last line of what a successful CLI call printed (a secret it
    /// made).
    fn secret(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().unwrap().trim().to_string()
    }

    /// Runs the `warden` CLI against this control plane as the admin.
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    /// The `warden` CLI with `args`, set to reach this control plane as the
    /// admin (`WARDEN_CONTROL_PLANE`, `WARDEN_CA`, `WARDEN_TOKEN`).
    pub(crate) fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(bin());
        command
            .args(args)
            .env("WARDEN_CONTROL_PLANE", &self.url)
            .env("WARDEN_CA", &self.ca)
            .env("WARDEN_TOKEN", &self.admin)
            .env_remove("WARDEN_INSECURE");
        command
    }

    /// A client connection that sends the admin token.
    pub(crate) async fn channel(&self) -> cluster::Conn {
        cluster::connect_tls(&self.url, &self.ca, None, Some(&self.admin)).await
    }

    /// Enrolls node `node_id` over gRPC with a fresh key and join token;
    /// returns a connection that presents its certificate (and no token).
    pub(crate) async fn enroll(&self, node_id: &str) -> cluster::Conn {
        self.try_enroll(node_id).await.unwrap()
    }

    /// [`Self::enroll`], or the control plane's refusal.
    pub(crate) async fn try_enroll(&self, node_id: &str) -> Result<cluster::Conn, tonic::Status> {
        let (csr, key) = crate::security::csr();
        let anonymous = cluster::connect_tls(&self.url, &self.ca, None, None).await;
        let cert = NodeServiceClient::new(anonymous)
            .enroll(pb::EnrollRequest {
                join_token: self.join_token(),
                node_id: node_id.into(),
                csr_pem: csr,
            })
            .await?
            .into_inner()
            .certificate_pem;
        Ok(cluster::connect_tls(&self.url, &self.ca, Some((&cert, &key)), None).await)
    }
}

fn sleeper_input(ms: u64, tag: impl Into<serde_json::Value>) -> String {
    let tag: serde_json::Value = tag.into();
    serde_json::json!({ "ms": ms, "tag": tag }).to_string()
}

async fn two_hundred_runs_over_two_nodes_are_each_recorded_once(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let _a = c.node("node-a", &["--slots", "8"]);
    let _b = c.node("node-b", &["--slots", "8"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1.0.0").await;

    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(submit(ch.clone(), "hello@1.0.0", &format!("{{\"i\":{i}}}"), |_| {}).await);
    }
    let mut nodes = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let run = wait_run(ch.clone(), id, Duration::from_secs(60), |r| {
            state(r) == RunState::Succeeded
        })
        .await;
        let out: serde_json::Value = serde_json::from_str(&run.output).unwrap();
        assert_eq!(
            out["echo"]["i"], i,
            "run {id} recorded another run's output"
        );
        assert_eq!(run.attempt, 1);
        assert_eq!(run.attempts.len(), 1, "{run:?}");
        assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Succeeded);
        nodes.insert(run.attempts[0].node_id.clone());
    }
    assert_eq!(nodes.len(), 2, "both nodes should have run work: {nodes:?}");
}

async fn a_killed_nodes_run_is_re_leased_after_expiry(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--lease-ttl", "2s", "--node-timeout", "60s"]);
    let a = c.node("node-a", &["--slots", "2"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let id = submit(
        ch.clone(),
        "sleeper@1",
        &sleeper_input(1500, "done"),
        |_| {},
    )
    .await;
    wait_run(ch.clone(), &id, Duration::from_secs(20), |r| {
        state(r) == RunState::Running
    })
    .await;

    a.signal("KILL");
    let _b = c.node("node-b", &["--slots", "2"]);
    let run = wait_run(ch.clone(), &id, Duration::from_secs(30), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert_eq!(run.attempt, 2);
    assert_eq!(run.output, "\"done\"");
    assert_eq!(run.attempts[0].node_id, "node-a");
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Expired);
    assert_eq!(run.attempts[1].node_id, "node-b");
    assert_eq!(outcome(&run.attempts[1]), AttemptOutcome::Succeeded);
}

async fn a_paused_nodes_late_result_is_not_recorded(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--lease-ttl", "2s", "--node-timeout", "60s"]);
    let a = c.node("node-a", &["--slots", "2"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let id = submit(ch.clone(), "sleeper@1", &sleeper_input(1500, "x"), |r| {
        r.max_attempts = 5
    })
    .await;
    wait_run(ch.clone(), &id, Duration::from_secs(20), |r| {
        state(r) == RunState::Running
    })
    .await;

    a.signal("STOP");
    let _b = c.node("node-b", &["--slots", "2"]);
    let run = wait_run(ch.clone(), &id, Duration::from_secs(30), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    let winner = run.attempt;
    assert!(winner >= 2, "{run:?}");
    // node-a wakes up with its attempt finished (or about to): it either
    // stops it as lease_lost (its lease expired while it slept) or reports
    // it and is rejected as stale. Wait until it has done one or the other.
    a.signal("CONT");
    let log = c.tmp.path().join("logs/node-a.log");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("lease lost while running") || text.contains("result rejected") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node-a never dealt with its late attempt: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = get_run(ch.clone(), &id).await;
    assert_eq!(state(&run), RunState::Succeeded);
    assert_eq!(run.attempt, winner, "the late attempt was recorded");
    assert_eq!(
        outcome(&run.attempts[0]),
        AttemptOutcome::Expired,
        "{run:?}"
    );
    let last = run.attempts.last().unwrap();
    assert_eq!(
        (last.node_id.as_str(), outcome(last)),
        ("node-b", AttemptOutcome::Succeeded)
    );
}

async fn a_control_plane_killed_mid_flight_loses_nothing(backend: Backend) {
    let (c, cp) = TestCluster::start_on(backend, &["--lease-ttl", "5s"]);
    let _a = c.node("node-a", &["--slots", "4"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(submit(ch.clone(), "sleeper@1", &sleeper_input(200, i), |_| {}).await);
    }
    wait_run(ch.clone(), &ids[0], Duration::from_secs(20), |r| {
        state(r) == RunState::Succeeded
    })
    .await;

    cp.signal("KILL");
    drop(cp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _cp = c.restart(&["--lease-ttl", "5s"]);
    let ch = c.channel().await;
    for (i, id) in ids.iter().enumerate() {
        let run = wait_run(ch.clone(), id, Duration::from_secs(60), |r| {
            state(r) == RunState::Succeeded
        })
        .await;
        assert_eq!(run.output, i.to_string());
    }
    let nodes = NodeServiceClient::new(ch.clone())
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(
        node_state(&nodes[0]),
        NodeState::Ready,
        "the node reconnected by itself"
    );
}

async fn cancel_stops_a_running_agent_and_frees_its_slot(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let _a = c.node("node-a", &["--slots", "1"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SPIN, "spin@1").await;
    let id = submit(ch.clone(), "spin@1", "null", |r| {
        r.budget = Some(pb::Budget {
            timeout_ms: Some(600_000),
            ..Default::default()
        })
    })
    .await;
    wait_run(ch.clone(), &id, Duration::from_secs(20), |r| {
        state(r) == RunState::Running
    })
    .await;

    let started = Instant::now();
    pb::run_service_client::RunServiceClient::new(ch.clone())
        .cancel(pb::CancelRunRequest { run_id: id.clone() })
        .await
        .unwrap();
    let run = wait_run(ch.clone(), &id, Duration::from_secs(5), |r| {
        state(r) == RunState::Cancelled
    })
    .await;
    // Generous: its own timeout is 10 minutes, so only the cancel ended it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Cancelled);

    // The one slot is free again: the next run gets it.
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let next = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &next, Duration::from_secs(10), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
}

async fn sigterm_drains_and_requeues_what_does_not_finish(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let mut a = c.node("node-a", &["--slots", "2", "--drain-grace", "3s"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let short = submit(
        ch.clone(),
        "sleeper@1",
        &sleeper_input(300, "short"),
        |_| {},
    )
    .await;
    let long = submit(
        ch.clone(),
        "sleeper@1",
        &sleeper_input(20_000, "long"),
        |_| {},
    )
    .await;
    // Both started (a busy machine may still be compiling at first).
    for id in [&short, &long] {
        wait_run(ch.clone(), id, Duration::from_secs(20), |r| {
            matches!(state(r), RunState::Running | RunState::Succeeded)
        })
        .await;
    }

    a.signal("TERM");
    let status = a
        .wait_exit(Duration::from_secs(15))
        .expect("the node exits after draining");
    assert!(status.success(), "{status:?}");
    // The short run finished within the grace period; the long one was
    // handed back at once as node_shutdown, nothing left leased to node-a.
    assert_eq!(
        state(&get_run(ch.clone(), &short).await),
        RunState::Succeeded
    );
    let run = get_run(ch.clone(), &long).await;
    assert_eq!(state(&run), RunState::Queued, "{run:?}");
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Failed);
    assert_eq!(run.attempts[0].kind, pb::FailureKind::NodeShutdown as i32);
    // As users see it: the attempt's kind and that it is retryable.
    let doc = crate::json(&c.cli(&["runs", "get", &long, "--json"]));
    let error = &doc["attempts"][0]["error"];
    assert_eq!(error["kind"], "node_shutdown", "{doc}");
    assert_eq!(error["retryable"], true, "{doc}");
    let nodes = NodeServiceClient::new(ch.clone())
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(node_state(&nodes[0]), NodeState::Gone);
}

async fn runs_go_only_to_nodes_with_the_selected_labels(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &[]);
    let _eu = c.node("node-eu", &["--label", "region=eu"]);
    let _us = c.node("node-us", &["--label", "region=us"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            submit(ch.clone(), "hello@1", &i.to_string(), |r| {
                r.node_selector.insert("region".into(), "eu".into());
            })
            .await,
        );
    }
    // No node matches: the run waits in the queue.
    let nowhere = submit(ch.clone(), "hello@1", "0", |r| {
        r.node_selector.insert("region".into(), "mars".into());
    })
    .await;
    for id in &ids {
        let run = wait_run(ch.clone(), id, Duration::from_secs(30), |r| {
            state(r) == RunState::Succeeded
        })
        .await;
        assert_eq!(run.attempts[0].node_id, "node-eu");
    }
    assert_eq!(
        state(&get_run(ch.clone(), &nowhere).await),
        RunState::Queued
    );
}

async fn a_silent_node_is_marked_lost_and_its_leases_re_queued(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--lease-ttl", "60s", "--node-timeout", "2s"]);
    let a = c.node("node-a", &["--slots", "1"]);
    let ch = c.channel().await;
    publish(ch.clone(), components::SLEEPER, "sleeper@1").await;
    let id = submit(ch.clone(), "sleeper@1", &sleeper_input(1000, "ok"), |_| {}).await;
    wait_run(ch.clone(), &id, Duration::from_secs(20), |r| {
        state(r) == RunState::Running
    })
    .await;

    a.signal("KILL");
    let started = Instant::now();
    let _b = c.node("node-b", &["--slots", "1"]);
    let run = wait_run(ch.clone(), &id, Duration::from_secs(20), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome(&run.attempts[0]), AttemptOutcome::Expired);
    assert_eq!(run.attempts.last().unwrap().node_id, "node-b");
    let nodes = NodeServiceClient::new(ch.clone())
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let a = nodes.iter().find(|n| n.node_id == "node-a").unwrap();
    assert_eq!(node_state(a), NodeState::Lost);
}

/// Runs no node can take never stand in front of runs one can: 1,000 runs
/// wanting a GPU node, then one run for anyone, on a cluster without GPUs;
/// the last is run at once, and the others fail `unschedulable` naming
/// their selector once the placement timeout passes.
async fn unplaceable_runs_do_not_block_the_queue(backend: Backend) {
    let (c, _cp) = TestCluster::start_on(backend, &["--placement-timeout", "5s"]);
    let _node = c.node("n1", &["--slots", "2"]);
    let ch = c.channel().await;
    publish(ch.clone(), examples::HELLO, "hello@1").await;
    // Warm: the node has compiled hello before the clock starts.
    let warm = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &warm, Duration::from_secs(60), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    let gpu = pb::SubmitRequest {
        agent: "hello@1".into(),
        input: "{}".into(),
        node_selector: [("gpu".to_string(), "h100".to_string())].into(),
        ..Default::default()
    };
    let waiting = pb::run_service_client::RunServiceClient::new(ch.clone())
        .submit_batch(pb::SubmitBatchRequest {
            runs: vec![gpu; 1000],
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let anyone = submit(ch.clone(), "hello@1", "{}", |_| {}).await;
    wait_run(ch.clone(), &anyone, Duration::from_secs(10), |r| {
        state(r) == RunState::Succeeded
    })
    .await;
    // It ran while the runs in front of it still waited: it went past
    // them (not after the placement timeout cleared them away).
    assert_eq!(
        state(&get_run(ch.clone(), &waiting[999].run_id).await),
        RunState::Queued
    );
    let first = wait_run(
        ch.clone(),
        &waiting[0].run_id,
        Duration::from_secs(15),
        |r| state(r) == RunState::Failed,
    )
    .await;
    assert_eq!(first.error_kind, pb::FailureKind::Unschedulable as i32);
    assert!(
        first.error_message.contains("gpu=h100"),
        "{}",
        first.error_message
    );
    assert!(!warden_core::FailureKind::Unschedulable.retryable());
    let last = get_run(ch.clone(), &waiting[999].run_id).await;
    assert_eq!(state(&last), RunState::Failed);
}

on_both_backends!(
    two_hundred_runs_over_two_nodes_are_each_recorded_once,
    a_killed_nodes_run_is_re_leased_after_expiry,
    a_paused_nodes_late_result_is_not_recorded,
    a_control_plane_killed_mid_flight_loses_nothing,
    cancel_stops_a_running_agent_and_frees_its_slot,
    sigterm_drains_and_requeues_what_does_not_finish,
    runs_go_only_to_nodes_with_the_selected_labels,
    a_silent_node_is_marked_lost_and_its_leases_re_queued,
    unplaceable_runs_do_not_block_the_queue,
);
