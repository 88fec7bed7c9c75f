//! Outgoing HTTP through `wasi:http/outgoing-handler`, with our policy in the
//! `send_request` hook of `wasmtime-wasi-http`: [`HttpHooks`].
//!
//! Per request: the URL must match the run's allow-list ([`HttpPolicy`], the one
//! pattern language of `warden_core::pattern`,
//! else `HTTP-request-denied`); the request counts against the run's budget
//! (else `connection-limit-reached`); the host name is resolved here
//! and every address checked, and the connection goes to the address that
//! was checked (no second lookup a rebinding DNS server could answer
//! differently). wasi:http does not follow redirects: a redirect comes back
//! to the guest as a 3xx, and following it is a new request, checked again.
//! Response bodies count against the run's byte budget as they stream.

mod send;

pub use warden_core::pattern::{Denied, HttpPolicy, PatternError, special_range};

use crate::meter::RunMeter;
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The wasi-http hooks of one run: policy, meter, and how many bytes an
/// outgoing body may buffer on the host.
pub struct HttpHooks {
    policy: Arc<HttpPolicy>,
    meter: Arc<RunMeter>,
    body_buffer_bytes: usize,
    metrics: crate::metrics::HostMetrics,
}

impl HttpHooks {
    /// `body_buffer_bytes`: the most an outgoing body not yet sent may hold
    /// on the host (one queued chunk and one being written, half each).
    pub fn new(
        policy: HttpPolicy,
        meter: Arc<RunMeter>,
        body_buffer_bytes: usize,
        metrics: crate::metrics::HostMetrics,
    ) -> Self {
        HttpHooks {
            policy: Arc::new(policy),
            meter,
            body_buffer_bytes,
            metrics,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        use tracing::Instrument;
        let span = send::span(&request);
        let send = send::send(
            self.policy.clone(),
            self.meter.clone(),
            self.metrics.clone(),
            request,
            options,
        );
        Box::new(send.instrument(span))
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        (self.body_buffer_bytes / 2).max(1)
    }
}
