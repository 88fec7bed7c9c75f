//! Sending one checked request: resolve, check each address, connect to the
//! checked one, speak HTTP/1.1 (over TLS for https), meter the body.

use super::{HttpPolicy, IoFuture};
use crate::meter::RunMeter;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client span of one outgoing request, as the OpenTelemetry HTTP
/// conventions name it (the URL is recorded later, without its query).
/// Made where the guest asks, inside its run's span: the request itself
/// is sent on a task of its own, where that span is not current.
pub(super) fn span(request: &http::Request<WasiBody>) -> tracing::Span {
    tracing::info_span!(
        "http",
        otel.name = %request.method(),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        url.full = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Sends `request` (in the span of [`span`]) and counts its outcome.
pub(super) async fn send(
    policy: Arc<HttpPolicy>,
    meter: Arc<RunMeter>,
    metrics: crate::metrics::HostMetrics,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let result = send_checked(policy, meter, request, options).await;
    let span = tracing::Span::current();
    let outcome = match &result {
        Ok((response, _)) => {
            span.record("http.response.status_code", response.status().as_u16());
            if response.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", response.status().as_str());
            }
            "response"
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", format!("{e:?}").split(['(', ' ', '{']).next());
            match e {
                HttpError::HttpRequestDenied => "denied_policy",
                HttpError::DestinationIpProhibited => "denied_address",
                HttpError::ConnectionLimitReached => "denied_budget",
                _ => "error",
            }
        }
    };
    metrics.http_request(outcome);
    result
}

async fn send_checked(
    policy: Arc<HttpPolicy>,
    meter: Arc<RunMeter>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let uri = request.uri().clone();
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = uri
        .host()
        .ok_or(HttpError::HttpRequestUriInvalid)?
        .to_string();
    let tls = match scheme.as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(HttpError::HttpProtocolError),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let span = tracing::Span::current();
    span.record("server.address", host.as_str());
    span.record("server.port", port);
    span.record(
        "url.full",
        format!("{scheme}://{host}:{port}{}", uri.path()),
    );

    if let Err(denied) = policy.check_url(&scheme, &host, port) {
        tracing::warn!(%denied, "http request denied");
        return Err(HttpError::HttpRequestDenied);
    }
    if !meter.try_http_request() {
        tracing::warn!("http request budget exhausted");
        return Err(HttpError::ConnectionLimitReached);
    }

    let addr = resolve_checked(&policy, &scheme, &host, port).await?;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT);

    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;

    // The request line carries only the path: scheme and authority are for proxies.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let (mut sender, conn) = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(HttpError::Tls)?;
        let (sender, conn) = handshake(TokioIo::new(stream), connect_timeout).await?;
        (
            sender,
            tokio::spawn(async move { conn.await.map_err(HttpError::from) }),
        )
    } else {
        let (sender, conn) = handshake(TokioIo::new(tcp), connect_timeout).await?;
        (
            sender,
            tokio::spawn(async move { conn.await.map_err(HttpError::from) }),
        )
    };

    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::from)?;

    let response = response.map(|body| {
        MeteredBody {
            inner: body.map_err(HttpError::from).boxed_unsync(),
            meter,
        }
        .boxed_unsync()
    });
    let io: IoFuture = Box::new(async move {
        match conn.await {
            Ok(result) => result,
            Err(join) => Err(HttpError::InternalError(Some(join.to_string()))),
        }
    });
    Ok((response, io))
}

async fn handshake<S>(
    io: S,
    timeout: Duration,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<WasiBody>,
        hyper::client::conn::http1::Connection<S, WasiBody>,
    ),
    HttpError,
>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(io))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::from)
}

/// Resolves `host` and returns the first address the policy allows. Every
/// address is checked; one refused address is reason enough to refuse a name
/// (a name that mixes public and loopback answers is a rebinding attempt).
async fn resolve_checked(
    policy: &HttpPolicy,
    scheme: &str,
    host: &str,
    port: u16,
) -> Result<SocketAddr, HttpError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    for addr in &addrs {
        if let Err(denied) = policy.check_ip(scheme, host, port, addr.ip()) {
            tracing::warn!(%denied, "http request refused after DNS resolution");
            return Err(HttpError::DestinationIpProhibited);
        }
    }
    Ok(addrs[0])
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A response body that counts its bytes against the run's budget and ends
/// with an error once over it.
struct MeteredBody {
    inner: WasiBody,
    meter: Arc<RunMeter>,
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && !self.meter.add_http_response_bytes(data.len() as u64)
        {
            let limit = self.meter.budget().max_http_response_bytes;
            return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(limit)))));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
