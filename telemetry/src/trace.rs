//! Traces: Warden's `tracing` spans exported as OpenTelemetry spans over
//! OTLP, when the standard variables ask for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
//! Without them there is no exporter and no layer: Warden's spans are then
//! filtered out before they are made, and tracing costs nothing.
//!
//! Honoured: `OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,HEADERS,
//! TIMEOUT,CERTIFICATE}` (protocol `grpc` or `http/protobuf`, the
//! default), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_SDK_DISABLED` and
//! `OTEL_TRACES_EXPORTER=none`.
//!
//! Trace context crosses processes as a W3C `traceparent`
//! ([`set_parent`], [`traceparent`]): a submit's span is the parent of
//! every attempt's lease span on the nodes.

use crate::otlp_env::{Endpoint, OtlpVars};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Exports spans while held; [`Tracing::shutdown`] sends what is left.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// The exporter the environment asks for, or `None` when it asks for
    /// none. Must be called within a Tokio runtime (the exporters' clients
    /// run on it). An error names the variable that is wrong.
    pub fn from_env(default_service: &str) -> Result<Option<Self>, String> {
        Self::from_vars(default_service, |name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] with the OTLP exporter's variables read through
    /// `var` (the SDK's own, `OTEL_SERVICE_NAME`, `OTEL_BSP_*`, ..., from
    /// the environment).
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let Some(endpoint) = OtlpVars::new(&var, "TRACES").endpoint()? else {
            return Ok(None);
        };
        let exporter = exporter(&endpoint)?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(default_service.to_string());
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        // The batch settings the SDK reads from the environment, or from
        // `var` when it has them.
        let mut batch = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE") {
            batch = batch.with_max_queue_size(n as usize);
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            batch = batch.with_max_export_batch_size(n as usize);
        }
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY") {
            batch = batch.with_scheduled_delay(std::time::Duration::from_millis(ms));
        }
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        Ok(Some(Tracing { provider }))
    }

    /// The `tracing` layer that turns Warden's spans (info and above) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        // Spans are entered at every poll of their futures (a run's many
        // times): nothing is done on entry (no busy/idle time, no OTel
        // context activation; Warden propagates context itself), and no
        // source-location, thread or target attributes are added.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("warden"))
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported))
    }

    /// Sends the spans not yet exported and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: OpenTelemetry traces: {e}");
        }
    }
}

/// Whether [`Tracing::layer`] exports what `meta` describes: Warden's own
/// spans, info and above.
pub fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("warden") && *meta.level() <= tracing::Level::INFO
}

/// The span exporter for `endpoint`.
fn exporter(endpoint: &Endpoint) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let failed = |e: opentelemetry_otlp::ExporterBuildError| format!("OTLP trace exporter: {e}");
    if endpoint.grpc {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &endpoint.headers {
            if let (Ok(k), Ok(v)) = (
                k.parse::<tonic::metadata::MetadataKey<_>>(),
                v.parse::<tonic::metadata::MetadataValue<_>>(),
            ) {
                metadata.insert(k, v);
            }
        }
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.url.clone())
            .with_timeout(endpoint.timeout)
            .with_metadata(metadata);
        if endpoint.url.starts_with("https://") {
            builder = builder.with_tls_config(endpoint.tonic_tls());
        }
        builder.build().map_err(failed)
    } else {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "OTLP export starts outside the async runtime".to_string())?;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.url.clone())
            .with_headers(endpoint.headers.iter().cloned().collect())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(TokioHttp {
                client: endpoint.http_client()?,
                handle,
            })
            .build()
            .map_err(failed)
    }
}

/// Most bytes of a collector's answer read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// OTLP over HTTP with Warden's own HTTP client (rustls), its requests
/// running on the process's Tokio runtime: the span processor calls from
/// its own thread.
#[derive(Debug)]
struct TokioHttp {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        let answer = self.handle.spawn(async move {
            let mut response = client.execute(request).await?;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(bytes::Bytes::from(body));
            *out.status_mut() = response.status();
            *out.headers_mut() = response.headers().clone();
            Ok::<_, reqwest::Error>(out)
        });
        Ok(answer.await??)
    }
}

/// Makes the trace `traceparent` names (W3C) the parent of `span`, which
/// must not have been entered yet. A malformed or empty one changes
/// nothing.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() || span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    let _ = span.set_parent(cx);
}

/// The W3C traceparent of `span`; `None` when spans are not exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// A carrier holding only a traceparent, read.
struct Traceparent<'a>(&'a str);

impl opentelemetry::propagation::Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// A carrier keeping only the traceparent written to it.
struct Carrier(Option<String>);

impl opentelemetry::propagation::Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Checks that `text` is a W3C traceparent (`00-` 32 hex digits `-` 16 hex
/// digits `-` 2 hex digits, ids not all zero).
pub fn check_traceparent(text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a W3C traceparent (00-<32 hex digits>-<16 hex digits>-<2 hex digits>, lowercase)",
            warden_text(text)
        ))
    }
}

/// `text`, short and without control characters, for an error message.
fn warden_text(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::check_traceparent;

    #[test]
    fn traceparents_are_checked_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(check_traceparent(good).is_ok());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        ] {
            let e = check_traceparent(bad).unwrap_err();
            assert!(e.contains("not a W3C traceparent"), "{e}");
        }
    }
}
