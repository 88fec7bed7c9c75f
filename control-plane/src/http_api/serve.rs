//! The HTTP API's listener: TLS (HTTP/2 or HTTP/1.1 as ALPN chose)
//! unless the control plane runs `--insecure`, bounds on open connections
//! (in all and per client address), and deadlines so a slow or silent
//! client cannot hold a connection forever.

use crate::{ControlPlane, Security};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Connections open at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Connections open at once from one client address; more are closed.
const MAX_PER_CLIENT: usize = 64;
/// How long a client has to finish the TLS handshake, and to send each
/// request's headers (HTTP/1.1; also the idle time between requests).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long (clients reconnect; an
/// event stream resumes with `Last-Event-ID`), so an idle HTTP/2
/// connection cannot stay forever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(600);
/// How long requests in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long requests in flight on a connection asked to close for its age
/// may take: longer than the longest wait a request may ask for.
const AGE_GRACE: Duration = Duration::from_secs(70);

/// The HTTP API of a control plane, ready to serve.
pub struct HttpApi {
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl HttpApi {
    /// The API of `cp`, with its TLS if it has TLS. Fails if the server
    /// certificate cannot serve TLS.
    pub fn new(cp: ControlPlane) -> Result<Self, crate::pki::PkiError> {
        let tls = match &cp.config.security {
            Security::Tls(pki) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(pki.http_tls()?))),
            Security::Insecure => None,
        };
        Ok(HttpApi {
            app: super::routes::router(cp),
            tls,
        })
    }

    /// Serves on `listener` until `shutdown` resolves; then lets requests
    /// in flight finish for [`SHUTDOWN_GRACE`] and drops the rest.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) {
        let mut app = self.app;
        // Without TLS (`warden dev`, `--insecure`) on loopback, only
        // requests naming this machine: a web page's DNS rebinding cannot
        // reach the API through a browser.
        if self.tls.is_none()
            && listener
                .local_addr()
                .is_ok_and(|addr| addr.ip().is_loopback())
        {
            app = app.layer(axum::middleware::from_fn(loopback_host_only));
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let clients: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "HTTP API: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Reap finished connections' tasks.
            while connections.try_join_next().is_some() {}
            let Some(client) = ClientSlot::take(&clients, peer.ip()) else {
                tracing::debug!(client = %peer.ip(), "HTTP API: too many connections from one client");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (app, tls, stopping) = (app.clone(), self.tls.clone(), stopping.clone());
            connections.spawn(async move {
                let _held = (permit, client);
                match tls {
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_connection(stream, Some(h2), app, stopping).await;
                    }
                    None => serve_connection(stream, None, app, stopping).await,
                }
            });
        }
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                open = connections.len(),
                "HTTP API: connections still open after the shutdown grace are dropped"
            );
            connections.abort_all();
        }
    }
}

/// A connection counted against its client address; let go on drop.
struct ClientSlot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(clients: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut open = clients.lock().unwrap();
        let count = open.entry(ip).or_default();
        if *count >= MAX_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: clients.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.lock().unwrap();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves one connection: HTTP/2 or HTTP/1.1 as `h2` says (ALPN), or
/// either (plaintext: hyper reads which); asks it to close once shutdown
/// begins or it is [`MAX_CONNECTION_AGE`] old.
async fn serve_connection<S>(
    stream: S,
    h2: Option<bool>,
    app: axum::Router,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = match h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let grace = tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP API connection ended with an error");
            }
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => SHUTDOWN_GRACE,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => AGE_GRACE,
    };
    connection.as_mut().graceful_shutdown();
    // On shutdown, `serve` drops what is left after its own grace.
    let _ = tokio::time::timeout(grace, connection).await;
}

/// Refuses a request whose `Host` is not this machine (`localhost`,
/// `127.0.0.1`, `[::1]`, with any port).
async fn loopback_host_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        next.run(request).await
    } else {
        super::problem::problem(
            http::StatusCode::FORBIDDEN,
            "permission_denied",
            "this API serves only this machine: use http://localhost or 127.0.0.1".into(),
        )
    }
}
