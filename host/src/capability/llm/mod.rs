//! The LLM capability: OpenAI-style chat and embeddings for agents, with the
//! model allow-list and the token and cost budgets enforced here, before and
//! after each call. Providers implement [`LlmProvider`]; [`OpenAiProvider`]
//! speaks the OpenAI-compatible HTTP API (OpenAI, Azure OpenAI, Ollama,
//! vLLM, llama.cpp server, LiteLLM).

pub mod config;
mod host;
mod openai;

pub use config::{LlmConfig, ModelPrice};
pub use openai::OpenAiProvider;

use crate::bindings::llm::{ChatResponse, Error, Message, Tool};
use crate::meter::RunMeter;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A chat call, after policy: the model is resolved and `max_tokens` clamped.
#[derive(Debug, Clone)]
pub struct ProviderChat {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub json_output: bool,
}

/// Embedding vectors and the prompt tokens they cost.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// A chat/embeddings backend. Errors are the guest-visible WIT variants.
pub trait LlmProvider: Send + Sync {
    fn chat(&self, req: ProviderChat) -> BoxFuture<'_, Result<ChatResponse, Error>>;
    fn embed(&self, model: String, inputs: Vec<String>)
    -> BoxFuture<'_, Result<Embeddings, Error>>;

    /// The host (and port) calls go to, for traces (`server.address`).
    fn address(&self) -> Option<(String, u16)> {
        None
    }
}

/// What the node knows about LLMs, shared by all runs.
#[derive(Clone)]
pub struct LlmService {
    pub provider: Option<Arc<dyn LlmProvider>>,
    pub default_model: Option<String>,
    pub default_max_tokens: u32,
    pub prices: BTreeMap<String, ModelPrice>,
}

impl LlmService {
    /// The service described by `config`; no provider without a base URL.
    pub fn from_config(config: &LlmConfig) -> Result<Self, reqwest::Error> {
        let provider = match &config.base_url {
            Some(url) => {
                let key = std::env::var(&config.api_key_env).ok();
                Some(
                    Arc::new(OpenAiProvider::new(url, key, config.request_timeout)?)
                        as Arc<dyn LlmProvider>,
                )
            }
            None => None,
        };
        Ok(LlmService {
            provider,
            default_model: config.default_model.clone(),
            default_max_tokens: config.default_max_tokens,
            prices: config.prices.clone(),
        })
    }
}

/// LLM state of one run.
pub struct LlmCtx {
    service: LlmService,
    allowed_models: Vec<String>,
    meter: Arc<RunMeter>,
    metrics: crate::metrics::HostMetrics,
}

impl LlmCtx {
    pub fn new(
        service: LlmService,
        allowed_models: Vec<String>,
        meter: Arc<RunMeter>,
        metrics: crate::metrics::HostMetrics,
    ) -> Self {
        LlmCtx {
            service,
            allowed_models,
            metrics,
            meter,
        }
    }

    /// The model a call will use, if the grant allows it.
    fn resolve_model(&self, asked: Option<String>) -> Result<String, Error> {
        if self.allowed_models.is_empty() {
            return Err(Error::ModelNotAllowed(
                "this run was not granted any LLM model".into(),
            ));
        }
        let model = asked
            .or_else(|| self.service.default_model.clone())
            .or_else(|| self.allowed_models.iter().find(|m| *m != "*").cloned())
            .ok_or_else(|| {
                Error::ModelNotAllowed("no model named and no default model configured".into())
            })?;
        if warden_core::model_allowed(&self.allowed_models, &model) {
            Ok(model)
        } else {
            Err(Error::ModelNotAllowed(model))
        }
    }

    /// The price of `model`; required when the run has a cost budget.
    fn price(&self, model: &str) -> Result<ModelPrice, Error> {
        match self.service.prices.get(model) {
            Some(p) => Ok(*p),
            None if self.meter.budget().max_cost_usd.is_some() => {
                Err(Error::InvalidRequest(format!(
                    "model {model} has no price in the node's price table, so the run's cost budget cannot be enforced"
                )))
            }
            None => Ok(ModelPrice::default()),
        }
    }

    fn provider(&self) -> Result<Arc<dyn LlmProvider>, Error> {
        self.service
            .provider
            .clone()
            .ok_or_else(|| Error::Provider("no LLM provider is configured on this node".into()))
    }
}

/// A rough prompt-size estimate (4 bytes a token) used to reserve budget
/// before the provider reports the real count.
fn estimate_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    texts.into_iter().map(|t| t.len() as u64 / 4 + 1).sum()
}
