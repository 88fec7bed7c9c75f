//! [`HostMetrics`]: what the capabilities count for every run of a node:
//! LLM calls (latency, errors, tokens by provider and model, as the
//! OpenTelemetry GenAI conventions name them) and outgoing HTTP requests
//! (sent, failed, denied and why). Labels are bounded: models beyond the
//! first [`MAX_MODELS`] seen are counted as `other`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use warden_core::label_set;
use warden_core::metrics::{Counter, Family, Histogram, Registry, Unit, exponential_buckets};

/// Distinct model names kept as label values.
pub const MAX_MODELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct GenAiLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    /// Empty when the call succeeded, else the error's name.
    pub error_type: &'static str,
}
label_set!(GenAiLabels {
    gen_ai_operation_name,
    gen_ai_provider_name,
    gen_ai_request_model,
    error_type
});

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TokenLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: &'static str,
    pub gen_ai_request_model: String,
    /// `input` or `output`.
    pub gen_ai_token_type: &'static str,
}
label_set!(TokenLabels {
    gen_ai_operation_name,
    gen_ai_provider_name,
    gen_ai_request_model,
    gen_ai_token_type
});

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HttpLabels {
    /// `response` (an answer came, any status), `error` (no answer:
    /// connect, TLS, timeout), or `denied_policy`, `denied_address`,
    /// `denied_budget` (refused before sending).
    pub outcome: &'static str,
}
label_set!(HttpLabels { outcome });

/// The capabilities' metrics, shared by every run of a node.
#[derive(Clone, Debug)]
pub struct HostMetrics {
    operation_duration: Family<GenAiLabels, Histogram>,
    token_usage: Family<TokenLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    models: Arc<Mutex<HashSet<String>>>,
}

/// `value`'s first 256 bytes (cut at a character's edge): a model name is
/// the guest's word. The registry escapes label values for the text format.
fn cut(value: &str) -> String {
    value[..value.floor_char_boundary(256)].to_string()
}

impl Default for HostMetrics {
    fn default() -> Self {
        HostMetrics {
            // The GenAI conventions' advice: 10 ms to ~82 s.
            operation_duration: Family::new(|| Histogram::new(exponential_buckets(0.01, 2.0, 14))),
            // 1 to 4^13 (~67 M) tokens.
            token_usage: Family::new(|| Histogram::new(exponential_buckets(1.0, 4.0, 14))),
            http_requests: Family::default(),
            models: Arc::default(),
        }
    }
}

impl HostMetrics {
    /// Adds every metric to `registry`: the GenAI ones as OpenTelemetry
    /// names them, Warden's own named `warden_…`.
    pub fn register(&self, r: &mut Registry) {
        let mut gen_ai = r.prefixed("gen_ai_client");
        gen_ai.register_with_unit(
            "operation_duration",
            "GenAI operation duration (gen_ai.client.operation.duration): LLM calls by operation, provider, model and error type",
            Unit::Seconds,
            self.operation_duration.clone(),
        );
        gen_ai.register(
            "token_usage",
            "Tokens used per LLM call (gen_ai.client.token.usage), by operation, provider, model and token type (input, output)",
            self.token_usage.clone(),
        );
        // Warden's own, unlike the GenAI ones: `warden_http_client_requests`.
        r.prefixed(warden_core::METRICS_PREFIX).register(
            "http_client_requests",
            "Outgoing HTTP requests of agents by outcome: response, error, or denied (denied_policy: not on the grant's allow-list; denied_address: a refused address after DNS; denied_budget: over the run's request budget)",
            self.http_requests.clone(),
        );
    }

    /// `model` (the guest's word, with a `*` grant) as a label value:
    /// itself (its first 256 bytes) among the first [`MAX_MODELS`] seen,
    /// else `other`.
    fn model(&self, model: &str) -> String {
        let model = cut(model);
        let mut seen = self.models.lock().unwrap();
        if seen.contains(&model) {
            return model;
        }
        if seen.len() < MAX_MODELS {
            seen.insert(model.clone());
            return model;
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
        let mut registry = warden_core::metrics::Registry::default();
        metrics.register(&mut registry);
        let hostile = "m\"} 1\nwarden_forged_total 999\n# \\";
        metrics.llm_call("chat", hostile, 0.5, (3, 4), "");
        let text = registry.encode().unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("warden_forged")),
            "{text}"
        );
        let escaped = r#"gen_ai_request_model="m\"} 1\nwarden_forged_total 999\n# \\""#;
        assert!(text.contains(escaped), "{text}");
        // A long name is cut, at a character's edge.
        let long = "é".repeat(200);
        metrics.llm_call("chat", &long, 0.5, (1, 1), "");
        let text = registry.encode().unwrap();
        assert!(
            text.contains(&format!("model=\"{}\"", "é".repeat(128))),
            "{text}"
        );
        assert!(!text.contains(&"é".repeat(129)), "{text}");
        // Every sample line is one metric: name, labels, value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gen_ai_client_"), "{line:?} in {text}");
        }
    }
}
