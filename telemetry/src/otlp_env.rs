//! The standard `OTEL_EXPORTER_OTLP_*` variables of one signal (traces or
//! metrics), read through a lookup function (the environment, or a
//! benchmark's own values): the signal's own variable wins over the
//! general one. And what traces and metrics share to reach a collector:
//! the resource attributes, the client ([`Sender`]), OTLP's clock.

use std::time::Duration;
use warden_core::text::root_cause;

/// How to reach the collector for one signal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    /// The full URL: for HTTP with the signal's path (`/v1/traces`,
    /// `/v1/metrics`) unless the signal's own endpoint variable gave it.
    pub url: String,
    pub grpc: bool,
    /// A PEM CA to trust besides the public ones.
    pub ca: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Extra request headers (e.g. an API key).
    pub headers: Vec<(String, String)>,
}

impl Endpoint {
    /// Where and how, for the line a process prints at start:
    /// `http://collector:4318/v1/traces over OTLP/HTTP`.
    pub(crate) fn describe(&self) -> String {
        let protocol = if self.grpc { "gRPC" } else { "HTTP" };
        format!("{} over OTLP/{protocol}", self.url)
    }
}

pub(crate) struct OtlpVars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// `TRACES` or `METRICS`.
    signal: &'static str,
}

/// `k1=v1,k2=v2`, as the OTEL_* variables write pairs.
pub(crate) fn pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl<'a> OtlpVars<'a> {
    pub(crate) fn new(lookup: &'a dyn Fn(&str) -> Option<String>, signal: &'static str) -> Self {
        OtlpVars { lookup, signal }
    }

    /// Variable `name`, if set and not blank: (name, trimmed value).
    pub(crate) fn get(&self, name: &str) -> Option<(String, String)> {
        (self.lookup)(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name.to_string(), v.trim().to_string()))
    }

    /// `OTEL_EXPORTER_OTLP_{SIGNAL}_{suffix}`, else
    /// `OTEL_EXPORTER_OTLP_{suffix}`.
    fn otlp(&self, suffix: &str) -> Option<(String, String)> {
        self.get(&format!("OTEL_EXPORTER_OTLP_{}_{suffix}", self.signal))
            .or_else(|| self.get(&format!("OTEL_EXPORTER_OTLP_{suffix}")))
    }

    fn is(&self, name: &str, value: &str) -> bool {
        self.get(name)
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case(value))
    }

    /// The collector, or `None` when export is not asked for (no endpoint,
    /// `OTEL_SDK_DISABLED=true`, `OTEL_{SIGNAL}_EXPORTER=none`). An error
    /// names the variable that is wrong.
    pub(crate) fn endpoint(&self) -> Result<Option<Endpoint>, String> {
        if self.is("OTEL_SDK_DISABLED", "true")
            || self.is(&format!("OTEL_{}_EXPORTER", self.signal), "none")
        {
            return Ok(None);
        }
        let Some((name, url)) = self.otlp("ENDPOINT") else {
            return Ok(None);
        };
        let grpc = match self.otlp("PROTOCOL") {
            None => false,
            Some((_, p)) if p == "http/protobuf" => false,
            Some((_, p)) if p == "grpc" => true,
            Some((name, other)) => {
                return Err(format!(
                    "{name}={other}: Warden exports over `grpc` or `http/protobuf`"
                ));
            }
        };
        let signal_own = name.contains(self.signal);
        let url = if grpc || signal_own {
            url
        } else {
            format!(
                "{}/v1/{}",
                url.trim_end_matches('/'),
                self.signal.to_ascii_lowercase()
            )
        };
        let ca = match self.otlp("CERTIFICATE") {
            Some((name, path)) => {
                Some(std::fs::read(&path).map_err(|e| format!("{name}: cannot read {path}: {e}"))?)
            }
            None => None,
        };
        let timeout = self
            .otlp("TIMEOUT")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(10_000);
        Ok(Some(Endpoint {
            url,
            grpc,
            ca,
            timeout: Duration::from_millis(timeout),
            headers: self
                .otlp("HEADERS")
                .map(|(_, v)| pairs(&v))
                .unwrap_or_default(),
        }))
    }
}

impl Endpoint {
    /// A tonic TLS config for an `https` collector: the public CAs and the
    /// configured one.
    pub(crate) fn tonic_tls(&self) -> tonic::transport::ClientTlsConfig {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &self.ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        tls
    }

    /// An HTTP client with the timeout and the configured CA.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, String> {
        let mut client = reqwest::Client::builder().timeout(self.timeout);
        if let Some(pem) = &self.ca {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {e}"))?;
            client = client.add_root_certificate(cert);
        }
        client.build().map_err(|e| format!("OTLP HTTP client: {e}"))
    }
}

/// Now, in nanoseconds since the Unix epoch (OTLP's timestamps).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The resource attributes of a process exporting over OTLP:
/// `OTEL_RESOURCE_ATTRIBUTES`, then `service.name` (`OTEL_SERVICE_NAME`,
/// else `default_service`) and `service.version`.
pub(crate) fn resource_attributes(
    vars: &OtlpVars<'_>,
    default_service: &str,
) -> Vec<(String, String)> {
    let mut attributes = vars
        .get("OTEL_RESOURCE_ATTRIBUTES")
        .map(|(_, v)| pairs(&v))
        .unwrap_or_default();
    let service = vars
        .get("OTEL_SERVICE_NAME")
        .map_or(default_service.to_string(), |(_, v)| v);
    attributes.retain(|(k, _)| k != "service.name" && k != "service.version");
    attributes.push(("service.name".into(), service));
    attributes.push(("service.version".into(), env!("CARGO_PKG_VERSION").into()));
    attributes
}

/// The client of one collector for one signal: sends export requests
/// already encoded as protobuf.
pub(crate) enum Sender {
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        /// The service method, e.g.
        /// `/opentelemetry.proto.collector.trace.v1.TraceService/Export`.
        method: http::uri::PathAndQuery,
        target: Endpoint,
    },
    Http {
        client: reqwest::Client,
        target: Endpoint,
    },
}

impl Sender {
    /// A client of `target` (connecting at the first send); `service` is
    /// the gRPC service (`opentelemetry.proto.collector.trace.v1.TraceService`).
    /// Must be called within a Tokio runtime.
    pub(crate) fn new(target: Endpoint, service: &'static str) -> Result<Sender, String> {
        if target.grpc {
            let mut endpoint = tonic::transport::Endpoint::from_shared(target.url.clone())
                .map_err(|e| format!("OTLP endpoint {}: {e}", target.url))?
                .timeout(target.timeout);
            if target.url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(target.tonic_tls())
                    .map_err(|e| format!("OTLP TLS: {e}"))?;
            }
            let method = format!("/{service}/Export")
                .parse()
                .map_err(|e| format!("OTLP method: {e}"))?;
            Ok(Sender::Grpc {
                grpc: tonic::client::Grpc::new(endpoint.connect_lazy()),
                method,
                target,
            })
        } else {
            Ok(Sender::Http {
                client: target.http_client()?,
                target,
            })
        }
    }

    /// Sends one export request, `body` its protobuf encoding. The
    /// collector's answer is not read beyond its status.
    pub(crate) async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match self {
            Sender::Grpc {
                grpc,
                method,
                target,
            } => {
                let mut request = tonic::Request::new(bytes::Bytes::from(body));
                for (k, v) in &target.headers {
                    if let (Ok(k), Ok(v)) = (
                        k.parse::<tonic::metadata::MetadataKey<_>>(),
                        v.parse::<tonic::metadata::MetadataValue<_>>(),
                    ) {
                        request.metadata_mut().insert(k, v);
                    }
                }
                let mut grpc = grpc.clone();
                grpc.ready()
                    .await
                    .map_err(|e| format!("{}: {}", target.url, root_cause(&e)))?;
                grpc.unary(request, method.clone(), Encoded)
                    .await
                    .map(|_| ())
                    .map_err(|e| match std::error::Error::source(&e) {
                        Some(cause) => format!("{}: {}", target.url, root_cause(cause)),
                        None => format!("the collector answered {:?}: {}", e.code(), e.message()),
                    })
            }
            Sender::Http { client, target } => {
                let mut post = client
                    .post(&target.url)
                    .header("content-type", "application/x-protobuf")
                    .body(body);
                for (k, v) in &target.headers {
                    post = post.header(k, v);
                }
                let response = post
                    .send()
                    .await
                    .map_err(|e| format!("{}: {}", target.url, root_cause(&e)))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("the collector answered {}", response.status()))
                }
            }
        }
    }
}

/// A gRPC codec sending a message already encoded and ignoring the answer
/// (an OTLP export response says at most how much was rejected).
#[derive(Clone, Copy)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_s_own_variables_win_and_http_urls_get_the_signal_s_path() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let general = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=1, b = 2"),
        ]);
        let e = OtlpVars::new(&general, "METRICS")
            .endpoint()
            .unwrap()
            .unwrap();
        assert_eq!(e.url, "http://c:4318/v1/metrics");
        assert!(!e.grpc);
        assert_eq!(
            e.headers,
            [("x-key".into(), "1".into()), ("b".into(), "2".into())]
        );
        let own = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        let e = OtlpVars::new(&own, "TRACES").endpoint().unwrap().unwrap();
        assert_eq!((e.url.as_str(), e.grpc), ("http://t:4317", true));
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert_eq!(OtlpVars::new(&off, "METRICS").endpoint(), Ok(None));
        assert!(OtlpVars::new(&off, "TRACES").endpoint().unwrap().is_some());
        let bad = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        let e = OtlpVars::new(&bad, "TRACES").endpoint().unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"), "{e}");
    }
}
