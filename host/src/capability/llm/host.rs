//! `warden:agent/llm` for [`LlmCtx`]: grant check, budget reservation, the
//! provider call, settlement on the usage the provider reports. Each call
//! is a client span named as the OpenTelemetry GenAI conventions say
//! (`chat MODEL`, `embeddings MODEL`, with `gen_ai.*` attributes; never the
//! prompt or the answer) and is counted in [`crate::metrics::HostMetrics`].

use super::{LlmCtx, ProviderChat, estimate_tokens};
use crate::bindings::llm::{self, ChatRequest, ChatResponse, Error, FinishReason};
use crate::metrics::PROVIDER;
use tracing::Instrument;
use tracing::field::Empty;

/// The name of a guest-visible LLM error (`error.type`).
fn error_type(e: &Error) -> &'static str {
    match e {
        Error::ModelNotAllowed(_) => "model_not_allowed",
        Error::BudgetExhausted => "budget_exhausted",
        Error::RateLimited => "rate_limited",
        Error::InvalidRequest(_) => "invalid_request",
        Error::Provider(_) => "provider",
        Error::Timeout => "timeout",
    }
}

fn finish_reason(r: &FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other => "other",
    }
}

/// A GenAI client span for `operation` of `model` (`None`: the grant
/// allows none).
fn span(operation: &'static str, model: Option<&str>) -> tracing::Span {
    let name = match model {
        Some(model) => format!("{operation} {model}"),
        None => operation.to_string(),
    };
    tracing::info_span!(
        "gen_ai",
        otel.name = %name,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = PROVIDER,
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = Empty,
        server.port = Empty,
        error.type = Empty,
    )
}

/// Records how a call ended on its span and in the metrics.
fn finish(
    ctx: &LlmCtx,
    span: &tracing::Span,
    operation: &'static str,
    model: Option<&str>,
    started: std::time::Instant,
    tokens: (u64, u64),
    error: Option<&Error>,
) {
    let error = error.map_or("", error_type);
    if !error.is_empty() {
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
    }
    if let Some(model) = model {
        ctx.metrics.llm_call(
            operation,
            model,
            started.elapsed().as_secs_f64(),
            tokens,
            error,
        );
    }
}

impl llm::Host for LlmCtx {
    async fn chat(&mut self, req: ChatRequest) -> wasmtime::Result<Result<ChatResponse, Error>> {
        let model = self.resolve_model(req.model.clone());
        let span = span("chat", model.as_deref().ok());
        let started = std::time::Instant::now();
        let model = match model {
            Ok(model) => model,
            Err(e) => {
                finish(self, &span, "chat", None, started, (0, 0), Some(&e));
                return Ok(Err(e));
            }
        };
        let result = self
            .chat_in(&model, req, &span)
            .instrument(span.clone())
            .await;
        let (tokens, error) = match &result {
            Ok(r) => (
                (
                    u64::from(r.usage.prompt_tokens),
                    u64::from(r.usage.completion_tokens),
                ),
                None,
            ),
            Err(e) => ((0, 0), Some(e)),
        };
        finish(self, &span, "chat", Some(&model), started, tokens, error);
        Ok(result)
    }

    async fn embed(
        &mut self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Vec<f32>>, Error>> {
        let model = self.resolve_model(model);
        let span = span("embeddings", model.as_deref().ok());
        let started = std::time::Instant::now();
        let model = match model {
            Ok(model) => model,
            Err(e) => {
                finish(self, &span, "embeddings", None, started, (0, 0), Some(&e));
                return Ok(Err(e));
            }
        };
        let result = self
            .embed_in(&model, inputs, &span)
            .instrument(span.clone())
            .await;
        let (tokens, error) = match &result {
            Ok((prompt, _)) => ((*prompt, 0), None),
            Err(e) => ((0, 0), Some(e)),
        };
        finish(
            self,
            &span,
            "embeddings",
            Some(&model),
            started,
            tokens,
            error,
        );
        Ok(result.map(|(_, vectors)| vectors))
    }
}

impl LlmCtx {
    /// The chat call of `model` (allowed), recorded on `span`.
    async fn chat_in(
        &mut self,
        model: &str,
        req: ChatRequest,
        span: &tracing::Span,
    ) -> Result<ChatResponse, Error> {
        if let Some(t) = req.temperature {
            span.record("gen_ai.request.temperature", f64::from(t));
        }
        let price = self.price(model)?;
        let provider = self.provider()?;
        if let Some((host, port)) = provider.address() {
            span.record("server.address", host.as_str());
            span.record("server.port", port);
        }
        let est_prompt = estimate_tokens(
            req.messages
                .iter()
                .map(|m| m.content.as_str())
                .chain(req.tools.iter().map(|t| t.parameters_json_schema.as_str())),
        );
        let Ok(reservation) = self.meter.reserve_llm(
            req.max_tokens,
            self.service.default_max_tokens,
            est_prompt,
            &price,
        ) else {
            tracing::info!("llm budget exhausted");
            return Err(Error::BudgetExhausted);
        };
        span.record("gen_ai.request.max_tokens", reservation.max_tokens);

        let result = provider
            .chat(ProviderChat {
                model: model.to_string(),
                messages: req.messages,
                tools: req.tools,
                max_tokens: reservation.max_tokens,
                temperature: req.temperature,
                json_output: req.json_output,
            })
            .await;
        let (prompt, completion) = match &result {
            Ok(r) => {
                span.record("gen_ai.response.model", r.model.as_str());
                span.record(
                    "gen_ai.response.finish_reasons",
                    format!("[\"{}\"]", finish_reason(&r.finish_reason)),
                );
                (
                    u64::from(r.usage.prompt_tokens),
                    u64::from(r.usage.completion_tokens),
                )
            }
            Err(_) => (0, 0),
        };
        span.record("gen_ai.usage.input_tokens", prompt);
        span.record("gen_ai.usage.output_tokens", completion);
        self.meter.settle_llm(
            reservation,
            prompt,
            completion,
            price.cost(prompt, completion),
        );
        result
    }

    /// The embeddings call of `model` (allowed), recorded on `span`:
    /// (prompt tokens, vectors).
    async fn embed_in(
        &mut self,
        model: &str,
        inputs: Vec<String>,
        span: &tracing::Span,
    ) -> Result<(u64, Vec<Vec<f32>>), Error> {
        let price = self.price(model)?;
        let provider = self.provider()?;
        if let Some((host, port)) = provider.address() {
            span.record("server.address", host.as_str());
            span.record("server.port", port);
        }
        let est = estimate_tokens(inputs.iter().map(String::as_str));
        // Embeddings have no completion; reserve the prompt and one token.
        let Ok(reservation) = self.meter.reserve_llm(Some(1), 1, est, &price) else {
            return Err(Error::BudgetExhausted);
        };
        let result = provider.embed(model.to_string(), inputs).await;
        let prompt = result.as_ref().map_or(0, |e| u64::from(e.prompt_tokens));
        span.record("gen_ai.usage.input_tokens", prompt);
        self.meter
            .settle_llm(reservation, prompt, 0, price.cost(prompt, 0));
        result.map(|e| (prompt, e.vectors))
    }
}
