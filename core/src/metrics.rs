//! Warden's metric registry: every metric is served as OpenMetrics text on
//! `/metrics` (by prometheus-client's encoder) and read as values for the
//! OTLP push ([`Registry::read`]), from the same instruments.
//!
//! prometheus-client gives a registry's values only through its encoders,
//! so the two instruments whose values it keeps to itself, the labelled
//! [`Family`] and the [`Histogram`], are Warden's own; counters and gauges
//! are prometheus-client's. Label sets are [`LabelSet`]s (see
//! [`label_set!`](crate::label_set)): their values are escaped for the text
//! format here, once, and reach OTLP as they are.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::TypedMetric;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

pub use prometheus_client::metrics::MetricType;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::exponential_buckets;
pub use prometheus_client::registry::Unit;

/// A metric's labels: names and values, in order.
pub type Labels = Vec<(&'static str, String)>;

/// A metric's label set: a struct of named values.
pub trait LabelSet: Clone + Hash + Eq + Send + Sync + std::fmt::Debug + 'static {
    /// The labels, in order.
    fn labels(&self) -> Labels;
}

/// Makes a struct a [`LabelSet`]: `label_set!(AgentLabel { tenant, agent });`
/// names every field (one left out does not compile), in the order the
/// labels are written (the struct's, by convention).
#[macro_export]
macro_rules! label_set {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl $crate::metrics::LabelSet for $ty {
            fn labels(&self) -> $crate::metrics::Labels {
                let $ty { $($field),+ } = self;
                vec![$((stringify!($field), $field.to_string())),+]
            }
        }
    };
}

/// One reading of a metric with one label set.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter's total or a gauge's value.
    Number(f64),
    Histogram(HistogramValue),
}

/// A histogram's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    pub sum: f64,
    pub count: u64,
    /// The buckets' upper bounds, without the last (unbounded) one.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative): one more than `bounds`.
    pub counts: Vec<u64>,
}

/// A metric whose values can be read (its kind is
/// [`EncodeMetric::metric_type`]).
pub trait Metric: EncodeMetric + Send + Sync + std::fmt::Debug + 'static {
    /// Its readings, by label set.
    fn read(&self) -> Vec<(Labels, Value)>;
}

impl Metric for Counter {
    fn read(&self) -> Vec<(Labels, Value)> {
        vec![(Vec::new(), Value::Number(self.get() as f64))]
    }
}

impl Metric for Gauge {
    fn read(&self) -> Vec<(Labels, Value)> {
        vec![(Vec::new(), Value::Number(self.get() as f64))]
    }
}

impl Metric for Gauge<f64, AtomicU64> {
    fn read(&self) -> Vec<(Labels, Value)> {
        vec![(Vec::new(), Value::Number(self.get()))]
    }
}

/// A histogram with fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Mutex<HistogramValue>>,
}

impl Histogram {
    /// A histogram with buckets up to each of `bounds` (ascending), and one
    /// above them.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        Histogram {
            inner: Arc::new(Mutex::new(HistogramValue {
                sum: 0.0,
                count: 0,
                counts: vec![0; bounds.len() + 1],
                bounds,
            })),
        }
    }

    /// Counts `v` in the first bucket whose bound is at least `v` (NaN is
    /// not counted).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = h.bounds.partition_point(|bound| *bound < v);
        h.counts[bucket] += 1;
        h.sum += v;
        h.count += 1;
    }

    fn value(&self) -> HistogramValue {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = self.value();
        // prometheus-client's form: (upper bound, count), f64::MAX for +Inf.
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(h.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Metric for Histogram {
    fn read(&self) -> Vec<(Labels, Value)> {
        vec![(Vec::new(), Value::Histogram(self.value()))]
    }
}

/// One metric per label set, made on first use.
pub struct Family<L, M> {
    metrics: Arc<RwLock<HashMap<L, M>>>,
    make: fn() -> M,
}

impl<L, M> Clone for Family<L, M> {
    fn clone(&self) -> Self {
        Family {
            metrics: self.metrics.clone(),
            make: self.make,
        }
    }
}

impl<L, M> std::fmt::Debug for Family<L, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family").finish_non_exhaustive()
    }
}

impl<L: LabelSet, M: Metric + TypedMetric + Default> Default for Family<L, M> {
    fn default() -> Self {
        Family::new(M::default)
    }
}

impl<L: LabelSet, M: Metric + TypedMetric> Family<L, M> {
    /// A family whose metrics `make` makes (a histogram's buckets).
    pub fn new(make: fn() -> M) -> Family<L, M> {
        Family {
            metrics: Arc::default(),
            make,
        }
    }

    /// The metric for `labels`, made if there is none.
    pub fn get_or_create(&self, labels: &L) -> M
    where
        M: Clone,
    {
        if let Some(m) = self.read_lock().get(labels) {
            return m.clone();
        }
        let mut metrics = self.metrics.write().unwrap_or_else(|e| e.into_inner());
        metrics
            .entry(labels.clone())
            .or_insert_with(self.make)
            .clone()
    }

    /// Forgets every label set (gauges set afresh at each scrape).
    pub fn clear(&self) {
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, HashMap<L, M>> {
        self.metrics.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// `value` escaped for a label in the text formats (`\\`, `\"`, `\n`):
/// prometheus-client writes label values as they are, so a value a guest or
/// a tenant chose could otherwise end the label and write metrics of its
/// own.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl<L: LabelSet, M: Metric + TypedMetric> EncodeMetric for Family<L, M> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, metric) in self.read_lock().iter() {
            let escaped: Vec<(&str, String)> = labels
                .labels()
                .into_iter()
                .map(|(k, v)| (k, escape(&v)))
                .collect();
            metric.encode(encoder.encode_family(&escaped)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.read_lock().is_empty()
    }
}

impl<L: LabelSet, M: Metric + TypedMetric> Metric for Family<L, M> {
    fn read(&self) -> Vec<(Labels, Value)> {
        self.read_lock()
            .iter()
            .flat_map(|(labels, metric)| {
                let labels = labels.labels();
                metric.read().into_iter().map(move |(inner, value)| {
                    let mut all = labels.clone();
                    all.extend(inner);
                    (all, value)
                })
            })
            .collect()
    }
}

/// A metric as registered.
#[derive(Debug)]
struct Registered {
    name: String,
    help: String,
    unit: Option<Unit>,
    metric: Box<dyn Metric>,
}

/// One registered metric's readings.
#[derive(Debug)]
pub struct Reading {
    /// As `/metrics` names the family: with the unit's suffix, without a
    /// counter's `_total`.
    pub name: String,
    pub help: String,
    /// `seconds`, `bytes`, or empty.
    pub unit: String,
    pub kind: MetricType,
    pub values: Vec<(Labels, Value)>,
}

/// Every metric of a process, for `/metrics` and OTLP.
#[derive(Default)]
pub struct Registry {
    text: prometheus_client::registry::Registry,
    metrics: Vec<Registered>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("metrics", &self.metrics.len())
            .finish()
    }
}

impl Registry {
    /// Registers metrics named `PREFIX_NAME` (`warden_runs`).
    pub fn prefixed<'a>(&'a mut self, prefix: &'a str) -> Prefixed<'a> {
        Prefixed {
            registry: self,
            prefix,
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.text)?;
        Ok(out)
    }

    /// Every metric's readings now.
    pub fn read(&self) -> Vec<Reading> {
        self.metrics
            .iter()
            .map(|r| {
                let unit = r.unit.as_ref().map(unit_name).unwrap_or_default();
                Reading {
                    name: match unit.as_str() {
                        "" => r.name.clone(),
                        unit => format!("{}_{unit}", r.name),
                    },
                    help: r.help.clone(),
                    unit,
                    kind: r.metric.metric_type(),
                    values: r.metric.read(),
                }
            })
            .collect()
    }
}

/// A [`Registry`] that names each metric `PREFIX_NAME`.
pub struct Prefixed<'a> {
    registry: &'a mut Registry,
    prefix: &'a str,
}

impl Prefixed<'_> {
    /// Adds `metric` as `PREFIX_name`.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric + Clone) {
        self.add(name, help, None, metric);
    }

    /// Adds `metric` as `PREFIX_name`, in `unit` (which suffixes its name).
    pub fn register_with_unit(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: impl Metric + Clone,
    ) {
        self.add(name, help, Some(unit), metric);
    }

    fn add(&mut self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric + Clone) {
        let name = format!("{}_{name}", self.prefix);
        let text = &mut self.registry.text;
        match unit.clone() {
            Some(unit) => text.register_with_unit(&name, help, unit, metric.clone()),
            None => text.register(&name, help, metric.clone()),
        }
        self.registry.metrics.push(Registered {
            name,
            help: help.to_string(),
            unit,
            metric: Box::new(metric),
        });
    }
}

/// A unit as the text format writes it.
fn unit_name(unit: &Unit) -> String {
    match unit {
        Unit::Amperes => "amperes",
        Unit::Bytes => "bytes",
        Unit::Celsius => "celsius",
        Unit::Grams => "grams",
        Unit::Joules => "joules",
        Unit::Meters => "meters",
        Unit::Ratios => "ratios",
        Unit::Seconds => "seconds",
        Unit::Volts => "volts",
        Unit::Other(other) => other,
    }
    .to_string()
}
