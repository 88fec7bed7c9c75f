//! The control plane's store side by side: SQLite, PostgreSQL with one
//! replica, and PostgreSQL with two replicas (each with a node of half the
//! slots; clients submit to both, so half the runs wake the other replica
//! through LISTEN/NOTIFY). Control planes and nodes run in this process,
//! talking real gRPC over loopback; PostgreSQL is Debian's server started
//! here (fsync on, synchronous_commit off: like SQLite's WAL with
//! synchronous=NORMAL, a crash of the machine may lose the last commits,
//! never corrupt).
//!
//! For each: completed `hello` runs/s with 8 clients submitting, and
//! submit-to-start latency (created -> first attempt started, on the
//! control plane's clock) p50/p99 on an idle cluster, one run at a time.
//! The three are measured in turn, PAIRS times; medians and ratios to
//! SQLite are printed.
//!
//! Then the same three as users run them (`processes`): each control
//! plane and node a `warden` process of its own, TLS with enrolled nodes
//! and a token, two nodes of SLOTS/2 slots (with two replicas, one node
//! starting on each and knowing both), RUNS `hello` runs submitted in
//! batches of 500 (split over the replicas) and counted done through the
//! API. `WARDEN_BENCH_ONLY=in-process` or `=processes` runs one table;
//! `WARDEN_BENCH_BIN` runs the processes from another `warden` build.
//!
//! Run: `cargo bench -p warden-tests --bench backends -- [RUNS] [SLOTS] [PAIRS]`.
//! With `WARDEN_BENCH_PG_STATEMENTS=1`, PostgreSQL loads
//! `pg_stat_statements` and the statements that took the most time are
//! printed at the end (calls, total and mean time).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden_control_plane::{ControlPlane, Store};
use warden_core::RunState;
use warden_proto::v1 as pb;
use warden_tests::cluster::{self, connect, publish, state, tls_connect, with_token};
use warden_tests::in_process::{Node, control_plane_on};
use warden_tests::{examples, sandbox_with};

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Control planes (replicas) with a node each, and their URLs.
struct Setup {
    name: &'static str,
    cps: Vec<ControlPlane>,
    urls: Vec<String>,
    _nodes: Vec<Node>,
    _db: Option<warden_testkit::PostgresDatabase>,
}

async fn start(
    name: &'static str,
    dir: &std::path::Path,
    pg: Option<&str>,
    replicas: usize,
    slots: u32,
) -> Setup {
    let db = pg.map(warden_testkit::postgres_database_at);
    let mut cps = Vec::new();
    let mut urls = Vec::new();
    let mut nodes = Vec::new();
    for r in 0..replicas {
        let store = match &db {
            Some(db) => Store::open_postgres(&db.url, 16, &dir.join("sealing.key")).unwrap(),
            None => Store::open(&dir.join("cp.sqlite3")).unwrap(),
        };
        let (cp, url) = control_plane_on(store).await;
        let node_dir = dir.join(format!("node-{r}"));
        let per_node = slots / replicas as u32;
        let sandbox = sandbox_with(&node_dir, |c| c.engine.pool_slots = per_node);
        let id = format!("{name}-node-{r}");
        nodes.push(Node::start(&url, &id, sandbox, &node_dir, per_node, &[]));
        cps.push(cp);
        urls.push(url);
    }
    publish(connect(&urls[0]).await, examples::HELLO, "hello@1").await;
    // Warm: every node has fetched and compiled the component.
    let setup = Setup {
        name,
        cps,
        urls,
        _nodes: nodes,
        _db: db,
    };
    for _ in 0..4 * replicas {
        idle_latency(&setup, 1).await;
    }
    setup
}

/// Submits `runs` runs from 8 clients (spread over the replicas) and waits
/// for them; completed runs/s.
async fn throughput(setup: &Setup, runs: usize) -> f64 {
    let clients = 8;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = setup.urls[c % setup.urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut client = pb::run_service_client::RunServiceClient::new(connect(&url).await);
            let mut ids = Vec::new();
            for i in (c..runs).step_by(clients) {
                let run = client
                    .submit(pb::SubmitRequest {
                        agent: "hello@1".into(),
                        input: format!("{{\"i\":{i}}}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ids.push(run.run.unwrap().run_id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let store = setup.cps[0].store();
    loop {
        let pending: u64 = [RunState::Queued, RunState::Leased, RunState::Running]
            .into_iter()
            .map(|s| store.count_runs(s).unwrap())
            .sum();
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    for id in &ids {
        let run = store.get_run(None, id).unwrap().unwrap();
        assert_eq!(state(&run), RunState::Succeeded, "{run:?}");
    }
    runs as f64 / elapsed.as_secs_f64()
}

/// Submits `runs` runs one at a time (to each replica in turn), each once
/// the one before has ended; their submit-to-start latencies (ms), sorted.
async fn idle_latency(setup: &Setup, runs: usize) -> Vec<i64> {
    let mut latencies = Vec::new();
    for i in 0..runs {
        let url = &setup.urls[i % setup.urls.len()];
        let mut client = pb::run_service_client::RunServiceClient::new(connect(url).await);
        let id = client
            .submit(pb::SubmitRequest {
                agent: "hello@1".into(),
                input: "{}".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
            .run_id;
        let run = loop {
            let run = setup.cps[0].store().get_run(None, &id).unwrap().unwrap();
            if state(&run).is_terminal() {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(state(&run), RunState::Succeeded, "{run:?}");
        latencies.push(run.attempts[0].started_unix_ms - run.created_unix_ms);
    }
    latencies.sort_unstable();
    latencies
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let slots: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let pairs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);

    let statements = std::env::var("WARDEN_BENCH_PG_STATEMENTS").is_ok_and(|v| v == "1");
    let mut settings = vec!["synchronous_commit=off"];
    if statements {
        settings.push("shared_preload_libraries=pg_stat_statements");
        settings.push("pg_stat_statements.track_planning=on");
    }
    let server = warden_testkit::start_postgres_server(&settings);
    let dir = tempfile::tempdir().unwrap();
    let only = std::env::var("WARDEN_BENCH_ONLY").unwrap_or_default();
    if only != "processes" {
        in_process(
            &dir.path().join("in-process"),
            &server,
            runs,
            slots,
            pairs,
            statements,
        )
        .await;
    }
    if only != "in-process" {
        processes(
            &dir.path().join("processes"),
            &server,
            runs,
            slots,
            pairs,
            statements,
        )
        .await;
    }
}

async fn in_process(
    dir: &Path,
    server: &str,
    runs: usize,
    slots: u32,
    pairs: usize,
    statements: bool,
) {
    let setups = [
        start("sqlite", &dir.join("sqlite"), None, 1, slots).await,
        start("postgres-1", &dir.join("pg1"), Some(server), 1, slots).await,
        start("postgres-2", &dir.join("pg2"), Some(server), 2, slots).await,
    ];
    let mut rates = vec![Vec::new(); setups.len()];
    let mut idle: Vec<Vec<i64>> = vec![Vec::new(); setups.len()];
    for pair in 0..pairs {
        for (i, setup) in setups.iter().enumerate() {
            let rate = throughput(setup, runs).await;
            let lat = idle_latency(setup, 100).await;
            println!(
                "round {pair} {}: {rate:.0} runs/s; idle submit->start p50 {} ms, p99 {} ms",
                setup.name,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
            rates[i].push(rate);
            idle[i].extend(lat);
        }
    }
    let base = median(rates[0].clone());
    for (i, setup) in setups.iter().enumerate() {
        let rate = median(rates[i].clone());
        idle[i].sort_unstable();
        println!(
            "{}: median {rate:.0} runs/s ({:.2} x sqlite); idle submit->start over {} runs: p50 {} ms, p99 {} ms",
            setup.name,
            rate / base,
            idle[i].len(),
            percentile(&idle[i], 0.5),
            percentile(&idle[i], 0.99),
        );
    }
    if statements {
        print_statements(setups[1]._db.as_ref().unwrap());
    }
}

/// A cluster of `warden` processes: control planes (replicas) with TLS,
/// enrolled nodes, and an admin token.
struct Processes {
    name: &'static str,
    urls: Vec<String>,
    ca: PathBuf,
    token: String,
    _procs: Vec<cluster::Proc>,
    _db: Option<warden_testkit::PostgresDatabase>,
}

/// The `warden` binary the processes run: this build's, or
/// `WARDEN_BENCH_BIN` (another build, to compare two in one sitting).
fn warden_bin() -> PathBuf {
    std::env::var_os("WARDEN_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_warden-cli")),
        PathBuf::from,
    )
}

async fn start_processes(
    name: &'static str,
    dir: &Path,
    pg: Option<&str>,
    replicas: usize,
    slots: u32,
) -> Processes {
    let db = pg.map(warden_testkit::postgres_database_at);
    let logs = cluster::log_dir(dir);
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    let first = dir.join("cp-0");
    let mut token = String::new();
    for r in 0..replicas {
        let data = dir.join(format!("cp-{r}"));
        if r > 0 {
            // Replicas share the CA and the sealing key (README).
            std::fs::create_dir_all(&data).unwrap();
            for file in ["ca.pem", "ca.key", "sealing.key"] {
                std::fs::copy(first.join(file), data.join(file)).unwrap();
            }
        }
        let mut extra = vec!["--rate-limit".to_string(), "0".into()];
        if let Some(db) = &db {
            extra.extend(["--db".to_string(), db.url.clone()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (proc, url) = cluster::tls_control_plane(
            &warden_bin(),
            &format!("control-plane-{r}"),
            cluster::free_port(),
            &data,
            &extra,
            &logs,
        );
        if r == 0 {
            token = std::fs::read_to_string(data.join("admin.token"))
                .unwrap()
                .trim()
                .to_string();
        }
        procs.push(proc);
        urls.push(url);
    }
    let ca = first.join("ca.pem");
    let ch = tls_connect(&urls[0], &ca, None).await.unwrap();
    for n in 0..2 {
        let join = pb::node_service_client::NodeServiceClient::new(ch.clone())
            .create_join_token(with_token(
                pb::CreateJoinTokenRequest {
                    ttl_ms: 600_000,
                    labels: Default::default(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .join_token;
        // With two replicas, each node starts on its own and knows both.
        let mut mine = urls.clone();
        mine.rotate_left(n % urls.len());
        let ca_arg = ca.display().to_string();
        let slots_arg = (slots / 2).to_string();
        procs.push(cluster::node(
            &warden_bin(),
            &mine.join(","),
            &format!("{name}-node-{n}"),
            dir,
            &[
                "--ca",
                &ca_arg,
                "--join-token",
                &join,
                "--slots",
                &slots_arg,
            ],
            &logs,
        ));
    }
    let cluster = Processes {
        name,
        urls,
        ca,
        token,
        _procs: procs,
        _db: db,
    };
    let published = std::process::Command::new(warden_bin())
        .args(["publish", examples::HELLO, "hello@1", "--control-plane"])
        .arg(&cluster.urls[0])
        .arg("--ca")
        .arg(&cluster.ca)
        .args(["--token", &cluster.token])
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    // Warm: both nodes up, the component fetched and compiled on each.
    cluster.throughput(40).await;
    cluster
}

impl Processes {
    /// Submits `runs` runs in batches of 500 (over the replicas in turn)
    /// and waits until none is queued, leased or running; runs/s.
    async fn throughput(&self, runs: usize) -> f64 {
        let mut channels = Vec::new();
        for url in &self.urls {
            channels.push(tls_connect(url, &self.ca, None).await.unwrap());
        }
        let started = Instant::now();
        let mut submitted = 0;
        let mut batch_no = 0;
        while submitted < runs {
            let n = (runs - submitted).min(500);
            let batch = (submitted..submitted + n)
                .map(|i| pb::SubmitRequest {
                    agent: "hello@1".into(),
                    input: format!("{{\"i\":{i}}}"),
                    ..Default::default()
                })
                .collect();
            let ch = channels[batch_no % channels.len()].clone();
            pb::run_service_client::RunServiceClient::new(ch)
                .submit_batch(with_token(
                    pb::SubmitBatchRequest { runs: batch },
                    &self.token,
                ))
                .await
                .unwrap();
            submitted += n;
            batch_no += 1;
        }
        let mut client = pb::run_service_client::RunServiceClient::new(channels[0].clone());
        // Polled lightly: the poll's own reads cost the store too.
        loop {
            let mut pending = false;
            for s in [RunState::Queued, RunState::Leased, RunState::Running] {
                if pending {
                    break;
                }
                pending = self.any_in(&mut client, s).await;
            }
            if !pending {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "runs did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        assert!(
            !self.any_in(&mut client, RunState::Failed).await,
            "a run failed"
        );
        runs as f64 / elapsed.as_secs_f64()
    }

    /// Whether any run is in `state` (one list call of one run).
    async fn any_in(
        &self,
        client: &mut pb::run_service_client::RunServiceClient<tonic::transport::Channel>,
        state: RunState,
    ) -> bool {
        let page = client
            .list(with_token(
                pb::ListRunsRequest {
                    run_state: pb::RunState::from(state) as i32,
                    limit: 1,
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner();
        !page.runs.is_empty()
    }
}

/// The three stores as users run them: separate processes, TLS.
async fn processes(
    dir: &Path,
    server: &str,
    runs: usize,
    slots: u32,
    pairs: usize,
    statements: bool,
) {
    let clusters = [
        start_processes("sqlite", &dir.join("sqlite"), None, 1, slots).await,
        start_processes("postgres-1", &dir.join("pg1"), Some(server), 1, slots).await,
        start_processes("postgres-2", &dir.join("pg2"), Some(server), 2, slots).await,
    ];
    let mut rates = vec![Vec::new(); clusters.len()];
    for pair in 0..pairs {
        for (i, c) in clusters.iter().enumerate() {
            // The first round of each PostgreSQL setup, alone.
            let counted = statements && pair == 0 && c._db.is_some();
            if counted {
                reset_statements(c._db.as_ref().unwrap());
            }
            let rate = c.throughput(runs).await;
            println!("processes round {pair} {}: {rate:.0} runs/s", c.name);
            if counted {
                print_statements(c._db.as_ref().unwrap());
            }
            rates[i].push(rate);
        }
    }
    let base = median(rates[0].clone());
    for (i, c) in clusters.iter().enumerate() {
        let rate = median(rates[i].clone());
        println!(
            "processes {}: median {rate:.0} runs/s ({:.2} x sqlite)",
            c.name,
            rate / base
        );
    }
}

/// Runs `f` on a connection to `db` with `pg_stat_statements` loaded, on a
/// thread of its own (the sync client must not block the runtime).
fn with_statements(
    db: &warden_testkit::PostgresDatabase,
    f: impl FnOnce(&mut postgres::Client) + Send + 'static,
) {
    let url = db.url.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .unwrap();
        f(&mut c);
    })
    .join()
    .unwrap();
}

/// Forgets the statements counted so far (in every database).
fn reset_statements(db: &warden_testkit::PostgresDatabase) {
    with_statements(db, |c| {
        c.batch_execute("SELECT pg_stat_statements_reset()")
            .unwrap();
    });
}

/// The statements that took PostgreSQL the most time in `db`, and the
/// calls and time of all of them.
fn print_statements(db: &warden_testkit::PostgresDatabase) {
    with_statements(db, |c| {
        let mine = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";
        let rows = c
            .query(
                &format!(
                    "SELECT calls, total_exec_time, mean_exec_time,
                            left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                     FROM pg_stat_statements WHERE {mine}
                     ORDER BY total_exec_time DESC LIMIT 25"
                ),
                &[],
            )
            .unwrap();
        for r in rows {
            let (calls, total, mean, q): (i64, f64, f64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            println!("{calls:>9} calls {total:>9.0} ms total {mean:>7.3} ms mean  {q}");
        }
        let all = c
            .query_one(
                &format!(
                    "SELECT sum(calls)::bigint, sum(total_exec_time), sum(total_plan_time)
                     FROM pg_stat_statements WHERE {mine}"
                ),
                &[],
            )
            .unwrap();
        let (calls, exec, plan): (i64, f64, f64) = (all.get(0), all.get(1), all.get(2));
        println!("all statements: {calls} calls, {exec:.0} ms executing, {plan:.0} ms planning");
    });
}
