//! [`HostMetrics`]: what the capabilities count for every run of a node:
//! LLM calls (latency, errors, tokens by provider and model, as the
//! OpenTelemetry GenAI conventions name them) and outgoing HTTP requests
//! (sent, failed, denied and why). Labels are bounded: models beyond the
//! first [`MAX_MODELS`] seen are counted as `other`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Distinct model names kept as label values.
pub const MAX_MODELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GenAiLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    /// Empty when the call succeeded, else the error's name.
    pub error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    /// `input` or `output`.
    pub gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `response` (an answer came, any status), `error` (no answer:
    /// connect, TLS, timeout), or `denied_policy`, `denied_address`,
    /// `denied_budget` (refused before sending).
    pub outcome: &'static str,
}

/// The capabilities' metrics, shared by every run of a node.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    operation_duration: Family<GenAiLabels, Histogram>,
    token_usage: Family<TokenLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    models: Arc<Mutex<HashSet<String>>>,
}

/// `value` escaped for a label in the Prometheus and OpenMetrics text
/// formats (`\\`, `\"`, `\n`): prometheus-client writes label values as
/// they are, so a model name a guest chose could otherwise end the label
/// and write metrics of its own into the node's exposition. Only its first
/// 256 bytes are kept.
fn escape_label(value: &str) -> String {
    let mut end = value.len().min(256);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end);
    for c in value[..end].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            // The GenAI conventions' advice: 10 ms to ~82 s.
            operation_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 14))
            }),
            // 1 to 4^13 (~67 M) tokens.
            token_usage: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 4.0, 14))
            }),
            http_requests: Family::default(),
            models: Arc::default(),
        }
    }
}

impl HostMetrics {
    /// Adds every metric to `registry`: the GenAI ones as OpenTelemetry
    /// names them, Warden's own named `warden_…`.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (gen_ai.client.operation.duration): LLM calls by operation, provider, model and error type",
            Unit::Seconds,
            self.operation_duration.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "Tokens used per LLM call (gen_ai.client.token.usage), by operation, provider, model and token type (input, output)",
            self.token_usage.clone(),
        );
        // Warden's own, unlike the GenAI ones: `warden_http_client_requests`.
        r.sub_registry_with_prefix(warden_core::METRICS_PREFIX).register(
            "http_client_requests",
            "Outgoing HTTP requests of agents by outcome: response, error, or denied (denied_policy: not on the grant's allow-list; denied_address: a refused address after DNS; denied_budget: over the run's request budget)",
            self.http_requests.clone(),
        );
    }

    /// `model` (the guest's word, with a `*` grant) as a label value:
    /// itself among the first [`MAX_MODELS`] seen, else `other`; escaped
    /// as the exposition format wants ([`escape_label`]).
    fn model(&self, model: &str) -> String {
        let mut seen = self.models.lock().unwrap();
        if seen.contains(model) {
            return escape_label(model);
        }
        if seen.len() < MAX_MODELS {
            seen.insert(model.to_string());
            return escape_label(model);
        }
        "other".to_string()
    }

    /// Counts one LLM call: how long it took, its tokens, its error.
    pub fn llm_call(
        &self,
        operation: &'static str,
        model: &str,
        seconds: f64,
        tokens: (u64, u64),
        error_type: &'static str,
    ) {
        let model = self.model(model);
        self.operation_duration
            .get_or_create(&GenAiLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: PROVIDER,
                gen_ai_request_model: model.clone(),
                error_type,
            })
            .observe(seconds);
        if !error_type.is_empty() {
            return;
        }
        for (token_type, n) in [("input", tokens.0), ("output", tokens.1)] {
            if operation == "embeddings" && token_type == "output" {
                continue;
            }
            self.token_usage
                .get_or_create(&TokenLabels {
                    gen_ai_operation_name: operation,
                    gen_ai_provider_name: PROVIDER,
                    gen_ai_request_model: model.clone(),
                    gen_ai_token_type: token_type,
                })
                .observe(n as f64);
        }
    }

    /// Counts one outgoing HTTP request by its outcome.
    pub fn http_request(&self, outcome: &'static str) {
        self.http_requests
            .get_or_create(&HttpLabels { outcome })
            .inc();
    }
}

/// The provider name Warden's LLM calls report: it speaks the OpenAI API
/// (to OpenAI or a compatible server).
pub const PROVIDER: &str = "openai";

#[cfg(test)]
mod tests {
    use super::HostMetrics;

    /// A guest names the model (with a `*` grant): whatever it writes stays
    /// inside its label value, and the exposition keeps its own metrics.
    #[test]
    fn a_model_name_cannot_write_metrics_into_the_exposition() {
        let metrics = HostMetrics::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("warden");
        metrics.register(&mut registry);
        let hostile = "m\"} 1\nwarden_forged_total 999\n# \\";
        metrics.llm_call("chat", hostile, 0.5, (3, 4), "");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("warden_forged")),
            "{text}"
        );
        let escaped = r#"gen_ai_request_model="m\"} 1\nwarden_forged_total 999\n# \\""#;
        assert!(text.contains(escaped), "{text}");
        // A long name is cut, at a character's edge.
        let long = "é".repeat(200);
        metrics.llm_call("chat", &long, 0.5, (1, 1), "");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!("model=\"{}\"", "é".repeat(128))),
            "{text}"
        );
        assert!(!text.contains(&"é".repeat(129)), "{text}");
        // Every sample line is one metric: name, labels, value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("warden_"), "{line:?} in {text}");
        }
    }
}
