//! Warden's control plane: a [`Store`] (SQLite, or PostgreSQL shared by
//! several replicas) of runs, attempts, leases,
//! nodes, components and credentials, and the gRPC services over it
//! (`NodeService`, `LeaseService`, `RunService`, `RegistryService`,
//! `AuthService` of `proto/warden/v1`), over TLS with authenticated nodes
//! and clients unless [`Security::Insecure`].
//!
//! Guarantees: execution at-least-once; the recording of a result exactly
//! once. Complete/Fail are accepted only for the run's current (attempt,
//! lease token), from the node it was leased to; a repeat of a recorded result is an idempotent OK, a
//! stale one is rejected. Leases not renewed by their expiry, and the leases
//! of nodes that stop heartbeating, are re-queued with attempt + 1.

pub mod auth;
pub mod bootstrap;
pub mod http_api;
mod metrics;
pub mod pki;
mod queue;
mod reaper;
mod service;
pub mod store;
pub mod webhooks;

pub use auth::Security;
pub use store::Store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Checks that published bytes are a component of the agent world. The
/// control plane does not embed the wasm engine; the binary supplies one.
pub trait ComponentValidator: Send + Sync {
    fn validate(&self, name: &str, bytes: &[u8]) -> Result<(), String>;

    /// As [`Self::validate`], and what the component imports and exports.
    fn inspect(&self, name: &str, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
        self.validate(name, bytes).map(|()| Default::default())
    }
}

/// Components compiled at once (a publish or validate each).
const COMPILES: usize = 2;

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
    /// Largest run input accepted by Submit: a lease carries it to a node,
    /// and a run carries it to every client that reads the run.
    pub max_input_bytes: usize,
    /// How submits of `oci://` references reach their registries.
    pub oci: warden_oci::OciOptions,
    /// TLS and authentication, or neither.
    pub security: Security,
    /// A queued run with a node selector that no live node matches fails
    /// `unschedulable` once it has waited this long.
    pub placement_timeout: Duration,
    /// Requests a second one client token may make (bursts of twice
    /// that); 0: no limit. Over it: `RESOURCE_EXHAUSTED`.
    pub rate_limit: u32,
    /// Streams (watches) one client token may hold open at once.
    pub max_streams_per_token: u32,
    /// Bytes of each attempt's log kept; later lines are dropped, and a
    /// line says where.
    pub max_log_bytes: u64,
    /// The waits between a webhook's tries: one try more than there are
    /// waits.
    pub webhook_retries: Vec<Duration>,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            default_max_attempts: 3,
            max_component_bytes: 64 << 20,
            max_input_bytes: warden_core::wire::DEFAULT_MAX_INPUT_BYTES,
            oci: warden_oci::OciOptions::default(),
            security: Security::default(),
            placement_timeout: Duration::from_secs(600),
            rate_limit: 200,
            max_streams_per_token: 64,
            max_log_bytes: 1 << 20,
            webhook_retries: webhooks::RETRY_DELAYS.to_vec(),
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
    /// Log lines arrived (for followers on this replica; those on others
    /// poll).
    pub(crate) logs_changed: Arc<Notify>,
    pub(crate) validator: Arc<dyn ComponentValidator>,
    /// Compiles (publish, validate) running at once: each takes a core.
    compiles: Arc<tokio::sync::Semaphore>,
    /// name@version -> digest; safe to cache because versions are immutable.
    resolved:
        Arc<std::sync::Mutex<std::collections::HashMap<String, warden_proto::v1::ResolveResponse>>>,
    submits: Arc<queue::SubmitQueue>,
    /// Component fetches served (RegistryService.Fetch).
    fetches: Arc<std::sync::atomic::AtomicU64>,
    limits: Arc<auth::Limits>,
    /// Tenants' quotas as read a moment ago (see [`Self::quotas_cached`]).
    quotas: Arc<
        std::sync::Mutex<std::collections::HashMap<String, (store::Quotas, std::time::Instant)>>,
    >,
    pub(crate) metrics: metrics::ControlPlaneMetrics,
}

/// How long a submit takes a tenant's quotas as read without asking the
/// store again: every read waits for the store's lock behind the write in
/// flight, which cost a quarter of unary submits/s. A change made here
/// applies at once; one made on another replica within this.
const QUOTAS_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl ControlPlane {
    /// Nodes that have heartbeaten within this long (three intervals) get
    /// leases: a paused node's stream may stay open.
    fn alive_window_ms(&self) -> i64 {
        3 * self.config.heartbeat_interval.as_millis() as i64
    }

    /// Nodes that have heartbeaten since this time (Unix ms) are alive.
    fn alive_since(&self) -> i64 {
        store::now_ms() - self.alive_window_ms()
    }

    /// Runs `f`, which compiles a component, off the async workers, at
    /// most [`COMPILES`] at once (more wait their turn).
    pub(crate) async fn compiling<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ControlPlane) -> T + Send + 'static,
    ) -> Result<T, tonic::Status> {
        let _turn = self
            .compiles
            .acquire()
            .await
            .map_err(|_| tonic::Status::unavailable("the control plane is stopping"))?;
        let cp = self.clone();
        tokio::task::spawn_blocking(move || f(&cp))
            .await
            .map_err(|e| tonic::Status::internal(format!("a compile stopped: {e}")))
    }

    pub fn new(
        store: Store,
        config: ControlPlaneConfig,
        validator: Arc<dyn ComponentValidator>,
    ) -> Self {
        ControlPlane {
            store: Arc::new(store),
            config,
            changed: Arc::new(Notify::new()),
            logs_changed: Arc::new(Notify::new()),
            validator,
            compiles: Arc::new(tokio::sync::Semaphore::new(COMPILES)),
            resolved: Arc::default(),
            submits: Arc::default(),
            fetches: Arc::default(),
            limits: Arc::default(),
            quotas: Arc::default(),
            metrics: metrics::ControlPlaneMetrics::default(),
        }
    }

    /// Adds this control plane's metrics to `registry` (for
    /// `--admin-addr`), each named `warden_…`.
    pub fn register_metrics(&self, registry: &mut warden_telemetry::metrics::Registry) {
        self.metrics
            .register(&mut registry.prefixed(warden_core::METRICS_PREFIX));
    }

    /// This control plane as the admin endpoints report on it: ready while
    /// its store answers.
    pub fn health(&self) -> Arc<dyn warden_telemetry::Component> {
        Arc::new(metrics::ControlPlaneHealth(self.clone()))
    }

    /// [`Store::quotas`] of `tenant`, as read at most [`QUOTAS_FOR`] ago.
    pub(crate) fn quotas_cached(&self, tenant: &str) -> Result<store::Quotas, store::StoreError> {
        if let Some((q, at)) = self.quotas.lock().unwrap().get(tenant)
            && at.elapsed() < QUOTAS_FOR
        {
            return Ok(*q);
        }
        let q = self.store.quotas(tenant)?;
        let mut cached = self.quotas.lock().unwrap();
        if cached.len() >= 10_000 {
            cached.clear();
        }
        cached.insert(tenant.to_string(), (q, std::time::Instant::now()));
        Ok(q)
    }

    /// Forgets `tenant`'s cached quotas (they were just set).
    pub(crate) fn forget_quotas(&self, tenant: &str) {
        self.quotas.lock().unwrap().remove(tenant);
    }

    /// [`Store::resolve`], remembering hits.
    pub(crate) fn resolve_cached(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> store::StoreResult<Result<warden_proto::v1::ResolveResponse, bool>> {
        let key = format!("{tenant}/{name}@{version}");
        if let Some(hit) = self.resolved.lock().unwrap().get(&key) {
            return Ok(Ok(hit.clone()));
        }
        let found = self.store.resolve(tenant, name, version)?;
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
        let webhooks = tokio::spawn(self.clone().deliver_webhooks());
        let cp = self.clone();
        let notifications = tokio::spawn(async move {
            let changed = cp.changed.clone();
            cp.store.listen(|| changed.notify_waiters()).await;
        });
        // Small messages (leases, acks, results) must not wait for Nagle.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| conn.and_then(|c| c.set_nodelay(true).map(|()| c)),
        );
        // One message limit for every service and peer (nodes and the CLI
        // decode with the same one).
        let max = warden_core::wire::MAX_MESSAGE_BYTES;
        let mut builder = tonic::transport::Server::builder();
        if let Security::Tls(pki) = &self.config.security {
            builder = builder.tls_config(pki.server_tls())?;
        }
        let result = builder
            .layer(auth::AuthorizeLayer(self.clone()))
            .add_service(
                warden_proto::v1::auth_service_server::AuthServiceServer::new(self.clone()),
            )
            .add_service(NodeServiceServer::new(self.clone()))
            .add_service(LeaseServiceServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(RunServiceServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(RegistryServiceServer::new(self.clone()).max_decoding_message_size(max))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        reaper.abort();
        webhooks.abort();
        notifications.abort();
        result
    }
}

/// Binds `addr` (port 0 for any) for [`ControlPlane::serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
