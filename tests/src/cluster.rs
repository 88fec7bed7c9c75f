//! Control planes and nodes as separate OS processes (the `warden` CLI), for
//! tests that kill, pause and restart them, plus a gRPC client.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use warden_proto::v1 as pb;

/// Adds `authorization: Bearer TOKEN` to each call that carries none.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Bearer(Some(format!("Bearer {}", token.trim()).parse().unwrap()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0
            && !req.metadata().contains_key("authorization")
        {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// A connection to a control plane, with the token (if any) it sends.
pub type Conn = InterceptedService<Channel, Bearer>;

/// A child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT", "TERM").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// The most memory the process has held (VmHWM), in bytes; `None` once
    /// it has exited.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.child.id())
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The most memory process `pid` has held (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `bin` with `args`, its output in LOG_DIR/NAME.log; returns it
/// with the first line it printed on stdout.
pub fn spawn(bin: &Path, name: &str, args: &[String], log_dir: &Path) -> (Proc, String) {
    spawn_with_env(bin, name, args, &[], log_dir)
}

/// [`spawn`] with these environment variables set.
pub fn spawn_with_env(
    bin: &Path,
    name: &str,
    args: &[String],
    env: &[(&str, String)],
    log_dir: &Path,
) -> (Proc, String) {
    std::fs::create_dir_all(log_dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("{name}.log")))
        .unwrap();
    let mut child = Command::new(bin)
        .args(args)
        .env("WARDEN_LOG", "info")
        .env_remove("WARDEN_CONFIG")
        .env_remove("WARDEN_CONTROL_PLANE_CONFIG")
        .env_remove("WARDEN_CONTROL_PLANE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("warden starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (
        Proc {
            child,
            name: name.to_string(),
        },
        line,
    )
}

/// Starts `warden control-plane` on `port` with its database at `db` (a
/// SQLite file or a PostgreSQL URL) and its data dir at `data`.
pub fn control_plane(
    bin: &Path,
    port: u16,
    db: &str,
    data: &Path,
    extra: &[&str],
    log_dir: &Path,
) -> (Proc, String) {
    control_plane_with_env(bin, port, db, data, extra, &[], log_dir)
}

/// [`control_plane`] with these environment variables set.
pub fn control_plane_with_env(
    bin: &Path,
    port: u16,
    db: &str,
    data: &Path,
    extra: &[&str],
    env: &[(&str, String)],
    log_dir: &Path,
) -> (Proc, String) {
    let mut args = vec![
        "control-plane".to_string(),
        "--insecure".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--db".into(),
        db.to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (proc, line) = spawn_with_env(bin, "control-plane", &args, env, log_dir);
    assert!(line.contains("listening on"), "control plane said: {line}");
    (proc, format!("http://127.0.0.1:{port}"))
}

/// Starts `warden node` named `id` with its own data dir.
pub fn node(bin: &Path, url: &str, id: &str, data: &Path, extra: &[&str], log_dir: &Path) -> Proc {
    node_with_env(bin, url, id, data, extra, &[], log_dir)
}

/// [`node`] with these environment variables set.
pub fn node_with_env(
    bin: &Path,
    url: &str,
    id: &str,
    data: &Path,
    extra: &[&str],
    env: &[(&str, String)],
    log_dir: &Path,
) -> Proc {
    let mut args = vec![
        "node".to_string(),
        "--control-plane".into(),
        url.to_string(),
        "--node-id".into(),
        id.to_string(),
        "--data-dir".into(),
        data.join(id).display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_with_env(bin, id, &args, env, log_dir).0
}

/// A plaintext connection to `url` that sends no token, retried until it
/// connects (at most 10 s).
pub async fn connect(url: &str) -> Conn {
    InterceptedService::new(connect_channel(url, None).await, Bearer::default())
}

/// A TLS connection to `url` that trusts `ca` (a PEM file), presenting
/// `identity` (certificate and key PEM) if given and sending `token` if
/// given; retried until it connects (at most 10 s).
pub async fn connect_tls(
    url: &str,
    ca: &Path,
    identity: Option<(&str, &str)>,
    token: Option<&str>,
) -> Conn {
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()),
    );
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    let bearer = token.map(Bearer::new).unwrap_or_default();
    InterceptedService::new(connect_channel(url, Some(tls)).await, bearer)
}

async fn connect_channel(url: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> Channel {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let start = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(c) => return c,
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("cannot connect to {url}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Publishes a component file as `reference` over gRPC.
pub async fn publish(channel: Conn, path: &str, reference: &str) -> pb::PublishResponse {
    publish_with(channel, path, reference, "").await
}

/// Publishes the component at `path` as `reference` with a capability
/// manifest (TOML; empty for none).
pub async fn publish_with(
    channel: Conn,
    path: &str,
    reference: &str,
    capabilities: &str,
) -> pb::PublishResponse {
    try_publish(channel, path, reference, capabilities)
        .await
        .expect("publish succeeds")
}

/// Publishes the component at `path` as `reference`; the control plane's
/// answer.
pub async fn try_publish(
    channel: Conn,
    path: &str,
    reference: &str,
    capabilities: &str,
) -> Result<pb::PublishResponse, tonic::Status> {
    try_publish_as(channel, path, reference, capabilities, "").await
}

/// [`try_publish`] with `token` (none when empty).
pub async fn try_publish_as(
    channel: Conn,
    path: &str,
    reference: &str,
    capabilities: &str,
    token: &str,
) -> Result<pb::PublishResponse, tonic::Status> {
    let (name, version) = reference.split_once('@').unwrap();
    let bytes = std::fs::read(path).unwrap();
    let chunks = vec![
        pb::PublishChunk {
            part: Some(pb::publish_chunk::Part::Header(pb::PublishHeader {
                name: name.into(),
                version: version.into(),
                size: bytes.len() as u64,
                capabilities: capabilities.to_string(),
                ..Default::default()
            })),
        },
        pb::PublishChunk {
            part: Some(pb::publish_chunk::Part::Data(bytes)),
        },
    ];
    let mut req = tonic::Request::new(tokio_stream::iter(chunks));
    if !token.is_empty() {
        let value = format!("Bearer {token}").parse().unwrap();
        req.metadata_mut().insert("authorization", value);
    }
    pb::registry_service_client::RegistryServiceClient::new(channel)
        .publish(req)
        .await
        .map(tonic::Response::into_inner)
}

/// Submits a run and returns its id.
pub async fn submit(
    channel: Conn,
    agent: &str,
    input: &str,
    edit: impl FnOnce(&mut pb::SubmitRequest),
) -> String {
    let mut req = pb::SubmitRequest {
        agent: agent.into(),
        input: input.into(),
        ..Default::default()
    };
    edit(&mut req);
    pb::run_service_client::RunServiceClient::new(channel)
        .submit(req)
        .await
        .expect("submit succeeds")
        .into_inner()
        .run
        .unwrap()
        .run_id
}

pub async fn get_run(channel: Conn, id: &str) -> pb::Run {
    pb::run_service_client::RunServiceClient::new(channel)
        .get(pb::GetRunRequest { run_id: id.into() })
        .await
        .expect("get succeeds")
        .into_inner()
}

/// Polls until `pred` holds for the run, or panics after `limit`.
pub async fn wait_run(
    channel: Conn,
    id: &str,
    limit: Duration,
    pred: impl Fn(&pb::Run) -> bool,
) -> pb::Run {
    let start = Instant::now();
    loop {
        // The control plane may be restarting: retry failed calls.
        let got = pb::run_service_client::RunServiceClient::new(channel.clone())
            .get(pb::GetRunRequest { run_id: id.into() })
            .await;
        if let Ok(run) = got {
            let run = run.into_inner();
            if pred(&run) {
                return run;
            }
            if start.elapsed() > limit {
                panic!("run {id} did not get there in {limit:?}; now: {run:?}");
            }
        } else if start.elapsed() > limit {
            panic!("run {id}: control plane unreachable for {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test's scratch dir for logs (kept on failure for reading).
pub fn log_dir(tmp: &Path) -> PathBuf {
    tmp.join("logs")
}

/// A run's state (panics if the control plane sent none).
#[track_caller]
pub fn state(run: &pb::Run) -> warden_core::RunState {
    warden_core::RunState::from_proto(run.run_state)
        .unwrap_or_else(|| panic!("run {} has no state", run.run_id))
}

/// Polls until the run is in `want`, or panics after `limit`.
pub async fn wait_state(
    channel: Conn,
    id: &str,
    limit: Duration,
    want: warden_core::RunState,
) -> pb::Run {
    wait_run(channel, id, limit, |r| {
        warden_core::RunState::from_proto(r.run_state) == Some(want)
    })
    .await
}

/// Polls until the run has ended, or panics after `limit`.
pub async fn wait_ended(channel: Conn, id: &str, limit: Duration) -> pb::Run {
    wait_run(channel, id, limit, |r| {
        warden_core::RunState::from_proto(r.run_state).is_some_and(|s| s.is_terminal())
    })
    .await
}

/// Starts `warden dev` (control plane and node in one process) on a free
/// loopback port with its data under `data`; returns it and its URL.
pub fn dev(bin: &Path, data: &Path, extra: &[&str], log_dir: &Path) -> (Proc, String) {
    let mut args = vec![
        "dev".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (proc, line) = spawn(bin, "dev", &args, log_dir);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("warden dev said: {line}"))
        .to_string();
    (proc, url)
}

/// An attempt's outcome (panics if the control plane sent none).
#[track_caller]
pub fn outcome(attempt: &pb::Attempt) -> warden_core::AttemptOutcome {
    warden_core::AttemptOutcome::from_proto(attempt.attempt_outcome)
        .unwrap_or_else(|| panic!("attempt {} has no outcome", attempt.attempt))
}

/// A node's state (panics if the control plane sent none).
#[track_caller]
pub fn node_state(node: &pb::NodeInfo) -> warden_core::NodeState {
    warden_core::NodeState::from_proto(node.node_state)
        .unwrap_or_else(|| panic!("node {} has no state", node.node_id))
}

/// Starts `warden control-plane` with TLS (its default) on `port`, its
/// database, CA and first admin token under `data`. Returns the process,
/// its `https` URL and the admin token.
pub fn secure_control_plane(
    bin: &Path,
    port: u16,
    data: &Path,
    extra: &[&str],
    log_dir: &Path,
) -> (Proc, String, String) {
    let (proc, url) = tls_control_plane(bin, "control-plane", port, data, extra, log_dir);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    (proc, url, token.trim().to_string())
}

/// Starts `warden control-plane` (process `name`) with TLS on `port` and
/// its data dir at `data`; returns the process and its `https` URL. (A
/// replica joining another's database writes no admin token.)
pub fn tls_control_plane(
    bin: &Path,
    name: &str,
    port: u16,
    data: &Path,
    extra: &[&str],
    log_dir: &Path,
) -> (Proc, String) {
    let mut args = vec![
        "control-plane".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (proc, line) = spawn(bin, name, &args, log_dir);
    assert!(
        line.contains("listening on https://"),
        "control plane said: {line}"
    );
    (proc, format!("https://127.0.0.1:{port}"))
}

/// A TLS channel to `url` that trusts `ca` (a PEM file), presenting
/// `identity` (certificate and key PEM) if given.
pub async fn tls_connect(
    url: &str,
    ca: &Path,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()),
    );
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// `msg` as a request carrying `token`.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// The most runs among `runs` that held a lease at one moment: each
/// attempt holds one from when it was leased until its result was
/// recorded (both on the control plane's clock), half open.
pub fn most_at_once<'a>(runs: impl Iterator<Item = &'a pb::Run>) -> usize {
    let mut edges = Vec::new();
    for run in runs {
        for a in &run.attempts {
            assert!(a.ended_unix_ms >= a.started_unix_ms, "{run:?}");
            edges.push((a.started_unix_ms, 1i32));
            edges.push((a.ended_unix_ms, -1));
        }
    }
    // At equal times an end comes before a start.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// `GET path` from the HTTP server at loopback `addr` (an admin port):
/// its status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer from {addr}{path}: {answer}"));
    (status, body.to_string())
}

/// Polls `GET path` at `addr` until `pred` holds of its status and body;
/// panics after `limit`, showing the last answer.
pub async fn wait_http(
    addr: &str,
    path: &str,
    limit: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let start = Instant::now();
    loop {
        let (status, body) = match std::net::TcpStream::connect(addr) {
            Ok(_) => http_get(addr, path),
            Err(e) => (0, e.to_string()),
        };
        if pred(status, &body) {
            return (status, body);
        }
        assert!(
            start.elapsed() < limit,
            "GET {addr}{path} still answers {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
