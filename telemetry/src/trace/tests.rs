//! Unit tests of `trace`.

use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracing_subscriber::prelude::*;

fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn sampler(pairs: &'static [(&'static str, &'static str)]) -> Result<Sampler, String> {
    Sampler::from_vars(&OtlpVars::new(&vars(pairs), "TRACES"))
}

/// Runs `make` under a subscriber with only [`SpanLayer`] sampling
/// with `sampler`; the spans it exported.
fn spans_of(sampler: Sampler, make: impl FnOnce()) -> Vec<Span> {
    let queue = Arc::new(Queue::new(BatchConfig {
        max_queue: 2000,
        max_batch: 100,
        delay: Duration::from_secs(1),
    }));
    let layer = SpanLayer {
        queue: queue.clone(),
        sampler,
    };
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), make);
    let envelope = Envelope::new(&[]);
    let mut spans = Vec::new();
    while let Some(batch) = queue.take(true) {
        let request =
            ExportTraceServiceRequest::decode(&envelope.request(&batch.spans)[..]).unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn spans_nest_under_a_remote_parent_with_kinds_names_statuses_and_attributes() {
    let mut written = None;
    let spans = spans_of(sampler(&[]).unwrap(), || {
        let submit = tracing::info_span!("submit", otel.kind = "server", warden.agent = "a@1");
        set_parent(&submit, REMOTE);
        written = traceparent(&submit);
        let _in_submit = submit.enter();
        let name = "chat small";
        let chat = tracing::info_span!(
            "chat",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            big = u64::MAX,
            ok = true,
            ratio = 0.5,
        );
        chat.record("otel.status_code", "ERROR");
        chat.record("gen_ai.usage.input_tokens", 12u64);
    });
    let [chat, submit] = &spans[..] else {
        panic!("{spans:#?}")
    };
    let written = written.expect("a traceparent");
    assert_eq!(
        written,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&submit.span_id)
        )
    );
    for span in [chat, submit] {
        assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    }
    assert_eq!(hex(&submit.parent_span_id), "00f067aa0ba902b7");
    assert_eq!((submit.name.as_str(), submit.kind), ("submit", 2));
    assert_eq!(chat.parent_span_id, submit.span_id);
    assert_eq!((chat.name.as_str(), chat.kind), ("chat small", 3));
    assert_eq!(chat.status.as_ref().map(|s| s.code), Some(2));
    let attributes: Vec<String> = chat
        .attributes
        .iter()
        .map(|kv| {
            format!(
                "{}={:?}",
                kv.key,
                kv.value.as_ref().unwrap().value.as_ref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        attributes,
        [
            "big=StringValue(\"18446744073709551615\")",
            "ok=BoolValue(true)",
            "ratio=DoubleValue(0.5)",
            "gen_ai.usage.input_tokens=IntValue(12)",
        ]
    );
    assert_eq!(submit.attributes[0].key, "warden.agent");
}

#[test]
fn the_sampler_decides_at_the_root_and_children_follow() {
    let off = sampler(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]).unwrap();
    let mut flags = Vec::new();
    // A new trace: not sampled, and said so in its traceparent.
    let spans = spans_of(off, || {
        let root = tracing::info_span!("root");
        flags.push(traceparent(&root).unwrap());
        let _in = root.enter();
        tracing::info_span!("child").in_scope(|| {});
    });
    assert!(spans.is_empty(), "{spans:#?}");
    assert!(flags[0].ends_with("-00"), "{flags:?}");
    // A sampled remote parent wins, and its attributes are kept.
    let spans = spans_of(off, || {
        let root = tracing::info_span!("root", a = 1);
        set_parent(&root, REMOTE);
        let _in = root.enter();
        tracing::info_span!("child").in_scope(|| {});
    });
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[1].attributes[0].key, "a");
    // A ratio of a half samples about half the traces.
    let half = sampler(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ])
    .unwrap();
    let spans = spans_of(half, || {
        for _ in 0..1000 {
            tracing::info_span!("root").in_scope(|| {});
        }
    });
    assert!((350..650).contains(&spans.len()), "{}", spans.len());
}

#[test]
fn wrong_sampler_and_batch_variables_are_named() {
    let e = sampler(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]).unwrap_err();
    assert!(e.contains("OTEL_TRACES_SAMPLER=jaeger_remote"), "{e}");
    let e = sampler(&[
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ])
    .unwrap_err();
    assert!(e.contains("OTEL_TRACES_SAMPLER_ARG=1.5"), "{e}");
    let e = batch_config(&OtlpVars::new(
        &vars(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]),
        "TRACES",
    ))
    .unwrap_err();
    assert!(e.contains("OTEL_BSP_MAX_QUEUE_SIZE=0"), "{e}");
    let config = batch_config(&OtlpVars::new(
        &vars(&[("OTEL_BSP_MAX_QUEUE_SIZE", "100")]),
        "TRACES",
    ))
    .unwrap();
    assert_eq!((config.max_queue, config.max_batch), (100, 100));
}

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
