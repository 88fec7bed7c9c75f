//! [`Upstream`]: the control-plane replicas a node talks to, one at a
//! time. Every replica serves every RPC (they share one PostgreSQL
//! database), so when a call cannot reach the current one (connection
//! refused, reset, timed out, or a replica that stopped answering pings)
//! the node moves to the next in its list; the call's own retry (lease
//! stream, reports, heartbeats) then goes there.
//! Runs in progress are unaffected: their renewals and results follow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::{Channel, Endpoint};

/// How often an HTTP/2 ping checks that a replica still answers.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// How long a ping may go unanswered before the connection is given up.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// A gRPC channel to whichever control-plane replica is current.
#[derive(Clone)]
pub struct Upstream {
    replicas: Arc<[(String, Channel)]>,
    current: Arc<AtomicUsize>,
}

impl Upstream {
    /// Lazy channels to each of `urls` (none is contacted yet).
    pub fn new(
        urls: &[String],
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, crate::NodeError> {
        if urls.is_empty() {
            return Err(crate::NodeError::Url(
                String::new(),
                "no control plane address given".into(),
            ));
        }
        let replicas = urls
            .iter()
            .map(|url| {
                let bad =
                    |e: &dyn std::fmt::Display| crate::NodeError::Url(url.clone(), e.to_string());
                // A replica that stops answering (hung, stopped, its
                // machine gone) still has its kernel accept connections:
                // HTTP/2 pings find it out within KEEPALIVE + PING_TIMEOUT
                // even on an idle connection or a silent lease stream,
                // which fails the calls on it, and the node moves to the
                // next replica. (No deadline per call: a large report on a
                // slow link may rightly take long.)
                let mut endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| bad(&e))?
                    .connect_timeout(std::time::Duration::from_secs(2))
                    .http2_keep_alive_interval(KEEPALIVE)
                    .keep_alive_timeout(PING_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true);
                if let Some(tls) = tls {
                    endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
                }
                Ok((url.clone(), endpoint.connect_lazy()))
            })
            .collect::<Result<Vec<_>, crate::NodeError>>()?;
        Ok(Upstream {
            replicas: replicas.into(),
            current: Arc::default(),
        })
    }

    /// The address of the replica calls go to now.
    pub fn current(&self) -> &str {
        &self.replicas[self.current.load(Ordering::Relaxed) % self.replicas.len()].0
    }

    /// Moves on from replica `failed` (if it is still the current one).
    fn failed(&self, failed: usize, error: &tonic::transport::Error) {
        if self.replicas.len() < 2 {
            return;
        }
        let next = (failed + 1) % self.replicas.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                unreachable = %self.replicas[failed].0,
                next = %self.replicas[next].0,
                error = %warden_core::text::root_cause(error),
                "control plane replica unreachable; moving to the next"
            );
        }
    }
}

impl Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    /// Always ready: the replica is chosen, and waited for, per call.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let index = self.current.load(Ordering::Relaxed) % self.replicas.len();
        let mut channel = self.replicas[index].1.clone();
        let this = self.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            let answer = channel.call(request).await;
            if let Err(e) = &answer {
                this.failed(index, e);
            }
            answer
        })
    }
}
