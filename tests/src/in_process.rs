//! A control plane and nodes in this process, talking real gRPC over
//! loopback: for tests and benchmarks that need no process boundary.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use warden_control_plane::{ControlPlane, ControlPlaneConfig, Store};
use warden_host::Sandbox;
use warden_node::{NodeAgent, NodeOptions};

/// A component validator that accepts anything: in-process control planes
/// here are published only known-good components.
struct AcceptAll;

impl warden_control_plane::ComponentValidator for AcceptAll {
    fn validate(&self, _: &str, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// A control plane serving on a free loopback port, its database under
/// `dir`, accepting any published component. Returns it and its URL.
pub async fn control_plane(dir: &Path) -> (ControlPlane, String) {
    control_plane_on(Store::open(&dir.join("cp.sqlite3")).unwrap()).await
}

/// [`control_plane`] on `store` (e.g. PostgreSQL, shared by replicas).
pub async fn control_plane_on(store: Store) -> (ControlPlane, String) {
    let cp = ControlPlane::new(store, ControlPlaneConfig::default(), Arc::new(AcceptAll));
    let listener = warden_control_plane::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cp.clone().serve(listener, std::future::pending()));
    (cp, url)
}

/// A control plane serving TLS as `warden control-plane` does by default
/// (its own CA under `dir`, nodes known by the certificates it signs,
/// clients by tokens), with per-token limits high enough for benchmarks.
pub struct SecureControlPlane {
    pub cp: ControlPlane,
    /// https://127.0.0.1:PORT
    pub url: String,
    /// The CA certificate (PEM) to verify it with.
    pub ca: String,
    /// A token of the system role.
    pub token: String,
}

impl SecureControlPlane {
    pub async fn start(dir: &Path) -> Self {
        Self::start_on(dir, None).await
    }

    /// [`Self::start`] on the database `db` names (a PostgreSQL URL, say),
    /// as `--db` does.
    pub async fn start_on(dir: &Path, db: Option<&str>) -> Self {
        // As `warden control-plane` starts: its store, CA and first admin
        // token.
        let store = warden_control_plane::bootstrap::open_store(db, dir, 4).unwrap();
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let (security, _) =
            warden_control_plane::bootstrap::secure(&store, dir, &names, None).unwrap();
        let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let config = ControlPlaneConfig {
            security,
            rate_limit: 1_000_000,
            ..ControlPlaneConfig::default()
        };
        let cp = ControlPlane::new(store, config, Arc::new(AcceptAll));
        let listener = warden_control_plane::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(cp.clone().serve(listener, std::future::pending()));
        SecureControlPlane { cp, url, ca, token }
    }

    /// TLS for node `id`, enrolled now with a fresh join token (its key
    /// and certificate kept under `dir`).
    pub async fn enroll(&self, id: &str, dir: &Path) -> tonic::transport::ClientTlsConfig {
        let (join, _, _) = self
            .cp
            .store()
            .create_join_token(&Default::default(), 600_000)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let identity = warden_node::identity::enroll(
            std::slice::from_ref(&self.url),
            self.client_tls(),
            &join,
            id,
            dir,
        )
        .await
        .unwrap();
        self.client_tls().identity(identity)
    }

    /// TLS that verifies this control plane.
    pub fn client_tls(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca))
    }
}

/// A running node; [`Node::stop`] drains it.
pub struct Node {
    pub agent: Arc<NodeAgent>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts node `id` with `slots` on `sandbox`, its data under `dir`,
    /// pre-warming `prewarm`.
    pub fn start(
        url: &str,
        id: &str,
        sandbox: Sandbox,
        dir: &Path,
        slots: u32,
        prewarm: &[&str],
    ) -> Node {
        Self::start_tls(url, id, sandbox, dir, slots, prewarm, None)
    }

    /// [`Node::start`], over `tls` when given.
    pub fn start_tls(
        url: &str,
        id: &str,
        sandbox: Sandbox,
        dir: &Path,
        slots: u32,
        prewarm: &[&str],
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Node {
        let agent = NodeAgent::new(
            sandbox,
            NodeOptions {
                control_planes: vec![url.to_string()],
                node_id: id.to_string(),
                labels: Default::default(),
                slots,
                drain_grace: Duration::from_secs(5),
                prewarm: prewarm.iter().map(|s| s.to_string()).collect(),
                tls,
            },
            dir,
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = agent.clone().run(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                eprintln!("the node stopped: {e}");
            }
        });
        Node { agent, stop, task }
    }

    /// Drains the node and waits until it has deregistered.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
