//! End-to-end throughput and latency: a control plane and one node on this
//! machine (in one process, talking real gRPC over loopback), N `hello` runs
//! submitted by concurrent clients. Reports completed runs/s and
//! submit→complete latency p50/p99 (from the control plane's own records).
//! Two clusters side by side in one run: plaintext without authentication
//! (`--insecure`), and TLS with an enrolled node (mTLS) and a client token,
//! as `warden control-plane` runs by default; then the ratio. Then tracing:
//! the plaintext cluster with every span exported over OTLP/HTTP (100%
//! sampled, to a loopback receiver in a process of its own, a collector's
//! place, that decodes them only at the end) against tracing off, in
//! turns.
//!
//! Run: `cargo bench -p warden-tests --bench e2e -- [RUNS] [SLOTS] [PAIRS]`;
//! `WARDEN_E2E_ONLY=tls` or `=tracing` runs one of the two comparisons;
//! `WARDEN_E2E_ONLY=http` runs only the HTTP API's `POST /v1/runs` against
//! gRPC Submit on the TLS cluster, in turns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use warden_control_plane::ControlPlane;
use warden_core::RunState;
use warden_proto::v1 as pb;
use warden_tests::cluster::state;
use warden_tests::cluster::{Bearer, Conn, connect};
use warden_tests::in_process::{Node, SecureControlPlane};
use warden_tests::{examples, sandbox_with};

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

type Runs = pb::run_service_client::RunServiceClient<Conn>;

/// One control plane with one node, and how a client reaches it.
struct Cluster {
    name: &'static str,
    cp: ControlPlane,
    /// Sends the client token, if any.
    channel: Conn,
    /// The HTTP API (TLS cluster only): its base URL, a client that trusts
    /// its CA, the token.
    http: Option<(String, reqwest::Client, String)>,
    _node: Node,
}

impl Cluster {
    fn runs(&self) -> Runs {
        pb::run_service_client::RunServiceClient::new(self.channel.clone())
            .max_decoding_message_size(80 << 20)
    }

    async fn start(dir: &std::path::Path, slots: u32, secure: bool) -> Cluster {
        let node_dir = dir.join("node");
        let sandbox = sandbox_with(&node_dir, |c| c.engine.pool_slots = slots);
        let cluster = if secure {
            let s = SecureControlPlane::start(dir).await;
            let tls = s.enroll("bench-node", &node_dir).await;
            let node = Node::start_tls(
                &s.url,
                "bench-node",
                sandbox,
                &node_dir,
                slots,
                &[],
                Some(tls),
            );
            let channel = tonic::transport::Endpoint::from_shared(s.url.clone())
                .unwrap()
                .tls_config(s.client_tls())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let listener = warden_control_plane::bind("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let base = format!("https://{}", listener.local_addr().unwrap());
            let api = warden_control_plane::http_api::HttpApi::new(s.cp.clone()).unwrap();
            tokio::spawn(api.serve(listener, std::future::pending()));
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(s.ca.as_bytes()).unwrap())
                .build()
                .unwrap();
            Cluster {
                name: "tls+auth",
                cp: s.cp,
                channel: InterceptedService::new(channel, Bearer::new(&s.token)),
                http: Some((base, client, s.token)),
                _node: node,
            }
        } else {
            let (cp, url) = warden_tests::in_process::control_plane(dir).await;
            let node = Node::start(&url, "bench-node", sandbox, &node_dir, slots, &[]);
            Cluster {
                name: "plaintext",
                cp,
                channel: connect(&url).await,
                http: None,
                _node: node,
            }
        };
        // Publish, then warm up: compile and load the component on the node.
        warden_tests::cluster::publish(cluster.channel.clone(), examples::HELLO, "hello@1").await;
        let mut runs = cluster.runs();
        let warm = runs
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
        let started = Instant::now();
        loop {
            let r = runs
                .get(pb::GetRunRequest {
                    run_id: warm.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if state(&r) == RunState::Succeeded {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "warm-up run: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os(RECEIVER).is_some() {
        return serve_receiver();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let slots: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);

    let only = std::env::var("WARDEN_E2E_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let plain = Cluster::start(&dir.path().join("plain"), slots, false).await;
    if only == "http" {
        return http_against_grpc(&dir.path().join("tls"), runs, slots, reps).await;
    }
    if only != "tracing" {
        tls_against_plaintext(&plain, &dir.path().join("tls"), runs, slots, reps).await;
    }
    if only != "tls" {
        tracing_on_against_off(&plain, runs, reps).await;
    }
}

/// The TLS cluster (mTLS node, client token) against `plain`.
async fn tls_against_plaintext(
    plain: &Cluster,
    dir: &std::path::Path,
    runs: usize,
    slots: u32,
    reps: usize,
) {
    let secure = Cluster::start(dir, slots, true).await;
    // Side by side in one process: the same runs submitted one per call
    // (8 concurrent clients), then in batches (SubmitBatch, 8 clients); each
    // on the plaintext cluster, then on the TLS one, `reps` times in turn
    // (the machine is shared: pairs taken close together, then the median).
    for mode in [Submit::Unary, Submit::Batch(250)] {
        let mut ratios = Vec::new();
        for _ in 0..reps {
            let a = round(plain, runs, mode).await;
            let b = round(&secure, runs, mode).await;
            ratios.push(b.rate / a.rate);
        }
        report(&format!("e2e {mode:?}: tls+auth / plaintext"), ratios);
    }
}

/// On the TLS cluster: runs submitted one per `POST /v1/runs` against one
/// per gRPC Submit, 8 clients each, in turns.
async fn http_against_grpc(dir: &std::path::Path, runs: usize, slots: u32, reps: usize) {
    let secure = Cluster::start(dir, slots, true).await;
    let mut ratios = Vec::new();
    for rep in 0..reps {
        // Which goes first alternates, so neither always meets the bigger
        // store.
        let mut sides = [Measured::default(); 2];
        for http in [rep % 2 == 1, rep % 2 == 0] {
            let mode = if http { Submit::Http } else { Submit::Unary };
            sides[http as usize] = round(&secure, runs, mode).await;
        }
        ratios.push(sides[1].rate / sides[0].rate);
    }
    report("e2e: HTTP POST /v1/runs / gRPC Submit (tls+auth)", ratios);
}

/// `plain` with every span exported against tracing off.
async fn tracing_on_against_off(plain: &Cluster, runs: usize, reps: usize) {
    // Tracing fully on (every span exported) against off, on the same
    // cluster in turns. Off: Warden's spans are filtered out before they
    // are made (a flag read per span; without OTEL_* variables there is
    // not even that).
    let mut receiver = Receiver::start();
    let endpoint = format!("http://{}", receiver.http);
    let vars = move |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        // Room for bursts, so no span is dropped (the count at the end
        // shows it), sent in batches of 512.
        "OTEL_BSP_MAX_QUEUE_SIZE" => Some("65536".to_string()),
        "OTEL_BSP_SCHEDULE_DELAY" => Some("200".to_string()),
        // The rest (a sampler, say) as the environment has it.
        name => std::env::var(name).ok(),
    };
    let tracing = warden_telemetry::trace::Tracing::from_vars("warden-bench", vars)
        .unwrap()
        .unwrap();
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(tracing.layer().with_filter(Toggle))
            .init();
    }
    for mode in [Submit::Unary, Submit::Batch(250)] {
        let (mut ratios, mut cpu) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            // Each round adds its runs to the store: which side goes first
            // alternates, so neither always meets the bigger store.
            let mut sides = [Measured::default(); 2];
            for on in [rep % 2 == 1, rep % 2 == 0] {
                TRACING.store(on, Ordering::Relaxed);
                sides[on as usize] = round(plain, runs, mode).await;
            }
            let [off, on] = sides;
            ratios.push(on.rate / off.rate);
            cpu.push(on.cpu_us / off.cpu_us);
        }
        TRACING.store(false, Ordering::Relaxed);
        report(&format!("e2e {mode:?}: tracing on / off"), ratios);
        report_ratios(&format!("e2e {mode:?}: tracing on / off CPU per run"), cpu);
    }
    tokio::task::spawn_blocking(move || tracing.shutdown())
        .await
        .unwrap();
    let spans = receiver.finish();
    let traced_runs = 2 * reps * runs;
    println!(
        "spans received: {spans} ({:.1} per traced run)",
        spans as f64 / traced_runs as f64
    );
}

/// Set in the environment of the bench run as the OTLP receiver.
const RECEIVER: &str = "WARDEN_E2E_OTLP_RECEIVER";

/// The bench as the OTLP receiver: prints its OTLP/HTTP address, keeps
/// what it gets until its stdin closes, then prints the count of spans.
fn serve_receiver() {
    use std::io::Read;
    let receiver = warden_tests::otlp::OtlpReceiver::start();
    println!("{}", receiver.http);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    println!("{}", receiver.spans().len());
}

/// The OTLP receiver, in a process of its own (as a collector would be):
/// the CPU time measured is the cluster's.
struct Receiver {
    child: std::process::Child,
    out: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    http: String,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(RECEIVER, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let http = out.next().unwrap().unwrap();
        Receiver { child, out, http }
    }

    /// Stops the receiver: how many spans it got.
    fn finish(&mut self) -> usize {
        drop(self.child.stdin.take());
        let count = self.out.next().unwrap().unwrap().parse().unwrap();
        self.child.wait().unwrap();
        count
    }
}

/// Whether Warden's spans are made and exported now.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Lets Warden's spans through while [`TRACING`] is set. Only their call
/// sites ask it per span: every other call site (the debug events of
/// Warden, hyper, h2, ...) is never enabled, as under the static filter a
/// node or control plane uses.
struct Toggle;

impl<S> tracing_subscriber::layer::Filter<S> for Toggle {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        TRACING.load(Ordering::Relaxed) && warden_telemetry::trace::exported(meta)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if warden_telemetry::trace::exported(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

/// Prints the median of `ratios` (runs/s of one side over the other).
fn report(what: &str, ratios: Vec<f64>) {
    report_ratios(&format!("{what} runs/s,"), ratios)
}

/// Prints the median of `ratios`.
fn report_ratios(what: &str, mut ratios: Vec<f64>) {
    ratios.sort_by(f64::total_cmp);
    println!(
        "{what} median of {} pairs = {:.2} (each: {})",
        ratios.len(),
        ratios[ratios.len() / 2],
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[derive(Debug, Clone, Copy)]
enum Submit {
    Unary,
    Batch(usize),
    /// One run per `POST /v1/runs` (HTTP/1.1 over TLS, kept alive).
    Http,
}

/// CPU time this process has used (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// What a round measured.
#[derive(Clone, Copy, Default)]
struct Measured {
    /// Completed runs per second.
    rate: f64,
    /// CPU time the process used per run (every part of the cluster and
    /// the clients together), in microseconds.
    cpu_us: f64,
}

/// Submits `runs` runs to `cluster` and waits for them.
async fn round(cluster: &Cluster, runs: usize, mode: Submit) -> Measured {
    let cp = &cluster.cp;
    let clients = 8;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = cluster.runs();
        let http = cluster.http.clone();
        tasks.push(tokio::spawn(async move {
            let request = |i: usize| pb::SubmitRequest {
                agent: "hello@1".into(),
                input: format!("{{\"i\":{i}}}"),
                ..Default::default()
            };
            let mine: Vec<usize> = (c..runs).step_by(clients).collect();
            let mut ids = Vec::new();
            match mode {
                Submit::Unary => {
                    for i in mine {
                        let run = client.submit(request(i)).await.unwrap().into_inner();
                        ids.push(run.run.unwrap().run_id);
                    }
                }
                Submit::Http => {
                    let (base, http, token) = http.expect("the HTTP API runs on the TLS cluster");
                    let url = format!("{base}/v1/runs");
                    for i in mine {
                        let answer = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(format!("{{\"agent\":\"hello@1\",\"input\":{{\"i\":{i}}}}}"))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(answer.status(), 201);
                        let run: serde_json::Value = answer.json().await.unwrap();
                        ids.push(run["run_id"].as_str().unwrap().to_string());
                    }
                }
                Submit::Batch(size) => {
                    for chunk in mine.chunks(size) {
                        let req = pb::SubmitBatchRequest {
                            runs: chunk.iter().map(|&i| request(i)).collect(),
                        };
                        let batch = client.submit_batch(req).await.unwrap().into_inner();
                        ids.extend(batch.runs.into_iter().map(|r| r.run_id));
                    }
                }
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    let submitted = started.elapsed();

    // Wait for all to finish (counting through an index: cheap).
    loop {
        let store = cp.store();
        use warden_core::RunState;
        let pending: u64 = [RunState::Queued, RunState::Leased, RunState::Running]
            .into_iter()
            .map(|s| store.count_runs(s).unwrap())
            .sum();
        if pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            panic!("runs did not finish in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let cpu_us = (cpu_time() - cpu_before).as_secs_f64() * 1e6 / runs as f64;
    let mut latencies: Vec<i64> = ids
        .iter()
        .map(|id| {
            let r = cp.store().get_run(None, id).unwrap().unwrap();
            assert_eq!(state(&r), RunState::Succeeded);
            r.updated_unix_ms - r.created_unix_ms
        })
        .collect();
    assert_eq!(latencies.len(), runs);
    latencies.sort_unstable();
    let rate = runs as f64 / elapsed.as_secs_f64();
    println!(
        "e2e {mode:?} {}: {runs} runs in {:.2} s = {:.0} runs/s completed, {cpu_us:.0} µs CPU per run; \
         submit phase {:.2} s ({:.0} submits/s); submit->complete latency p50 {} ms, p99 {} ms, max {} ms",
        cluster.name,
        elapsed.as_secs_f64(),
        rate,
        submitted.as_secs_f64(),
        runs as f64 / submitted.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
    );
    Measured { rate, cpu_us }
}
