//! Metrics over OTLP: the same instruments `/metrics` serves, pushed to an
//! OpenTelemetry collector every `OTEL_METRIC_EXPORT_INTERVAL` (default
//! 60 s) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) is
//! set. Each push refreshes the registry as a scrape does and reads its
//! instruments' values ([`crate::metrics::Registry::read`]): counters go as
//! cumulative monotonic sums, gauges as gauges, histograms as cumulative
//! explicit-bucket histograms, labels as attributes.
//!
//! Honoured: `OTEL_EXPORTER_OTLP_[METRICS_]{ENDPOINT,PROTOCOL,HEADERS,
//! TIMEOUT,CERTIFICATE}`, `OTEL_METRIC_EXPORT_INTERVAL` (ms),
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`
//! and `OTEL_METRICS_EXPORTER=none`.

use crate::metrics::{Labels, MetricType, Reading, Value};
use crate::otlp_env::{Endpoint, OtlpVars, Sender, resource_attributes, unix_nanos};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
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
            let request = to_otlp(admin.read().await, &resource, started, unix_nanos());
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

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| text_attribute(k, v)).collect()
}

/// The registry's readings as one OTLP request: counters as cumulative
/// monotonic sums, gauges as gauges, histograms as cumulative
/// explicit-bucket histograms, labels as attributes.
fn to_otlp(
    readings: Vec<Reading>,
    resource: &Resource,
    start: u64,
    now: u64,
) -> ExportMetricsServiceRequest {
    let number = |labels: &Labels, value: f64| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let numbers = |values: &[(Labels, Value)]| -> Vec<NumberDataPoint> {
        values
            .iter()
            .filter_map(|(labels, value)| match value {
                Value::Number(n) => Some(number(labels, *n)),
                Value::Histogram(_) => None,
            })
            .collect()
    };
    // A family with no label set yet has nothing to say (`/metrics` leaves
    // it out too).
    let metrics = readings
        .into_iter()
        .filter(|r| !r.values.is_empty())
        .filter_map(|r| {
            let data = match r.kind {
                MetricType::Counter => metric::Data::Sum(Sum {
                    data_points: numbers(&r.values),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                MetricType::Gauge => metric::Data::Gauge(Gauge {
                    data_points: numbers(&r.values),
                }),
                MetricType::Histogram => metric::Data::Histogram(Histogram {
                    data_points: r
                        .values
                        .iter()
                        .filter_map(|(labels, value)| match value {
                            Value::Histogram(h) => Some(HistogramDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: start,
                                time_unix_nano: now,
                                count: h.count,
                                sum: Some(h.sum),
                                explicit_bounds: h.bounds.clone(),
                                bucket_counts: h.counts.clone(),
                                ..Default::default()
                            }),
                            Value::Number(_) => None,
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
                _ => return None,
            };
            Some(Metric {
                name: r.name,
                description: r.help,
                unit: r.unit,
                data: Some(data),
                ..Default::default()
            })
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Counter, Family, Gauge, Registry, Unit};

    /// What the registry holds reaches OTLP with the same names, labels and
    /// values, and `/metrics` says the same.
    #[test]
    fn a_registry_s_counters_gauges_and_histograms_reach_otlp_as_they_are() {
        #[derive(Clone, Debug, Hash, PartialEq, Eq)]
        struct RunLabels {
            state: String,
            agent: String,
        }
        crate::label_set!(RunLabels { state, agent });

        let mut registry = Registry::default();
        let mut warden = registry.prefixed("warden");
        let runs = Family::<RunLabels, Gauge>::default();
        warden.register("runs", "Runs now", runs.clone());
        let leases = Counter::<u64>::default();
        warden.register("leases_received", "Leases", leases.clone());
        let took = crate::metrics::Histogram::new([0.1, 1.0]);
        warden.register_with_unit("run_duration", "Durations", Unit::Seconds, took.clone());
        let by_agent = Family::<RunLabels, crate::metrics::Histogram>::new(|| {
            crate::metrics::Histogram::new([1.0])
        });
        warden.register("fuel", "Fuel by agent", by_agent.clone());
        let unused = Family::<RunLabels, Counter>::default();
        warden.register("unused", "Never counted", unused.clone());
        let labels = RunLabels {
            state: "queued".into(),
            agent: "a \"b\"\nc".into(),
        };
        runs.get_or_create(&labels).set(3);
        leases.inc_by(7);
        for v in [0.0625, 0.5, 1.0, 4.0, f64::NAN] {
            took.observe(v);
        }
        by_agent.get_or_create(&labels).observe(2.0);

        let request = to_otlp(registry.read(), &Resource::default(), 1, 2);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let by_name = |n: &str| {
            metrics
                .iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("no {n} in {metrics:?}"))
        };
        let leases = by_name("warden_leases_received");
        assert_eq!(leases.description, "Leases");
        let Some(metric::Data::Sum(sum)) = &leases.data else {
            panic!("not a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(7.0))
        );
        let Some(metric::Data::Gauge(gauge)) = &by_name("warden_runs").data else {
            panic!("not a gauge")
        };
        let point = &gauge.data_points[0];
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
        let attrs: Vec<(String, String)> = point
            .attributes
            .iter()
            .map(|kv| match &kv.value.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                other => panic!("not a string: {other:?}"),
            })
            .collect();
        assert_eq!(
            attrs,
            [
                ("state".to_string(), "queued".to_string()),
                ("agent".to_string(), "a \"b\"\nc".to_string())
            ],
            "the labels in order, as they are (not escaped)"
        );
        let d = by_name("warden_run_duration_seconds");
        assert_eq!(d.unit, "seconds");
        let Some(metric::Data::Histogram(h)) = &d.data else {
            panic!("not a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!((p.count, p.sum), (4, Some(5.5625)));
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        // A value on a bound is in that bound's bucket; NaN is in none.
        assert_eq!(p.bucket_counts, [1, 2, 1]);
        let Some(metric::Data::Histogram(fuel)) = &by_name("warden_fuel").data else {
            panic!("not a histogram")
        };
        let p = &fuel.data_points[0];
        assert_eq!((p.count, p.bucket_counts.as_slice()), (1, &[0, 1][..]));
        assert_eq!(p.attributes.len(), 2, "the family's labels: {p:?}");
        assert!(
            metrics.iter().all(|m| m.name != "warden_unused"),
            "a family with no label set is left out"
        );

        // `/metrics`: the same values, the label escaped.
        let text = registry.encode().unwrap();
        for line in [
            "warden_leases_received_total 7",
            "warden_runs{state=\"queued\",agent=\"a \\\"b\\\"\\nc\"} 3",
            "warden_run_duration_seconds_count 4",
            "warden_run_duration_seconds_bucket{le=\"0.1\"} 1",
            "warden_run_duration_seconds_bucket{le=\"1.0\"} 3",
            "warden_run_duration_seconds_bucket{le=\"+Inf\"} 4",
            "warden_fuel_bucket{le=\"+Inf\",state=\"queued\",agent=\"a \\\"b\\\"\\nc\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
