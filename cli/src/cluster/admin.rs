//! What an admin server (`--admin-addr`) and the OTLP metrics push of a
//! long-running command report on.

use super::args::AdminArgs;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

/// What an admin server (`--admin-addr`) and the OTLP metrics push report
/// on, gathered as the process starts its parts.
pub(super) struct AdminParts {
    pub(super) addr: Option<SocketAddr>,
    /// The OpenTelemetry service name for metrics pushed over OTLP.
    pub(super) service: &'static str,
    pub(super) registry: warden_telemetry::metrics::Registry,
    pub(super) components: Vec<Arc<dyn warden_telemetry::Component>>,
}

impl AdminParts {
    /// `None` when neither `--admin-addr` nor OTLP metrics are asked for.
    pub(super) fn new(args: &AdminArgs, service: &'static str) -> Option<AdminParts> {
        (args.admin_addr.is_some() || warden_telemetry::otlp_metrics::requested()).then(|| {
            AdminParts {
                addr: args.admin_addr,
                service,
                registry: Default::default(),
                components: Vec::new(),
            }
        })
    }

    /// Serves the admin endpoints and pushes the metrics over OTLP (as
    /// asked) for as long as the process runs.
    pub(super) async fn start(self) -> anyhow::Result<()> {
        let admin = warden_telemetry::Admin::new(self.registry, self.components);
        if let Some(destination) =
            warden_telemetry::otlp_metrics::push_from_env(admin.clone(), self.service)
                .map_err(anyhow::Error::msg)?
        {
            // On stderr: a process's first line on stdout says where it
            // listens, for scripts.
            eprintln!("warden: metrics are pushed to {destination}");
        }
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--admin-addr)"))?;
        println!(
            "admin endpoints on http://{} (/metrics, /healthz, /readyz, /health)",
            listener.local_addr()?
        );
        std::io::stdout().flush()?;
        tokio::spawn(async move {
            if let Err(e) = warden_telemetry::serve(listener, admin, std::future::pending()).await {
                tracing::error!(error = %e, "admin server stopped");
            }
        });
        Ok(())
    }
}
