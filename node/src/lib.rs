//! `warden node`: [`NodeAgent`] registers with the control plane, heartbeats,
//! pulls leases (never more in flight than its slots), runs each in the
//! [`Sandbox`], renews leases while running, and reports Complete/Fail with
//! usage. Acks and results are batched: whatever is waiting goes in the
//! next call, one call in flight each, so a busy node makes few RPCs. When
//! the control plane is away it reconnects with exponential backoff and
//! jitter; results of runs that finished meanwhile are retried until
//! recorded. On shutdown it stops pulling, lets in-flight runs finish
//! within a grace period, then fails the rest as `node_shutdown` so they are
//! re-queued at once. A run whose lease expires (its renewals could not
//! reach the control plane in time) is stopped at the lease's
//! `expires_unix_ms` as `lease_lost`, and its result is not reported.

mod capacity;
mod components;
mod data_dir;
pub mod identity;
mod logs;
mod metrics;
mod report;
mod upstream;

use components::ComponentStore;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;
pub use upstream::Upstream;
use warden_core::{Backoff, FailureKind, RenewStatus, RunBudget};
use warden_host::run::{CancelReason, CancelToken, RunOutcome, RunRequest, Sandbox};
use warden_proto::v1 as pb;
use warden_proto::v1::lease_service_client::LeaseServiceClient;
use warden_proto::v1::node_service_client::NodeServiceClient;
use warden_proto::v1::registry_service_client::RegistryServiceClient;

/// How a node presents itself and behaves.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The control plane's replicas, e.g. `http://127.0.0.1:7070`: calls go
    /// to one, and move to the next when it cannot be reached.
    pub control_planes: Vec<String>,
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    /// Runs at once.
    pub slots: u32,
    /// On shutdown, how long in-flight runs may take to finish.
    pub drain_grace: Duration,
    /// Agents to fetch and compile at start (NAME@VERSION or oci://…), so
    /// their first runs start warm.
    pub prewarm: Vec<String>,
    /// For an `https` control plane: its CA, and this node's identity.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid control plane URL `{0}`: {1}")]
    Url(String, String),
    #[error("node identity: {0}")]
    Identity(String),
    #[error("enrollment refused: {0}")]
    Enroll(String),
    /// Another node runs on this data dir.
    #[error("{0}")]
    DataDir(String),
    /// Enrollment found the node id enrolled and not revoked.
    #[error("{0}")]
    AlreadyEnrolled(String),
    /// The control plane refuses this node's certificate (revoked, or
    /// unknown there): nothing this node does can change that.
    #[error(
        "the control plane refuses this node: {0}. Enroll it again: start it with \
         --join-token (`warden nodes join-token create` makes one)"
    )]
    Refused(String),
}

struct ActiveRun {
    lease: pb::LeaseRef,
    cancel: CancelToken,
    /// When the lease expires (control plane clock, Unix ms), as last
    /// granted or renewed.
    expires_unix_ms: Arc<AtomicI64>,
}

/// Most acks or results in one call.
const MAX_BATCH: usize = 512;

/// A result waiting to be reported; `done` fires once the control plane has
/// recorded or rejected it.
struct PendingResult {
    result: pb::RunResult,
    done: oneshot::Sender<()>,
}

/// The receiving ends of the ack and report queues, taken by [`NodeAgent::run`].
type Queues = (
    mpsc::UnboundedReceiver<pb::LeaseRef>,
    mpsc::UnboundedReceiver<PendingResult>,
    mpsc::UnboundedReceiver<logs::Event>,
);

/// A node: one per machine.
pub struct NodeAgent {
    sandbox: Sandbox,
    opts: NodeOptions,
    channel: Upstream,
    components: ComponentStore,
    active: std::sync::Mutex<HashMap<String, ActiveRun>>,
    slots: Arc<Semaphore>,
    accepting: AtomicBool,
    acks: mpsc::UnboundedSender<pb::LeaseRef>,
    results: mpsc::UnboundedSender<PendingResult>,
    logs: logs::LogShipper,
    queues: std::sync::Mutex<Option<Queues>>,
    metrics: metrics::NodeMetrics,
    /// Registered with the control plane (and not told to register again
    /// since).
    registered: AtomicBool,
    /// The lease stream is open.
    stream_up: AtomicBool,
    /// Accelerators found at start (reported at each registration).
    accelerators: std::sync::OnceLock<Vec<pb::Accelerator>>,
    data_dir: std::path::PathBuf,
    /// The control plane's clock minus ours (ms): lease expiries are on
    /// its clock.
    clock_offset_ms: AtomicI64,
    /// Why the control plane refuses this node, once it does: then
    /// [`NodeAgent::run`] ends with it.
    refused: tokio::sync::watch::Sender<Option<String>>,
    /// This node's hold on its data dir.
    _data_dir_lock: data_dir::DataDirLock,
}

/// The node id kept in `data_dir/node-id`, created on first start.
pub fn persistent_node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    warden_core::files::private_dir(data_dir)?;
    let host = sysinfo::System::host_name().unwrap_or_else(|| "node".into());
    let id = format!("{host}-{:08x}", rand::random::<u32>());
    std::fs::write(&path, &id)?;
    Ok(id)
}

impl NodeAgent {
    pub fn new(
        sandbox: Sandbox,
        opts: NodeOptions,
        data_dir: &Path,
    ) -> Result<Arc<Self>, NodeError> {
        let data_dir_lock = data_dir::DataDirLock::acquire(data_dir)?;
        let channel = Upstream::new(&opts.control_planes, opts.tls.as_ref())?;
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let (results, results_rx) = mpsc::unbounded_channel();
        let (logs, logs_rx) = logs::LogShipper::new();
        let metrics = metrics::NodeMetrics::default();
        Ok(Arc::new(NodeAgent {
            acks,
            results,
            logs,
            queues: std::sync::Mutex::new(Some((acks_rx, results_rx, logs_rx))),
            components: ComponentStore::new(
                data_dir.join("blobs"),
                channel.clone(),
                metrics.clone(),
            ),
            slots: Arc::new(Semaphore::new(opts.slots as usize)),
            sandbox,
            opts,
            channel,
            active: Default::default(),
            accepting: AtomicBool::new(true),
            metrics,
            registered: AtomicBool::new(false),
            stream_up: AtomicBool::new(false),
            accelerators: std::sync::OnceLock::new(),
            data_dir: data_dir.to_path_buf(),
            clock_offset_ms: AtomicI64::new(0),
            refused: tokio::sync::watch::Sender::new(None),
            _data_dir_lock: data_dir_lock,
        }))
    }

    /// Adds this node's metrics to `registry` (for `--admin-addr`): its
    /// own named `warden_…`, the GenAI ones as OpenTelemetry names them.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.sandbox.metrics().register(registry);
        self.metrics
            .register(registry.sub_registry_with_prefix(warden_core::METRICS_PREFIX));
    }

    /// This node as the admin endpoints report on it: ready while
    /// registered, with its lease stream open and not draining.
    pub fn health(self: &Arc<Self>) -> Arc<dyn warden_telemetry::Component> {
        Arc::new(metrics::NodeHealth(self.clone()))
    }

    /// Components this node fetched from the registry (not found intact in
    /// its blob cache).
    pub fn component_fetches(&self) -> u64 {
        self.components.fetches()
    }

    /// How long this node's last component load took (from its blob cache
    /// or the registry, verified, compiled or read from the compile cache,
    /// pre-instantiated).
    pub fn last_component_load(&self) -> Duration {
        Duration::from_micros(self.components.last_load_us.load(Ordering::Relaxed))
    }

    /// Fetches and compiles each agent of `opts.prewarm`; failures are
    /// logged, never fatal.
    async fn prewarm(&self) {
        for reference in &self.opts.prewarm {
            let started = std::time::Instant::now();
            let resolved = RegistryServiceClient::new(self.channel.clone())
                .resolve(pb::ResolveRequest {
                    reference: reference.clone(),
                })
                .await;
            let digest = match resolved {
                Ok(r) => r.into_inner().digest,
                Err(e) => {
                    tracing::warn!(%reference, error = %e.message(), "cannot pre-warm");
                    continue;
                }
            };
            match self.components.get(&self.sandbox, &digest).await {
                Ok(_) => {
                    tracing::info!(%reference, %digest, ms = started.elapsed().as_millis() as u64, "pre-warmed")
                }
                Err(e) => tracing::warn!(%reference, error = %e.message, "cannot pre-warm"),
            }
        }
    }

    fn nodes(&self) -> NodeServiceClient<Upstream> {
        NodeServiceClient::new(self.channel.clone())
    }

    fn leases(&self) -> LeaseServiceClient<Upstream> {
        LeaseServiceClient::new(self.channel.clone())
            .max_decoding_message_size(warden_core::wire::MAX_MESSAGE_BYTES)
    }

    fn register_request(&self) -> pb::RegisterRequest {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let accelerators = self.accelerators.get().cloned().unwrap_or_default();
        let mut labels = self.opts.labels.clone();
        if let Some(gpu) = capacity::gpu_label(&accelerators) {
            labels.entry("gpu".into()).or_insert(gpu);
        }
        pb::RegisterRequest {
            node_id: self.opts.node_id.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            labels: labels.into_iter().collect(),
            capacity: Some(pb::NodeCapacity {
                slots: self.opts.slots,
                cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                memory_bytes: sys.total_memory(),
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
                warden_version: env!("CARGO_PKG_VERSION").into(),
                wasmtime_version: warden_host::WASMTIME_VERSION.into(),
                disk_free_bytes: capacity::disk_free(&self.data_dir),
                accelerators,
            }),
        }
    }

    /// Registers, retrying with backoff until the control plane answers.
    async fn register(&self) -> Duration {
        let mut failures = 0;
        loop {
            let sent = warden_core::now_ms();
            match self.nodes().register(self.register_request()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    self.note_clock(sent, r.now_unix_ms);
                    self.registered.store(true, Ordering::SeqCst);
                    tracing::info!(node = %self.opts.node_id, "registered with the control plane");
                    return Duration::from_millis(r.heartbeat_interval_ms.max(100));
                }
                // `run` ends on the refusal; nothing more to do here.
                Err(e) if self.refuses_us(&e) => std::future::pending().await,
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e.message(), "control plane unreachable; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                }
            }
        }
    }

    /// Whether `e` is the control plane refusing this node's certificate
    /// (revoked, unknown there, another node's), not a passing failure:
    /// if so, [`NodeAgent::run`] ends with it.
    fn refuses_us(&self, e: &tonic::Status) -> bool {
        let refused = matches!(
            e.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        );
        if refused {
            self.refused.send_if_modified(|why| {
                if why.is_some() {
                    return false;
                }
                *why = Some(e.message().to_string());
                true
            });
        }
        refused
    }

    /// Runs the node until `shutdown` resolves, then drains; or until the
    /// control plane refuses this node ([`NodeError::Refused`]: revoked),
    /// without draining, as nothing it ran could be reported.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Some((acks, results, log_lines)) = self.queues.lock().unwrap().take() else {
            tracing::error!("NodeAgent::run called twice");
            return Ok(());
        };
        let mut refused = self.refused.subscribe();
        let refusal = async move {
            let why = refused.wait_for(Option::is_some).await;
            NodeError::Refused(why.ok().and_then(|w| w.clone()).unwrap_or_default())
        };
        tokio::pin!(refusal, shutdown);
        let found = capacity::accelerators().await;
        if !found.is_empty() {
            tracing::info!(accelerators = found.len(), "accelerators found");
        }
        let _ = self.accelerators.set(found);
        let interval = tokio::select! {
            biased;
            e = &mut refusal => return Err(e),
            () = &mut shutdown => return Ok(()),
            interval = self.register() => interval,
        };
        self.prewarm().await;
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(interval));
        let renew = tokio::spawn(self.clone().renew_loop());
        let expiry = tokio::spawn(self.clone().expiry_loop());
        let ack = tokio::spawn(self.clone().ack_loop(acks));
        let report = tokio::spawn(self.clone().report_loop(results));
        let ship = tokio::spawn(self.logs.clone().run(log_lines, self.channel.clone()));
        let refused = tokio::select! {
            biased;
            e = &mut refusal => Some(e),
            () = self.clone().pull_loop() => None,
            () = &mut shutdown => None,
        };
        if refused.is_none() {
            self.drain().await;
        }
        for task in [heartbeat, renew, expiry, ack, report, ship] {
            task.abort();
        }
        refused.map_or(Ok(()), Err)
    }

    async fn pull_loop(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            let stream = self
                .leases()
                .pull(pb::PullRequest {
                    node_id: self.opts.node_id.clone(),
                })
                .await;
            let mut stream = match stream {
                Ok(s) => {
                    failures = 0;
                    s.into_inner()
                }
                // `run` ends on the refusal (and must not drain first).
                Err(e) if self.refuses_us(&e) => std::future::pending().await,
                Err(e) => {
                    failures += 1;
                    self.metrics.lease_stream_errors.inc();
                    tracing::warn!(error = %e.message(), "cannot open the lease stream; retrying");
                    tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
                    continue;
                }
            };
            self.stream_up.store(true, Ordering::SeqCst);
            loop {
                match stream.message().await {
                    Ok(Some(lease)) => {
                        self.metrics.leases_received.inc();
                        let span = lease_span(&lease, &self.opts.node_id);
                        tokio::spawn(self.clone().execute(lease).instrument(span));
                    }
                    Ok(None) => break,
                    Err(e) if self.refuses_us(&e) => std::future::pending().await,
                    Err(e) => {
                        self.metrics.lease_stream_errors.inc();
                        tracing::warn!(error = %e.message(), "lease stream broke");
                        break;
                    }
                }
            }
            self.stream_up.store(false, Ordering::SeqCst);
            self.metrics.lease_stream_reconnects.inc();
            failures += 1;
            tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
            // The control plane may have restarted or marked us lost.
            self.register().await;
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let active = self.active.lock().unwrap().len() as u32;
            let req = pb::HeartbeatRequest {
                node_id: self.opts.node_id.clone(),
                active_runs: active,
                free_slots: self.slots.available_permits() as u32,
                accepting: self.accepting.load(Ordering::SeqCst),
            };
            let sent = warden_core::now_ms();
            let answer = self.nodes().heartbeat(req).await;
            if let Ok(r) = &answer {
                self.note_clock(sent, r.get_ref().now_unix_ms);
            }
            match answer {
                Ok(r) if r.get_ref().reregister => {
                    self.registered.store(false, Ordering::SeqCst);
                    tracing::warn!("the control plane lost track of this node; registering again");
                    self.register().await;
                }
                Ok(_) => {}
                Err(e) if self.refuses_us(&e) => return,
                Err(e) => tracing::debug!(error = %e.message(), "heartbeat failed"),
            }
        }
    }

    /// Renews every active lease twice a second, and stops runs the control
    /// plane cancelled or no longer leases to us.
    async fn renew_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let leases: Vec<pb::LeaseRef> = self
                .active
                .lock()
                .unwrap()
                .values()
                .map(|a| a.lease.clone())
                .collect();
            if leases.is_empty() {
                continue;
            }
            let req = pb::RenewRequest {
                node_id: self.opts.node_id.clone(),
                leases,
            };
            let Ok(resp) = self.leases().renew(req).await else {
                continue;
            };
            let active = self.active.lock().unwrap();
            for r in resp.into_inner().results {
                let Some(lease) = r.lease else { continue };
                let Some(run) = active.get(&lease.run_id) else {
                    continue;
                };
                match RenewStatus::from_wire(r.renew_status, &r.status) {
                    Some(RenewStatus::Ok) => {}
                    Some(RenewStatus::Cancelled) => run.cancel.cancel(CancelReason::Cancelled),
                    Some(RenewStatus::Lost) => run.cancel.cancel(CancelReason::LeaseLost),
                    None => continue,
                }
                run.expires_unix_ms
                    .fetch_max(r.expires_unix_ms, Ordering::Relaxed);
            }
        }
    }

    /// Records the control plane's clock from an answer to a call sent at
    /// `sent_ms` (our clock); warns once when the two differ by more than a
    /// second.
    fn note_clock(&self, sent_ms: i64, cp_now_ms: i64) {
        let Some(offset) = clock_offset_ms(sent_ms, warden_core::now_ms(), cp_now_ms) else {
            return;
        };
        let before = self.clock_offset_ms.swap(offset, Ordering::Relaxed);
        if offset.abs() > 1_000 && before.abs() <= 1_000 {
            tracing::warn!(
                offset_ms = offset,
                "this node's clock differs from the control plane's; lease expiries use the control plane's"
            );
        }
    }

    /// Stops runs whose lease has expired: renewals did not reach the
    /// control plane in time, which has (or soon will have) re-queued
    /// them, so their results would be stale.
    async fn expiry_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            // The control plane's time now, on whose clock expiries are.
            let now = warden_core::now_ms() + self.clock_offset_ms.load(Ordering::Relaxed);
            for run in self.active.lock().unwrap().values() {
                if run.expires_unix_ms.load(Ordering::Relaxed) <= now {
                    run.cancel.cancel(CancelReason::LeaseLost);
                }
            }
        }
    }

    /// Runs one lease (in its [`lease_span`]) and reports its result.
    async fn execute(self: Arc<Self>, lease: pb::Lease) {
        let received = std::time::Instant::now();
        let Ok(_permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        let lease_ref = pb::LeaseRef {
            run_id: lease.run_id.clone(),
            attempt: lease.attempt,
            token: lease.token,
        };
        let cancel = CancelToken::default();
        self.active.lock().unwrap().insert(
            lease.run_id.clone(),
            ActiveRun {
                lease: lease_ref.clone(),
                cancel: cancel.clone(),
                // 0: a control plane that sets no expiry.
                expires_unix_ms: Arc::new(AtomicI64::new(match lease.expires_unix_ms {
                    0 => i64::MAX,
                    at => at,
                })),
            },
        );
        // Ack without waiting: the run starts at once, and a lease that is no
        // longer current is caught by the renew loop or rejected on report.
        let _ = self.acks.send(lease_ref.clone());
        let tap = self.logs.tap(&lease_ref);
        let outcome = match self
            .components
            .get(&self.sandbox, &lease.component_digest)
            .await
        {
            Ok(component) => {
                let req = RunRequest {
                    // The key-value namespace: a tenant's agents apart from
                    // every other tenant's (the default tenant's keep the
                    // bare name they had before tenants).
                    agent_name: match lease.tenant.as_str() {
                        "" | "default" => lease.agent_name.clone(),
                        tenant => format!("{tenant}/{}", lease.agent_name),
                    },
                    input: lease.input.clone(),
                    budget: RunBudget::from(lease.budget),
                    grant: lease.grant.clone().unwrap_or_default().into(),
                    run_id: lease.run_id.clone(),
                    attempt: lease.attempt,
                    echo_logs: false,
                    log_tap: Some(tap.tap.clone()),
                    cancel: cancel.clone(),
                };
                self.sandbox.run(&component, req).await
            }
            Err(failure) => RunOutcome {
                result: Err(failure),
                usage: Default::default(),
                logs: Vec::new(),
            },
        };
        // Its last lines before its result: a run seen ended has its whole
        // log (kept for attempts whose lease was lost too).
        self.logs.flush(tap, outcome.logs.len() as u64).await;
        self.active.lock().unwrap().remove(&lease.run_id);
        self.count_execution(&lease.tenant, &lease.agent_name, &outcome);
        if cancel.reason() == Some(CancelReason::LeaseLost) {
            tracing::warn!(
                run = %lease.run_id,
                kind = %FailureKind::LeaseLost,
                "lease lost while running (expired, or leased elsewhere); the result is not reported"
            );
            return;
        }
        self.report(lease_ref, outcome, cancel.reason()).await;
        self.metrics
            .lease_processing_duration
            .observe(received.elapsed().as_secs_f64());
    }

    /// Counts a run the sandbox ended (by tenant and agent, never by run).
    fn count_execution(&self, tenant: &str, agent: &str, outcome: &RunOutcome) {
        let m = &self.metrics;
        let label = metrics::AgentLabel {
            tenant: tenant.to_string(),
            agent: agent.to_string(),
        };
        let usage = &outcome.usage;
        m.agent_executions.get_or_create(&label).inc();
        m.agent_execution_duration
            .get_or_create(&label)
            .observe(usage.wall_time_ms / 1000.0);
        if let Err(f) = &outcome.result {
            m.agent_execution_errors
                .get_or_create(&metrics::AgentKindLabel {
                    tenant: tenant.to_string(),
                    agent: agent.to_string(),
                    kind: f.kind.to_string(),
                })
                .inc();
        }
        for (token_type, n) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            if n > 0 {
                m.agent_tokens
                    .get_or_create(&metrics::TokenLabel {
                        tenant: tenant.to_string(),
                        agent: agent.to_string(),
                        token_type,
                    })
                    .inc_by(n);
            }
        }
        if usage.llm_calls > 0 {
            m.agent_cost_usd
                .get_or_create(&label)
                .observe(usage.cost_usd);
        }
        if let Some(fuel) = usage.fuel_used {
            m.agent_fuel_consumed
                .get_or_create(&label)
                .observe(fuel as f64);
        }
        m.agent_peak_memory
            .get_or_create(&label)
            .observe(usage.peak_memory_bytes as f64);
    }

    /// Stops every active run; returns how many.
    fn cancel_all(&self, reason: CancelReason) -> usize {
        let active = self.active.lock().unwrap();
        for run in active.values() {
            run.cancel.cancel(reason);
        }
        active.len()
    }

    /// Stops taking leases, waits for in-flight runs up to the grace
    /// period, fails the rest as `node_shutdown`, and deregisters.
    async fn drain(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let active_runs = self.active.lock().unwrap().len() as u32;
        let _ = self
            .nodes()
            .heartbeat(pb::HeartbeatRequest {
                node_id: self.opts.node_id.clone(),
                active_runs,
                free_slots: 0,
                accepting: false,
            })
            .await;
        let all = self.opts.slots;
        let waited =
            tokio::time::timeout(self.opts.drain_grace, self.slots.acquire_many(all)).await;
        if waited.is_err() {
            let stopped = self.cancel_all(CancelReason::Shutdown);
            tracing::warn!(
                runs = stopped,
                "grace period over; failing the rest as node_shutdown"
            );
            // They report as they stop.
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
        }
        let _ = self
            .nodes()
            .deregister(pb::DeregisterRequest {
                node_id: self.opts.node_id.clone(),
            })
            .await;
        tracing::info!("node drained and deregistered");
    }
}

/// The span of one attempt on this node, from the lease to its report: a
/// child of the run's submit (the lease's traceparent).
fn lease_span(lease: &pb::Lease, node_id: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "lease",
        warden.run_id = lease.run_id.as_str(),
        warden.attempt = lease.attempt,
        warden.agent = lease.agent_name.as_str(),
        warden.tenant = lease.tenant.as_str(),
        warden.node_id = node_id,
        warden.component.source = tracing::field::Empty,
    );
    warden_telemetry::trace::set_parent(&span, &lease.traceparent);
    span
}

/// The control plane's clock minus ours, from a call sent at `sent_ms` and
/// answered at `received_ms` (our clock) with the control plane's
/// `cp_now_ms`, taken to be read halfway. `None` when the control plane
/// sent no time (an older one).
fn clock_offset_ms(sent_ms: i64, received_ms: i64, cp_now_ms: i64) -> Option<i64> {
    (cp_now_ms != 0).then(|| cp_now_ms - (sent_ms + (received_ms - sent_ms) / 2))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_offset_is_measured_at_the_midpoint_of_the_call() {
        use super::clock_offset_ms;
        // Control plane 5 s ahead, a 100 ms round trip.
        assert_eq!(clock_offset_ms(1_000, 1_100, 6_050), Some(5_000));
        // Behind, and in step.
        assert_eq!(clock_offset_ms(10_000, 10_020, 7_010), Some(-3_000));
        assert_eq!(clock_offset_ms(500, 500, 500), Some(0));
        // An older control plane sends no time: no correction.
        assert_eq!(clock_offset_ms(500, 600, 0), None);
    }
}
