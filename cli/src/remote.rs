//! How commands reach a control plane: [`Remote`] (the `--control-plane`
//! flag) and gRPC statuses as user-facing errors.

use anyhow::Context;
use clap::Args;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub(crate) struct Remote {
    /// The control plane's URL.
    #[arg(
        long,
        env = "WARDEN_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    control_plane: String,
}

impl Remote {
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        tonic::transport::Endpoint::from_shared(self.control_plane.clone())
            .with_context(|| format!("invalid control plane URL `{}`", self.control_plane))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                // The transport error nests the same cause several times; say the root once.
                let mut root: &dyn std::error::Error = &e;
                while let Some(next) = root.source() {
                    root = next;
                }
                anyhow::anyhow!(
                    "cannot reach the control plane at {}: {root} (is `warden control-plane` or `warden dev` running?)",
                    self.control_plane
                )
            })
    }
}

/// A gRPC status as a user-facing error.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}
