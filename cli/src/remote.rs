//! How commands reach a control plane: [`Remote`] (`--control-plane`,
//! `--ca`, `--token`) and gRPC statuses as user-facing errors.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub(crate) struct Remote {
    /// The control plane's URL: https://HOST:PORT (TLS; give --ca), or
    /// http:// for one started with --insecure or `warden dev`.
    #[arg(
        long,
        env = "WARDEN_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    control_plane: String,

    /// The control plane's CA certificate (its DATA_DIR/ca.pem), to verify
    /// it by.
    #[arg(long, env = "WARDEN_CA", value_name = "FILE", global = true)]
    ca: Option<PathBuf>,

    /// Your access token (`warden tokens create`; the first admin token is
    /// the control plane's DATA_DIR/admin.token).
    #[arg(long, env = "WARDEN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    /// Send the token over a plaintext http:// URL anyway (a network you
    /// trust). Without it a token goes in plaintext only to this machine
    /// (localhost, 127.0.0.1 or [::1], as `warden dev` listens); elsewhere
    /// use https:// and --ca.
    #[arg(long, env = "WARDEN_INSECURE", global = true)]
    insecure: bool,
}

/// Whether `url`'s host is this machine by name: where a token sent in
/// plaintext never leaves it.
fn is_this_machine(url: &str) -> bool {
    url.parse::<tonic::codegen::http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .is_some_and(|h| matches!(h.as_str(), "localhost" | "127.0.0.1" | "[::1]"))
}

/// Adds the bearer token to every call.
#[derive(Clone, Debug)]
pub(crate) struct Bearer(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// A connection to the control plane that sends the token.
pub(crate) type Conn = InterceptedService<Channel, Bearer>;

/// TLS for `url`: `https` needs the CA; `http` is plaintext.
pub(crate) fn client_tls(
    url: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let ca = ca.ok_or_else(|| {
        anyhow::anyhow!(
            "{url} is TLS: give the control plane's CA certificate with --ca FILE or WARDEN_CA \
             (it is DATA_DIR/ca.pem on the control plane's machine)"
        )
    })?;
    let pem = std::fs::read_to_string(ca)
        .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
    Ok(Some(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
    ))
}

impl Remote {
    /// The control plane at `url` on this machine, plaintext, no token
    /// (`warden dev`'s own).
    pub(crate) fn local(url: String) -> Remote {
        Remote {
            control_plane: url,
            ca: None,
            token: None,
            insecure: false,
        }
    }

    /// A run service client that reads messages as large as a control
    /// plane may send.
    pub(crate) async fn runs(
        &self,
    ) -> anyhow::Result<warden_proto::v1::run_service_client::RunServiceClient<Conn>> {
        Ok(
            warden_proto::v1::run_service_client::RunServiceClient::new(self.channel().await?)
                .max_decoding_message_size(warden_core::wire::MAX_MESSAGE_BYTES),
        )
    }

    pub(crate) async fn channel(&self) -> anyhow::Result<Conn> {
        let url = &self.control_plane;
        let plaintext = url.parse::<tonic::codegen::http::Uri>().is_ok_and(|u| {
            u.scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("http"))
        });
        if self.token.is_some() && plaintext && !self.insecure && !is_this_machine(url) {
            anyhow::bail!(
                "refusing to send your token in plaintext to {url}: use its https:// URL with --ca, \
                 or pass --insecure (WARDEN_INSECURE=1) if the network between you is trusted"
            );
        }
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid control plane URL `{url}`"))?
            .connect_timeout(Duration::from_secs(3));
        if let Some(tls) = client_tls(url, self.ca.as_deref())? {
            endpoint = endpoint.tls_config(tls)?;
        }
        PLAINTEXT.store(
            url.starts_with("http://"),
            std::sync::atomic::Ordering::Relaxed,
        );
        let channel = endpoint.connect().await.map_err(|e| {
            let root = warden_core::text::root_cause(&e);
            let hint = if url.starts_with("http://") && root.contains("connection") {
                " (a control plane with TLS needs an https:// URL and --ca)"
            } else if url.starts_with("https://") {
                " (is --ca the control plane's ca.pem, and the URL's host one of its certificate's names?)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "cannot reach the control plane at {url}: {root}{hint} (is `warden control-plane` or `warden dev` running?)"
            )
        })?;
        let token = match &self.token {
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {}", t.trim()))
                    .map_err(|_| anyhow::anyhow!("the token is not valid text"))?,
            ),
            None => None,
        };
        Ok(InterceptedService::new(channel, Bearer(token)))
    }
}

/// Whether this process connected to the control plane in plaintext.
static PLAINTEXT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A gRPC status as a user-facing error.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    // A status with a source failed here, in the transport: it is not the
    // control plane's answer. In plaintext, the likeliest reason is a TLS
    // port.
    let local = std::error::Error::source(&e).is_some();
    match e.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("unauthenticated: {}", e.message()),
        tonic::Code::PermissionDenied => anyhow::anyhow!("permission denied: {}", e.message()),
        _ if local && PLAINTEXT.load(std::sync::atomic::Ordering::Relaxed) => anyhow::anyhow!(
            "{} (if the control plane uses TLS, connect with an https:// URL and --ca FILE)",
            e.message()
        ),
        _ => anyhow::anyhow!("{}", e.message()),
    }
}
