//! `warden:agent/llm` for [`LlmCtx`]: grant check, budget reservation, the
//! provider call, settlement on the usage the provider reports.

use super::{LlmCtx, ProviderChat, estimate_tokens};
use crate::bindings::llm::{self, ChatRequest, ChatResponse, Error};

impl llm::Host for LlmCtx {
    #[tracing::instrument(name = "gen_ai.chat", skip_all, fields(
        gen_ai.operation.name = "chat",
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.request.max_tokens = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    ))]
    async fn chat(&mut self, req: ChatRequest) -> wasmtime::Result<Result<ChatResponse, Error>> {
        let span = tracing::Span::current();
        let model = match self.resolve_model(req.model) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        span.record("gen_ai.request.model", model.as_str());
        let price = match self.price(&model) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let provider = match self.provider() {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
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
            return Ok(Err(Error::BudgetExhausted));
        };
        span.record("gen_ai.request.max_tokens", reservation.max_tokens);

        let result = provider
            .chat(ProviderChat {
                model,
                messages: req.messages,
                tools: req.tools,
                max_tokens: reservation.max_tokens,
                temperature: req.temperature,
                json_output: req.json_output,
            })
            .await;
        let (prompt, completion) = match &result {
            Ok(r) => (
                u64::from(r.usage.prompt_tokens),
                u64::from(r.usage.completion_tokens),
            ),
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
        Ok(result)
    }

    #[tracing::instrument(name = "gen_ai.embeddings", skip_all, fields(inputs = inputs.len()))]
    async fn embed(
        &mut self,
        model: Option<String>,
        inputs: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Vec<f32>>, Error>> {
        let model = match self.resolve_model(model) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let price = match self.price(&model) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let provider = match self.provider() {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let est = estimate_tokens(inputs.iter().map(String::as_str));
        // Embeddings have no completion; reserve the prompt and one token.
        let Ok(reservation) = self.meter.reserve_llm(Some(1), 1, est, &price) else {
            return Ok(Err(Error::BudgetExhausted));
        };
        let result = provider.embed(model, inputs).await;
        let prompt = result.as_ref().map_or(0, |e| u64::from(e.prompt_tokens));
        self.meter
            .settle_llm(reservation, prompt, 0, price.cost(prompt, 0));
        Ok(result.map(|e| e.vectors))
    }
}
