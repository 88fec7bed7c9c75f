//! Traces: Warden's `tracing` spans exported as OpenTelemetry spans over
//! OTLP, when the standard variables ask for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
//! Without them there is no exporter and no layer: Warden's spans are then
//! filtered out before they are made, and tracing costs nothing.
//!
//! Honoured: `OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,HEADERS,
//! TIMEOUT,CERTIFICATE}` (protocol `grpc` or `http/protobuf`, the
//! default), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio`,
//! `parentbased_always_on`, the default, `parentbased_always_off`,
//! `parentbased_traceidratio`) with `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_{MAX_QUEUE_SIZE,MAX_EXPORT_BATCH_SIZE,SCHEDULE_DELAY}`,
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER=none`.
//!
//! Warden's layer does for its few kinds of span only what OTLP needs: a
//! span's attributes are written as protobuf when recorded, the span when
//! it closes ([`crate::span_export`]), and one thread sends them in
//! batches. Span fields named `otel.kind`, `otel.name`, `otel.status_code`
//! and `otel.status_message` set the span's kind, name and status; events
//! are not exported (an agent's log lines are the run's logs).
//!
//! Trace context crosses processes as a W3C `traceparent`
//! ([`set_parent`], [`traceparent`]): a submit's span is the parent of
//! every attempt's lease span on the nodes.

use crate::otlp_env::{OtlpVars, Sender, resource_attributes, unix_nanos};
use crate::span_export::{self, BatchConfig, Envelope, Finished, Queue, Value};
use std::sync::Arc;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// Exports spans while held; [`Tracing::shutdown`] sends what is left.
pub struct Tracing {
    /// Where spans go, in words.
    destination: String,
    queue: Arc<Queue>,
    sampler: Sampler,
    exporter: std::thread::JoinHandle<()>,
}

impl Tracing {
    /// The exporter the environment asks for, or `None` when it asks for
    /// none. An error names the variable that is wrong.
    pub fn from_env(default_service: &str) -> Result<Option<Self>, String> {
        Self::from_vars(default_service, |name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] with the variables read through `var`.
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let vars = OtlpVars::new(&var, "TRACES");
        let Some(endpoint) = vars.endpoint()? else {
            return Ok(None);
        };
        let destination = endpoint.describe();
        let sampler = Sampler::from_vars(&vars)?;
        let batch = batch_config(&vars)?;
        let envelope = Envelope::new(&resource_attributes(&vars, default_service));
        let queue = Arc::new(Queue::new(batch));
        // The exporter's clients run on its own thread's runtime: spans
        // keep going out however busy the process's runtime is, and
        // shutdown waits for them outside any runtime.
        let (ready, started) = std::sync::mpsc::sync_channel(1);
        let exporter = std::thread::Builder::new()
            .name("warden-otlp-spans".into())
            .spawn({
                let queue = queue.clone();
                move || {
                    let timeout = endpoint.timeout;
                    let start = || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| format!("OTLP span exporter: {e}"))?;
                        let sender = {
                            let _in_runtime = runtime.enter();
                            Sender::new(
                                endpoint,
                                "opentelemetry.proto.collector.trace.v1.TraceService",
                            )?
                        };
                        Ok::<_, String>((runtime, sender))
                    };
                    match start() {
                        Ok((runtime, sender)) => {
                            let _ = ready.send(Ok(()));
                            runtime
                                .block_on(span_export::export(&queue, sender, envelope, timeout));
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                }
            })
            .map_err(|e| format!("OTLP span exporter: {e}"))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Some(Tracing {
                destination,
                queue,
                sampler,
                exporter,
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the OTLP span exporter did not start".into()),
        }
    }

    /// Where spans go, in words: `URL over OTLP/HTTP`.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The `tracing` layer that turns Warden's spans (info and above) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        SpanLayer {
            queue: self.queue.clone(),
            sampler: self.sampler,
        }
        .with_filter(tracing_subscriber::filter::filter_fn(exported))
    }

    /// Sends the spans not yet exported and stops.
    pub fn shutdown(self) {
        self.queue.stop();
        if self.exporter.join().is_err() {
            eprintln!("warning: the OTLP span exporter failed");
        }
    }
}

/// Whether [`Tracing::layer`] exports what `meta` describes: Warden's own
/// spans, info and above.
pub fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("warden") && *meta.level() <= tracing::Level::INFO
}

/// A number from variable `name`, `default` when unset; at least 1.
fn positive(vars: &OtlpVars<'_>, name: &str, default: u64) -> Result<u64, String> {
    match vars.get(name) {
        None => Ok(default),
        Some((_, v)) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name}={v}: not a whole number above 0")),
    }
}

/// `OTEL_BSP_*`, with the specification's defaults.
fn batch_config(vars: &OtlpVars<'_>) -> Result<BatchConfig, String> {
    let max_queue = positive(vars, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)? as usize;
    let max_batch = positive(vars, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)? as usize;
    let delay = positive(vars, "OTEL_BSP_SCHEDULE_DELAY", 5000)?;
    Ok(BatchConfig {
        max_queue,
        max_batch: max_batch.min(max_queue),
        delay: Duration::from_millis(delay),
    })
}

/// Which spans are recorded and exported (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampler {
    /// A span with a parent follows the parent's decision.
    parent_based: bool,
    /// Spans below this bound (of a trace id's low 63 bits) are sampled
    /// when deciding anew: 2^63 samples all, 0 none.
    bound: u64,
}

impl Sampler {
    fn from_vars(vars: &OtlpVars<'_>) -> Result<Sampler, String> {
        let name = vars
            .get("OTEL_TRACES_SAMPLER")
            .map_or("parentbased_always_on".to_string(), |(_, v)| v);
        let (parent_based, root) = match name.strip_prefix("parentbased_") {
            Some(root) => (true, root),
            None => (false, name.as_str()),
        };
        let ratio = match root {
            "always_on" => 1.0,
            "always_off" => 0.0,
            "traceidratio" => match vars.get("OTEL_TRACES_SAMPLER_ARG") {
                None => 1.0,
                Some((_, v)) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG={v}: not a ratio from 0 to 1")
                    })?,
            },
            _ => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={name}: Warden samples with always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off or \
                     parentbased_traceidratio"
                ));
            }
        };
        Ok(Sampler {
            parent_based,
            bound: (ratio * (1u64 << 63) as f64) as u64,
        })
    }

    /// Whether a span of `trace_id` is sampled, given whether its parent
    /// (if it has one) was.
    fn sampled(&self, parent: Option<bool>, trace_id: u128) -> bool {
        match parent {
            Some(parent) if self.parent_based => parent,
            _ => ((trace_id as u64) >> 1) < self.bound,
        }
    }
}

/// What is kept of an open span: its identity and, when sampled, what it
/// will be exported with.
struct Open {
    trace_id: u128,
    span_id: u64,
    /// 0 for a root span.
    parent_span_id: u64,
    sampled: bool,
    name: &'static str,
    /// `otel.name`, when set.
    renamed: Option<String>,
    /// OTLP's span kind (`otel.kind`; 1, internal, by default).
    kind: i32,
    /// OTLP's status code (`otel.status_code`) and message.
    status: i32,
    message: String,
    start_unix_nanos: u64,
    /// The attributes, written as protobuf (`Span.attributes` fields).
    attributes: Vec<u8>,
}

impl Visit for Open {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "otel.kind" => {
                self.kind = match value {
                    "server" => 2,
                    "client" => 3,
                    "producer" => 4,
                    "consumer" => 5,
                    _ => 1,
                }
            }
            "otel.name" => self.renamed = Some(value.to_string()),
            "otel.status_code" => {
                self.status = if value.eq_ignore_ascii_case("error") {
                    2
                } else if value.eq_ignore_ascii_case("ok") {
                    1
                } else {
                    0
                }
            }
            "otel.status_message" | "otel.status_description" => self.message = value.to_string(),
            name => span_export::put_attribute(&mut self.attributes, 9, name, Value::Str(value)),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"))
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string())
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        span_export::put_attribute(&mut self.attributes, 9, field.name(), Value::I64(value))
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.record_i64(field, value),
            Err(_) => self.record_str(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        span_export::put_attribute(&mut self.attributes, 9, field.name(), Value::F64(value))
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        span_export::put_attribute(&mut self.attributes, 9, field.name(), Value::Bool(value))
    }
}

/// A random id, never 0.
fn random_id<T: Default + PartialEq>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    use rand::Rng;
    let mut rng = rand::rng();
    loop {
        let id: T = rng.random();
        if id != T::default() {
            return id;
        }
    }
}

/// Room for a span's attributes, reserved up front (Warden's spans have a
/// handful).
const ATTRIBUTE_BYTES: usize = 256;

/// The layer: spans in, OTLP out.
struct SpanLayer {
    queue: Arc<Queue>,
    sampler: Sampler,
}

impl<S> Layer<S> for SpanLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            attrs.parent().and_then(|parent| ctx.span(parent))
        };
        let parent = parent.and_then(|parent| {
            let extensions = parent.extensions();
            let open = extensions.get::<Open>()?;
            Some((open.trace_id, open.span_id, open.sampled))
        });
        let trace_id = parent.map_or_else(random_id, |p| p.0);
        let sampled = self.sampler.sampled(parent.map(|p| p.2), trace_id);
        let mut open = Open {
            trace_id,
            span_id: random_id(),
            parent_span_id: parent.map_or(0, |p| p.1),
            sampled,
            name: attrs.metadata().name(),
            renamed: None,
            kind: 1,
            status: 0,
            message: String::new(),
            start_unix_nanos: unix_nanos(),
            attributes: Vec::new(),
        };
        // A root span may yet be given a sampled remote parent
        // ([`set_parent`]): its attributes are kept.
        if sampled || parent.is_none() {
            open.attributes.reserve(ATTRIBUTE_BYTES);
            attrs.record(&mut open);
        }
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(open) = span.extensions_mut().get_mut::<Open>()
            && open.sampled
        {
            values.record(open);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        if open.sampled {
            self.queue.push(&Finished {
                trace_id: open.trace_id,
                span_id: open.span_id,
                parent_span_id: open.parent_span_id,
                name: open.renamed.as_deref().unwrap_or(open.name),
                kind: open.kind,
                start_unix_nanos: open.start_unix_nanos,
                end_unix_nanos: unix_nanos(),
                attributes: &open.attributes,
                status: (open.status, &open.message),
            });
        }
    }
}

/// Makes the trace `traceparent` names (W3C) the parent of `span`, which
/// must not have been entered yet. A malformed or empty one changes
/// nothing.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let Some((trace_id, parent_span_id, flags)) = parse_traceparent(traceparent) else {
        return;
    };
    with_open(span, |layer, open| {
        open.trace_id = trace_id;
        open.parent_span_id = parent_span_id;
        open.sampled = layer.sampler.sampled(Some(flags & 1 == 1), trace_id);
    });
}

/// The W3C traceparent of `span`; `None` when spans are not exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    with_open(span, |_, open| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            open.trace_id, open.span_id, open.sampled as u8
        )
    })
}

/// Runs `f` on what Warden's layer keeps of `span`; `None` when the span
/// is not exported.
fn with_open<T>(span: &tracing::Span, f: impl FnOnce(&SpanLayer, &mut Open) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let layer = dispatch.downcast_ref::<SpanLayer>()?;
        let data = dispatch.downcast_ref::<Registry>()?.span(id)?;
        let mut extensions = data.extensions_mut();
        Some(f(layer, extensions.get_mut::<Open>()?))
    })
    .flatten()
}

/// The trace id, parent span id and flags a W3C traceparent (`00-` 32 hex
/// digits `-` 16 hex digits `-` 2 hex digits, lowercase, ids not all zero)
/// holds; `None` when `text` is not one.
fn parse_traceparent(text: &str) -> Option<(u128, u64, u8)> {
    let mut parts = text.split('-');
    let mut hex = |n: usize| {
        parts.next().filter(|s| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    let (version, trace_id, span_id, flags) = (hex(2)?, hex(32)?, hex(16)?, hex(2)?);
    if parts.next().is_some() || version == "ff" {
        return None;
    }
    Some((
        u128::from_str_radix(trace_id, 16)
            .ok()
            .filter(|id| *id != 0)?,
        u64::from_str_radix(span_id, 16)
            .ok()
            .filter(|id| *id != 0)?,
        u8::from_str_radix(flags, 16).ok()?,
    ))
}

/// Checks that `text` is a W3C traceparent (`00-` 32 hex digits `-` 16 hex
/// digits `-` 2 hex digits, ids not all zero).
pub fn check_traceparent(text: &str) -> Result<(), String> {
    if parse_traceparent(text).is_some() {
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
mod tests;
