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
    /// A run service client that reads messages as large as a control
    /// plane may send.
    pub(crate) async fn runs(
        &self,
    ) -> anyhow::Result<warden_proto::v1::run_service_client::RunServiceClient<Channel>> {
        Ok(
            warden_proto::v1::run_service_client::RunServiceClient::new(self.channel().await?)
                .max_decoding_message_size(warden_core::wire::MAX_MESSAGE_BYTES),
        )
    }

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
