//! Metrics over OTLP: the same instruments `/metrics` serves, pushed to an
//! OpenTelemetry collector every `OTEL_METRIC_EXPORT_INTERVAL` (default
//! 60 s) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) is
//! set. Each push reads the registry as a scrape does (the OpenMetrics
//! text of [`crate::Admin::metrics`]) and sends it as OTLP: counters as
//! cumulative monotonic sums, gauges as gauges, histograms as cumulative
//! explicit-bucket histograms, labels as attributes.
//!
//! Why text: prometheus-client gives a registry's values only through its
//! encoders, and its structured one (`protobuf`) is generated at build time
//! by `protoc`, which Warden's build does without (its own protocol is
//! compiled by protox). The text is the registry's own encoding, and the
//! tests check a registry's metrics reach OTLP with their names, labels
//! and values.
//!
//! Honoured: `OTEL_EXPORTER_OTLP_[METRICS_]{ENDPOINT,PROTOCOL,HEADERS,
//! TIMEOUT,CERTIFICATE}`, `OTEL_METRIC_EXPORT_INTERVAL` (ms),
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`
//! and `OTEL_METRICS_EXPORTER=none`.

use crate::otlp_env::{Endpoint, OtlpVars, Sender, resource_attributes, unix_nanos};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn target() -> Result<Option<Endpoint>, String> {
    OtlpVars::new(&env, "METRICS").endpoint()
}

/// Whether the environment asks for metrics over OTLP (or says so wrongly:
/// [`push_from_env`] then names the problem).
pub fn requested() -> bool {
    target().map_or(true, |target| target.is_some())
}

/// Starts pushing `admin`'s metrics over OTLP if the environment asks for
/// it (the task runs until the process ends): where to and how often, in
/// words; `Ok(None)` when it does not. An error names the variable that is
/// wrong.
pub fn push_from_env(admin: crate::Admin, default_service: &str) -> Result<Option<String>, String> {
    let Some(target) = target()? else {
        return Ok(None);
    };
    let destination = target.describe();
    let vars = OtlpVars::new(&env, "METRICS");
    let interval = vars
        .get("OTEL_METRIC_EXPORT_INTERVAL")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .unwrap_or(60_000);
    let attributes = resource_attributes(&vars, default_service);
    let resource = Resource {
        attributes: attributes
            .iter()
            .map(|(k, v)| text_attribute(k, v))
            .collect(),
        ..Default::default()
    };
    let sender = Sender::new(
        target,
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
    )?;
    let started = unix_nanos();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval));
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            let text = admin.metrics().await;
            let request = to_otlp(&text, &resource, started, unix_nanos());
            match sender.send(request.encode_to_vec()).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot push metrics over OTLP; retrying at the next interval");
                }
                Err(_) => {}
            }
        }
    });
    Ok(Some(format!(
        "{destination}, every {}",
        humanize_ms(interval)
    )))
}

/// `60 s`, `300 ms`.
fn humanize_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

fn text_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// One sample of the text: name, labels, value.
type Sample = (String, Labels, f64);

/// One metric family of the OpenMetrics text.
#[derive(Default)]
struct Family {
    kind: String,
    help: String,
    unit: String,
    /// In order.
    samples: Vec<Sample>,
}

/// `name{k="v",...} value` as (name, labels, value).
fn sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head.to_string(), Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.strip_suffix('}')?.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name.to_string(), labels, value))
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| text_attribute(k, v)).collect()
}

/// The OpenMetrics text `text` as one OTLP request.
fn to_otlp(text: &str, resource: &Resource, start: u64, now: u64) -> ExportMetricsServiceRequest {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    // Family names, which prefix their samples' names.
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(what), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let tail = parts.next().unwrap_or("").to_string();
            let family = families.entry(name.to_string()).or_default();
            match what {
                "TYPE" => {
                    family.kind = tail;
                    names.push(name.to_string());
                }
                "HELP" => family.help = tail,
                "UNIT" => family.unit = tail,
                _ => {}
            }
            continue;
        }
        let Some((sample_name, labels, value)) = sample(line) else {
            continue;
        };
        // The family whose name is the longest prefix of the sample's.
        let family = names
            .iter()
            .filter(|name| sample_name.starts_with(name.as_str()))
            .max_by_key(|name| name.len());
        if let Some(family) = family.and_then(|f| families.get_mut(f)) {
            family.samples.push((sample_name, labels, value));
        }
    }
    let number = |labels: &[(String, String)], value: f64| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let mut metrics = Vec::new();
    for (name, family) in families {
        let data = match family.kind.as_str() {
            "counter" => metric::Data::Sum(Sum {
                data_points: family
                    .samples
                    .iter()
                    .filter(|(s, _, _)| s.ends_with("_total"))
                    .map(|(_, labels, value)| number(labels, *value))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            "gauge" => metric::Data::Gauge(Gauge {
                data_points: family
                    .samples
                    .iter()
                    .map(|(_, labels, value)| number(labels, *value))
                    .collect(),
            }),
            "histogram" => metric::Data::Histogram(Histogram {
                data_points: histogram_points(&name, &family.samples, start, now),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            _ => continue,
        };
        metrics.push(Metric {
            name,
            description: family.help,
            unit: family.unit,
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "warden".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A histogram family's samples (`_bucket{le}` cumulative, `_sum`,
/// `_count`) as one data point per label set.
fn histogram_points(
    name: &str,
    samples: &[Sample],
    start: u64,
    now: u64,
) -> Vec<HistogramDataPoint> {
    #[derive(Default)]
    struct Point {
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    }
    let mut points: BTreeMap<Labels, Point> = BTreeMap::new();
    for (sample, labels, value) in samples {
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.clone());
        let key: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let point = points.entry(key).or_default();
        match &sample[name.len()..] {
            "_bucket" => {
                let bound = match le.as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                point.buckets.push((bound, *value));
            }
            "_sum" => point.sum = *value,
            "_count" => point.count = *value,
            _ => {}
        }
    }
    points
        .into_iter()
        .map(|(labels, mut p)| {
            p.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut counts = Vec::with_capacity(p.buckets.len());
            let mut before = 0.0;
            for (_, cumulative) in &p.buckets {
                counts.push((cumulative - before).max(0.0) as u64);
                before = *cumulative;
            }
            HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: p.count as u64,
                sum: Some(p.sum),
                explicit_bounds: p
                    .buckets
                    .iter()
                    .map(|(b, _)| *b)
                    .filter(|b| b.is_finite())
                    .collect(),
                bucket_counts: counts,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_text_becomes_otlp_sums_gauges_and_histograms() {
        let text = "# HELP runs Runs now.\n# TYPE runs gauge\nruns{state=\"queued\",agent=\"a \\\"b\\\"\"} 3\n\
            # HELP leases_received Leases.\n# TYPE leases_received counter\nleases_received_total 7\n\
            # HELP d Durations.\n# TYPE d histogram\n# UNIT d seconds\n\
            d_sum{agent=\"x\"} 1.5\nd_count{agent=\"x\"} 3\n\
            d_bucket{le=\"0.1\",agent=\"x\"} 1\nd_bucket{le=\"1.0\",agent=\"x\"} 2\nd_bucket{le=\"+Inf\",agent=\"x\"} 3\n# EOF\n";
        let request = to_otlp(text, &Resource::default(), 1, 2);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let by_name = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        let Some(metric::Data::Sum(sum)) = &by_name("leases_received").data else {
            panic!("not a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(7.0))
        );
        let Some(metric::Data::Gauge(gauge)) = &by_name("runs").data else {
            panic!("not a gauge")
        };
        let attrs: Vec<(String, String)> = gauge.data_points[0]
            .attributes
            .iter()
            .map(|kv| match &kv.value.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            attrs,
            [
                ("state".to_string(), "queued".to_string()),
                ("agent".to_string(), "a \"b\"".to_string())
            ]
        );
        let d = by_name("d");
        assert_eq!(d.unit, "seconds");
        let Some(metric::Data::Histogram(h)) = &d.data else {
            panic!("not a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!((p.count, p.sum), (3, Some(1.5)));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [1, 1, 1]);
    }

    /// What the registry holds reaches OTLP with the same names, labels and
    /// values: the text parsed is the registry's own encoding of it.
    #[test]
    fn a_registry_s_counters_gauges_and_histograms_reach_otlp_as_they_are() {
        use prometheus_client::encoding::EncodeLabelSet;
        use prometheus_client::metrics::{counter::Counter, family, gauge, histogram};
        use prometheus_client::registry::{Registry, Unit};

        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Labels {
            state: String,
            agent: String,
        }
        let mut registry = Registry::with_prefix("warden");
        let runs = family::Family::<Labels, gauge::Gauge>::default();
        registry.register("runs", "Runs now", runs.clone());
        let leases = Counter::<u64>::default();
        registry.register("leases_received", "Leases", leases.clone());
        let took = histogram::Histogram::new([0.1, 1.0]);
        registry.register_with_unit("run_duration", "Durations", Unit::Seconds, took.clone());
        // prometheus-client writes label values as they are: Warden escapes
        // one that may hold a quote or a newline (the host's model label).
        let labels = Labels {
            state: "queued".into(),
            agent: r#"a \"b\"\nc"#.into(),
        };
        runs.get_or_create(&labels).set(3);
        leases.inc_by(7);
        for v in [0.0625, 0.5, 4.0] {
            took.observe(v);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

        let request = to_otlp(&text, &Resource::default(), 1, 2);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let by_name = |n: &str| {
            metrics
                .iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("no {n} in {metrics:?}"))
        };
        let Some(metric::Data::Sum(sum)) = &by_name("warden_leases_received").data else {
            panic!("not a sum")
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(7.0))
        );
        let Some(metric::Data::Gauge(gauge)) = &by_name("warden_runs").data else {
            panic!("not a gauge")
        };
        let point = &gauge.data_points[0];
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
        let text_of = |key: &str| {
            point
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| match &kv.value.as_ref()?.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
        };
        assert_eq!(text_of("agent").as_deref(), Some("a \"b\"\nc"));
        assert_eq!(text_of("state").as_deref(), Some("queued"));
        let d = by_name("warden_run_duration_seconds");
        assert_eq!(d.unit, "seconds");
        let Some(metric::Data::Histogram(h)) = &d.data else {
            panic!("not a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!((p.count, p.sum), (3, Some(4.5625)));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!(p.bucket_counts, [1, 1, 1]);
    }
}
