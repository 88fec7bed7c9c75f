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
mod control;
mod data_dir;
mod execute;
pub mod identity;
mod logs;
mod metrics;
mod report;
mod upstream;

use components::ComponentStore;
pub use data_dir::DataDirLock;
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
    /// This node's hold on its data dir, let go when [`NodeAgent::run`]
    /// ends (tasks it aborted may hold the agent a moment longer).
    data_dir_lock: std::sync::Mutex<Option<DataDirLock>>,
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
    /// A node with its data in `data_dir`, which it locks
    /// ([`DataDirLock`]): a second node there is refused.
    pub fn new(
        sandbox: Sandbox,
        opts: NodeOptions,
        data_dir: &Path,
    ) -> Result<Arc<Self>, NodeError> {
        let lock = DataDirLock::acquire(data_dir)?;
        Self::with_lock(sandbox, opts, data_dir, lock)
    }

    /// [`NodeAgent::new`] with `data_dir` locked already (before the node
    /// enrolled, say).
    pub fn with_lock(
        sandbox: Sandbox,
        opts: NodeOptions,
        data_dir: &Path,
        lock: DataDirLock,
    ) -> Result<Arc<Self>, NodeError> {
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
            data_dir_lock: std::sync::Mutex::new(Some(lock)),
        }))
    }

    /// Adds this node's metrics to `registry` (for `--admin-addr`): its
    /// own named `warden_…`, the GenAI ones as OpenTelemetry names them.
    pub fn register_metrics(&self, registry: &mut warden_telemetry::metrics::Registry) {
        self.sandbox.metrics().register(registry);
        self.metrics
            .register(&mut registry.prefixed(warden_core::METRICS_PREFIX));
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

    /// Runs the node until `shutdown` resolves, then drains; or until the
    /// control plane refuses this node ([`NodeError::Refused`]: revoked),
    /// without draining, as nothing it ran could be reported. Then lets go
    /// of the data dir: another node may take it.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Some(queues) = self.queues.lock().unwrap().take() else {
            tracing::error!("NodeAgent::run called twice");
            return Ok(());
        };
        let result = self.clone().serve(queues, shutdown).await;
        self.data_dir_lock.lock().unwrap().take();
        result
    }

    async fn serve(
        self: Arc<Self>,
        (acks, results, log_lines): Queues,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
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
}
