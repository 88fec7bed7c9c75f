//! Warden's control plane: a [`Store`] (SQLite) of runs, attempts, leases,
//! nodes and components, and the gRPC services over it (`NodeService`,
//! `LeaseService`, `RunService`, `RegistryService` of `proto/warden/v1`).
//!
//! Guarantees: execution at-least-once; the recording of a result exactly
//! once. Complete/Fail are accepted only for the run's current (attempt,
//! fencing token); a repeat of a recorded result is an idempotent OK, a
//! stale one is rejected. Leases not renewed by their expiry, and the leases
//! of nodes that stop heartbeating, are re-queued with attempt + 1.

mod services;
pub mod store;

pub use store::Store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            default_max_attempts: 3,
            max_component_bytes: 64 << 20,
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
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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

/// Splits `name@version`; the error names the problem.
pub fn split_reference(reference: &str) -> Result<(&str, &str), String> {
    match reference.split_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok((name, version)),
        _ => Err(format!(
            "`{reference}` is not NAME@VERSION (e.g. hello@1.0.0)"
        )),
    }
}

/// Binds `addr` (port 0 for any) for [`ControlPlane::serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
