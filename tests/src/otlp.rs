//! [`OtlpReceiver`]: a stand-in OpenTelemetry collector on loopback that
//! takes traces and metrics over OTLP/gRPC (tonic `TraceService` and
//! `MetricsService`) and OTLP/HTTP (`POST /v1/traces`, `/v1/metrics`,
//! protobuf) and keeps every span and metric data point it gets.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// Attribute values as text (numbers written out).
    pub attributes: HashMap<String, String>,
}

/// One metric data point as received: a sum's or gauge's value, or a
/// histogram's count.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    /// The exporting process's `service.name`.
    pub service: String,
    pub metric: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub attributes: HashMap<String, String>,
    pub value: f64,
}

/// What was received: spans, OTLP/HTTP trace bodies not decoded yet (so a
/// benchmark's exporters do not wait on the decoding), metric points.
#[derive(Clone, Default)]
struct Spans(
    Arc<Mutex<(Vec<ReceivedSpan>, Vec<axum::body::Bytes>)>>,
    Points,
);

#[derive(Clone, Default)]
struct Points(Arc<Mutex<Vec<ReceivedPoint>>>);

fn service_of(attributes: &[KeyValue]) -> String {
    attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

fn attribute_map(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

impl Points {
    fn add(&self, request: ExportMetricsServiceRequest) {
        let mut points = self.0.lock().unwrap();
        for resource in request.resource_metrics {
            let service = service_of(resource.resource.as_ref().map_or(&[], |r| &r.attributes));
            for scope in resource.scope_metrics {
                for m in scope.metrics {
                    let mut push = |kind, attributes: &[KeyValue], value| {
                        points.push(ReceivedPoint {
                            service: service.clone(),
                            metric: m.name.clone(),
                            kind,
                            attributes: attribute_map(attributes),
                            value,
                        })
                    };
                    let number = |v: &Option<number_data_point::Value>| match v {
                        Some(number_data_point::Value::AsDouble(d)) => *d,
                        Some(number_data_point::Value::AsInt(i)) => *i as f64,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                push("sum", &p.attributes, number(&p.value));
                            }
                        }
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                push("gauge", &p.attributes, number(&p.value));
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            for p in &h.data_points {
                                push("histogram", &p.attributes, p.count as f64);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Points {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let (spans, _) = &mut *self.0.lock().unwrap();
        for resource in request.resource_spans {
            let service = service_of(resource.resource.as_ref().map_or(&[], |r| &r.attributes));
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    kv.value.as_ref().map(text).unwrap_or_default(),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    /// Where OTLP/gRPC is served.
    pub grpc: SocketAddr,
    /// Where OTLP/HTTP is served (`/v1/traces`).
    pub http: SocketAddr,
    spans: Spans,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Serves on two free loopback ports, from a thread of its own (so it
    /// starts in and out of async tests alike).
    pub fn start() -> Self {
        let spans = Spans::default();
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addrs_tx
                    .send((grpc.local_addr().unwrap(), http.local_addr().unwrap()))
                    .unwrap();
                let service = TraceServiceServer::new(served.clone());
                let metrics = MetricsServiceServer::new(served.1.clone());
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .add_service(metrics)
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
                );
                let points = served.1.clone();
                let app = axum::Router::new()
                    .route(
                        "/v1/traces",
                        axum::routing::post(move |body: axum::body::Bytes| {
                            let spans = served.clone();
                            async move { export_http(&spans, body) }
                        }),
                    )
                    .route(
                        "/v1/metrics",
                        axum::routing::post(move |body: axum::body::Bytes| {
                            let points = points.clone();
                            async move {
                                match ExportMetricsServiceRequest::decode(body) {
                                    Ok(request) => {
                                        points.add(request);
                                        axum::http::StatusCode::OK
                                    }
                                    Err(_) => axum::http::StatusCode::BAD_REQUEST,
                                }
                            }
                        }),
                    );
                tokio::spawn(async move { axum::serve(http, app).await });
                let _ = stopped.await;
            });
        });
        let (grpc, http) = addrs_rx.recv().expect("the OTLP receiver starts");
        OtlpReceiver {
            grpc,
            http,
            spans,
            stop: Some(stop),
        }
    }

    /// Every metric data point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.spans.1.0.lock().unwrap().clone()
    }

    /// Every span received so far (an HTTP body that is not an OTLP
    /// request is skipped).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let bodies = std::mem::take(&mut self.spans.0.lock().unwrap().1);
        for body in bodies {
            if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                self.spans.add(request);
            }
        }
        self.spans.0.lock().unwrap().0.clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `POST /v1/traces`: a protobuf ExportTraceServiceRequest.
fn export_http(
    spans: &Spans,
    body: axum::body::Bytes,
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    Vec<u8>,
) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            spans.add(request);
            (
                axum::http::StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (
            axum::http::StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        ),
    }
}
