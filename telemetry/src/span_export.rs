//! Finished spans on their way to the collector: each encoded as an OTLP
//! `Span` (protobuf) the moment it closes, appended to a batch, and sent by
//! one exporter thread in `ExportTraceServiceRequest`s of up to
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans: when a batch is full, else every
//! `OTEL_BSP_SCHEDULE_DELAY`. At most `OTEL_BSP_MAX_QUEUE_SIZE` spans wait;
//! beyond that spans are dropped and counted (a warning says how many).
//!
//! A span is written once, into the request's bytes: nothing is kept of it
//! but those bytes, and the request around a batch is a few bytes of
//! framing.

use crate::otlp_env::Sender;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An attribute value as recorded.
pub(crate) enum Value<'a> {
    Str(&'a str),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// Appends length-delimited field `tag` holding `bytes`.
fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// The encoded length of length-delimited field `tag` of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Appends an OTLP `KeyValue` as length-delimited field `tag` (a span's
/// or a resource's `attributes`).
pub(crate) fn put_attribute(buf: &mut Vec<u8>, tag: u32, key: &str, value: Value<'_>) {
    // AnyValue: string_value = 1, bool_value = 2, int_value = 3,
    // double_value = 4.
    let any_len = match value {
        Value::Str(s) => delimited_len(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(i as u64),
        Value::F64(_) => key_len(4) + 8,
    };
    // KeyValue: key = 1, value = 2.
    let kv_len = delimited_len(1, key.len()) + delimited_len(2, any_len);
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(kv_len as u64, buf);
    put_bytes(buf, 1, key.as_bytes());
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(any_len as u64, buf);
    match value {
        Value::Str(s) => put_bytes(buf, 1, s.as_bytes()),
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            encode_varint(b as u64, buf);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// A finished span, ready to be written.
pub(crate) struct Finished<'a> {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent_span_id: u64,
    pub name: &'a str,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5
    /// consumer.
    pub kind: i32,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// The span's attributes, each already written as field 9.
    pub attributes: &'a [u8],
    /// OTLP's `StatusCode` (0 unset, 1 ok, 2 error) and message.
    pub status: (i32, &'a str),
}

impl Finished<'_> {
    /// The `Span` message's length.
    fn len(&self) -> usize {
        let mut n = delimited_len(1, 16) + delimited_len(2, 8);
        if self.parent_span_id != 0 {
            n += delimited_len(4, 8);
        }
        n += delimited_len(5, self.name.len());
        n += key_len(6) + encoded_len_varint(self.kind as u64);
        n += 2 * (key_len(7) + 8);
        n += self.attributes.len();
        if let Some(len) = self.status_len() {
            n += delimited_len(15, len);
        }
        n
    }

    /// The `Status` message's length, `None` when unset.
    fn status_len(&self) -> Option<usize> {
        let (code, message) = self.status;
        (code != 0 || !message.is_empty()).then(|| {
            let mut n = 0;
            if !message.is_empty() {
                n += delimited_len(2, message.len());
            }
            if code != 0 {
                n += key_len(3) + encoded_len_varint(code as u64);
            }
            n
        })
    }

    /// Appends the span as field `tag` (`ScopeSpans.spans` is 2).
    fn put(&self, buf: &mut Vec<u8>, tag: u32) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.len() as u64, buf);
        put_bytes(buf, 1, &self.trace_id.to_be_bytes());
        put_bytes(buf, 2, &self.span_id.to_be_bytes());
        if self.parent_span_id != 0 {
            put_bytes(buf, 4, &self.parent_span_id.to_be_bytes());
        }
        put_bytes(buf, 5, self.name.as_bytes());
        encode_key(6, WireType::Varint, buf);
        encode_varint(self.kind as u64, buf);
        for (tag, nanos) in [(7, self.start_unix_nanos), (8, self.end_unix_nanos)] {
            encode_key(tag, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&nanos.to_le_bytes());
        }
        buf.extend_from_slice(self.attributes);
        if let Some(len) = self.status_len() {
            let (code, message) = self.status;
            encode_key(15, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            if !message.is_empty() {
                put_bytes(buf, 2, message.as_bytes());
            }
            if code != 0 {
                encode_key(3, WireType::Varint, buf);
                encode_varint(code as u64, buf);
            }
        }
    }
}

/// The parts of an export request that do not change: the resource and
/// the instrumentation scope, written.
pub(crate) struct Envelope {
    /// `ResourceSpans.resource` (field 1).
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1).
    scope: Vec<u8>,
}

impl Envelope {
    pub(crate) fn new(resource_attributes: &[(String, String)]) -> Envelope {
        let mut attributes = Vec::new();
        for (k, v) in resource_attributes {
            put_attribute(&mut attributes, 1, k, Value::Str(v));
        }
        let mut resource = Vec::new();
        put_bytes(&mut resource, 1, &attributes);
        // InstrumentationScope: name = 1, version = 2.
        let mut scope_fields = Vec::new();
        put_bytes(&mut scope_fields, 1, b"warden");
        put_bytes(&mut scope_fields, 2, env!("CARGO_PKG_VERSION").as_bytes());
        let mut scope = Vec::new();
        put_bytes(&mut scope, 1, &scope_fields);
        Envelope { resource, scope }
    }

    /// An `ExportTraceServiceRequest` holding `spans` (written as
    /// `ScopeSpans.spans` fields).
    pub(crate) fn request(&self, spans: &[u8]) -> Vec<u8> {
        let scope_spans_len = self.scope.len() + spans.len();
        let resource_spans_len = self.resource.len() + delimited_len(2, scope_spans_len);
        let mut body = Vec::with_capacity(delimited_len(1, resource_spans_len));
        encode_key(1, WireType::LengthDelimited, &mut body);
        encode_varint(resource_spans_len as u64, &mut body);
        body.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut body);
        encode_varint(scope_spans_len as u64, &mut body);
        body.extend_from_slice(&self.scope);
        body.extend_from_slice(spans);
        body
    }
}

/// How spans are batched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchConfig {
    /// Most spans waiting (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048).
    pub max_queue: usize,
    /// Most spans in one request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default
    /// 512).
    pub max_batch: usize,
    /// The longest a span waits for a full batch (`OTEL_BSP_SCHEDULE_DELAY`,
    /// default 5 s).
    pub delay: Duration,
}

/// A batch being filled or waiting to be sent: written spans and how many.
pub(crate) struct Batch {
    pub spans: Vec<u8>,
    pub count: usize,
}

/// Spans waiting to be sent, shared by the layer (which adds) and the
/// exporter thread (which takes).
pub(crate) struct Queue {
    batches: Mutex<VecDeque<Batch>>,
    config: BatchConfig,
    /// Wakes the exporter: a batch is full, or shutdown.
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    dropped: AtomicU64,
}

impl Queue {
    pub(crate) fn new(config: BatchConfig) -> Queue {
        Queue {
            batches: Mutex::new(VecDeque::new()),
            config,
            wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Writes `span` into the last batch, or drops it when the queue is
    /// full.
    pub(crate) fn push(&self, span: &Finished<'_>) {
        let max_batch = self.config.max_batch;
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let waiting =
            batches.len().saturating_sub(1) * max_batch + batches.back().map_or(0, |b| b.count);
        if waiting >= self.config.max_queue {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if batches.back().is_none_or(|b| b.count >= max_batch) {
            batches.push_back(Batch {
                // Room for a typical batch (a few hundred bytes a span),
                // however large the configured batch.
                spans: Vec::with_capacity(max_batch.min(1024) * 256),
                count: 0,
            });
        }
        let batch = batches.back_mut().expect("a batch was just added");
        span.put(&mut batch.spans, 2);
        batch.count += 1;
        let full = batch.count == max_batch;
        drop(batches);
        if full {
            self.wake.notify_one();
        }
    }

    /// The oldest batch if it is full (or any batch, with `partial`).
    pub(crate) fn take(&self, partial: bool) -> Option<Batch> {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let ready = batches
            .front()
            .is_some_and(|b| partial || b.count >= self.config.max_batch);
        if ready { batches.pop_front() } else { None }
    }

    /// Asks the exporter to send what waits and stop.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The exporter: sends full batches as they fill, everything every
/// `delay`, and everything left when the queue stops (giving up on what is
/// left `timeout` after that).
pub(crate) async fn export(queue: &Queue, sender: Sender, envelope: Envelope, timeout: Duration) {
    let mut failing = false;
    let mut next_flush = Instant::now() + queue.config.delay;
    loop {
        let stopping = queue.stopping.load(Ordering::Acquire);
        let due = stopping || Instant::now() >= next_flush;
        if due {
            next_flush = Instant::now() + queue.config.delay;
        }
        let give_up = Instant::now() + timeout;
        while let Some(batch) = queue.take(due) {
            if stopping && Instant::now() >= give_up {
                let mut left = batch.count;
                while let Some(b) = queue.take(true) {
                    left += b.count;
                }
                tracing::warn!(
                    spans = left,
                    "OTLP export stopped: the collector took too long, spans not sent"
                );
                break;
            }
            match sender.send(envelope.request(&batch.spans)).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, spans = batch.count, "cannot export spans over OTLP; dropping them");
                }
                Err(_) => {}
            }
        }
        let dropped = queue.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "OTLP span queue full: spans dropped (raise OTEL_BSP_MAX_QUEUE_SIZE, or sample)"
            );
        }
        if stopping {
            return;
        }
        let wait = next_flush.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, queue.wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    #[test]
    fn spans_written_by_hand_decode_as_otlp() {
        let envelope = Envelope::new(&[("service.name".into(), "svc".into())]);
        let mut attributes = Vec::new();
        put_attribute(&mut attributes, 9, "s", Value::Str("text"));
        put_attribute(&mut attributes, 9, "i", Value::I64(-3));
        put_attribute(&mut attributes, 9, "f", Value::F64(1.5));
        put_attribute(&mut attributes, 9, "b", Value::Bool(true));
        let mut spans = Vec::new();
        let span = Finished {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_span_id: 7,
            name: "chat small",
            kind: 3,
            start_unix_nanos: 10,
            end_unix_nanos: 20,
            attributes: &attributes,
            status: (2, "boom"),
        };
        span.put(&mut spans, 2);
        Finished {
            parent_span_id: 0,
            status: (0, ""),
            attributes: &[],
            ..span
        }
        .put(&mut spans, 2);
        let request = ExportTraceServiceRequest::decode(&envelope.request(&spans)[..]).unwrap();
        let resource_spans = &request.resource_spans[0];
        let resource = resource_spans.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let scope_spans = &resource_spans.scope_spans[0];
        assert_eq!(scope_spans.scope.as_ref().unwrap().name, "warden");
        let [first, second] = &scope_spans.spans[..] else {
            panic!("{:?}", scope_spans.spans)
        };
        assert_eq!(
            hex(&first.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{first:?}"
        );
        assert_eq!(hex(&first.span_id), "00f067aa0ba902b7");
        assert_eq!(hex(&first.parent_span_id), "0000000000000007");
        assert_eq!(first.name, "chat small");
        assert_eq!(first.kind, 3);
        assert_eq!(
            (first.start_time_unix_nano, first.end_time_unix_nano),
            (10, 20)
        );
        let status = first.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        let values: Vec<_> = first
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_ref().unwrap().value.clone()))
            .collect();
        assert_eq!(
            values,
            [
                ("s", Some(any_value::Value::StringValue("text".into()))),
                ("i", Some(any_value::Value::IntValue(-3))),
                ("f", Some(any_value::Value::DoubleValue(1.5))),
                ("b", Some(any_value::Value::BoolValue(true))),
            ]
        );
        assert!(second.parent_span_id.is_empty() && second.status.is_none());
        assert!(second.attributes.is_empty());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_queue_batches_and_drops_beyond_its_size() {
        let queue = Queue::new(BatchConfig {
            max_queue: 5,
            max_batch: 2,
            delay: Duration::from_secs(1),
        });
        let span = Finished {
            trace_id: 1,
            span_id: 1,
            parent_span_id: 0,
            name: "s",
            kind: 1,
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            attributes: &[],
            status: (0, ""),
        };
        for _ in 0..7 {
            queue.push(&span);
        }
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 2);
        let counts: Vec<usize> = std::iter::from_fn(|| queue.take(false))
            .map(|b| b.count)
            .collect();
        assert_eq!(counts, [2, 2], "full batches only");
        assert_eq!(queue.take(true).map(|b| b.count), Some(1));
        assert!(queue.take(true).is_none());
    }
}
