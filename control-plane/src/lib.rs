//! Warden's control plane: a [`Store`] (SQLite) of runs, attempts, leases,
//! nodes and components, and the gRPC services over it (`NodeService`,
//! `LeaseService`, `RunService`, `RegistryService` of `proto/warden/v1`).
//!
//! Guarantees: execution at-least-once; the recording of a result exactly
//! once. Complete/Fail are accepted only for the run's current (attempt,
//! fencing token); a repeat of a recorded result is an idempotent OK, a
//! stale one is rejected. Leases not renewed by their expiry, and the leases
//! of nodes that stop heartbeating, are re-queued with attempt + 1.

mod service;
pub mod store;

pub use store::Store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use warden_proto::v1::Run;

/// Checks that published bytes are a component of the agent world. The
/// control plane does not embed the wasm engine; the binary supplies one.
pub trait ComponentValidator: Send + Sync {
    fn validate(&self, name: &str, bytes: &[u8]) -> Result<(), String>;
}

/// Timing of leases and liveness.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// A lease not renewed for this long is re-queued.
    pub lease_ttl: Duration,
    /// How often nodes are told to heartbeat.
    pub heartbeat_interval: Duration,
    /// A node silent for this long is marked lost and its leases re-queued.
    pub node_timeout: Duration,
    /// Attempts per run unless the submit says otherwise.
    pub default_max_attempts: u32,
    /// Largest component accepted by Publish.
    pub max_component_bytes: usize,
    /// How submits of `oci://` references reach their registries.
    pub oci: warden_oci::OciOptions,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            default_max_attempts: 3,
            max_component_bytes: 64 << 20,
            oci: warden_oci::OciOptions::default(),
        }
    }
}

/// The control plane: store, config, and a wake-up for lease streams and
/// watchers when something changes.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) store: Arc<Store>,
    pub(crate) config: ControlPlaneConfig,
    pub(crate) changed: Arc<Notify>,
    pub(crate) validator: Arc<dyn ComponentValidator>,
    /// name@version -> digest; safe to cache because versions are immutable.
    resolved:
        Arc<std::sync::Mutex<std::collections::HashMap<String, warden_proto::v1::ResolveResponse>>>,
    submits: Arc<SubmitQueue>,
    /// Component fetches served (RegistryService.Fetch).
    fetches: Arc<std::sync::atomic::AtomicU64>,
}

type SubmitReply = oneshot::Sender<Result<Run, String>>;

/// Group commit for Submit: runs submitted concurrently are inserted in one
/// transaction. Each submit queues its run, then takes its turn at
/// `commit`; whoever holds the turn inserts everything queued so far.
#[derive(Default)]
struct SubmitQueue {
    queued: std::sync::Mutex<Vec<(store::NewRun, SubmitReply)>>,
    commit: tokio::sync::Mutex<()>,
}

impl ControlPlane {
    pub fn new(
        store: Store,
        config: ControlPlaneConfig,
        validator: Arc<dyn ComponentValidator>,
    ) -> Self {
        ControlPlane {
            store: Arc::new(store),
            config,
            changed: Arc::new(Notify::new()),
            validator,
            resolved: Arc::default(),
            submits: Arc::default(),
            fetches: Arc::default(),
        }
    }

    /// Inserts a queued run, sharing the transaction with concurrent
    /// submits. Runs in its own task, so a client that goes away cannot
    /// leave a run queued but uncommitted.
    pub(crate) async fn insert_run(&self, run: store::NewRun) -> Result<Run, tonic::Status> {
        let (reply, answer) = oneshot::channel();
        self.submits.queued.lock().unwrap().push((run, reply));
        let cp = self.clone();
        tokio::spawn(async move {
            let _turn = cp.submits.commit.lock().await;
            let batch = std::mem::take(&mut *cp.submits.queued.lock().unwrap());
            if batch.is_empty() {
                return; // an earlier turn took ours
            }
            let (runs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match cp.store.insert_runs(&runs) {
                Ok(rows) => {
                    for (row, reply) in rows.into_iter().zip(replies) {
                        let _ = reply.send(Ok(row));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, runs = runs.len(), "cannot insert runs");
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            cp.changed.notify_waiters();
        });
        match answer.await {
            Ok(Ok(run)) => Ok(run),
            Ok(Err(e)) => Err(tonic::Status::internal(e)),
            Err(_) => Err(tonic::Status::internal("the submit was dropped")),
        }
    }

    /// [`Store::resolve`], remembering hits.
    pub(crate) fn resolve_cached(
        &self,
        name: &str,
        version: &str,
    ) -> store::StoreResult<Result<warden_proto::v1::ResolveResponse, bool>> {
        let key = format!("{name}@{version}");
        if let Some(hit) = self.resolved.lock().unwrap().get(&key) {
            return Ok(Ok(hit.clone()));
        }
        let found = self.store.resolve(name, version)?;
        if let Ok(r) = &found {
            self.resolved.lock().unwrap().insert(key, r.clone());
        }
        Ok(found)
    }

    /// How many component fetches (RegistryService.Fetch) this control
    /// plane has served.
    pub fn component_fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves all four services on `listener` until `shutdown` resolves,
    /// with the lease reaper running alongside.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        use warden_proto::v1::{
            lease_service_server::LeaseServiceServer, node_service_server::NodeServiceServer,
            registry_service_server::RegistryServiceServer, run_service_server::RunServiceServer,
        };
        let reaper = tokio::spawn(self.clone().reap());
        // Small messages (leases, acks, results) must not wait for Nagle.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| conn.and_then(|c| c.set_nodelay(true).map(|()| c)),
        );
        let max = self.config.max_component_bytes + (1 << 20);
        let result = tonic::transport::Server::builder()
            .add_service(NodeServiceServer::new(self.clone()))
            .add_service(LeaseServiceServer::new(self.clone()))
            .add_service(RunServiceServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(RegistryServiceServer::new(self.clone()).max_decoding_message_size(max))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        reaper.abort();
        result
    }

    /// Marks silent nodes lost and re-queues expired leases, four times a
    /// second.
    async fn reap(self) {
        let timeout = self.config.node_timeout.as_millis() as i64;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let lost = self.store.mark_lost_nodes(timeout);
            let expired = self.store.expire_leases();
            match (lost, expired) {
                (Ok(lost), Ok(expired)) => {
                    if lost > 0 {
                        tracing::warn!(lost, "nodes stopped heartbeating; marked lost");
                    }
                    if expired > 0 {
                        tracing::info!(expired, "leases expired; runs re-queued");
                        self.changed.notify_waiters();
                    }
                }
                (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "lease reaper"),
            }
        }
    }
}

/// Binds `addr` (port 0 for any) for [`ControlPlane::serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
