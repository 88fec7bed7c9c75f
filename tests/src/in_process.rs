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
    let store = Store::open(&dir.join("cp.sqlite3")).unwrap();
    let cp = ControlPlane::new(store, ControlPlaneConfig::default(), Arc::new(AcceptAll));
    let listener = warden_control_plane::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cp.clone().serve(listener, std::future::pending()));
    (cp, url)
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
        let agent = NodeAgent::new(
            sandbox,
            NodeOptions {
                control_plane: url.to_string(),
                node_id: id.to_string(),
                labels: Default::default(),
                slots,
                drain_grace: Duration::from_secs(5),
                prewarm: prewarm.iter().map(|s| s.to_string()).collect(),
                tls: None,
            },
            dir,
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.clone().run(async move {
            let _ = stopped.await;
        }));
        Node { agent, stop, task }
    }

    /// Drains the node and waits until it has deregistered.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}
