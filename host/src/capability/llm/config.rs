//! The `[llm]` section of the node config: provider endpoint and key (never
//! visible to guests), defaults and the price table used for cost budgets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API, including `/v1`
    /// (env `WARDEN_LLM_BASE_URL`). Unset: no LLM on this node.
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: String,
    /// Model used when the agent names none.
    pub default_model: Option<String>,
    /// `max_tokens` sent when the agent asks for none (before clamping).
    pub default_max_tokens: u32,
    /// Per-request timeout towards the provider.
    #[serde(with = "crate::config::duration")]
    pub request_timeout: Duration,
    /// USD per million tokens, by model name.
    pub prices: BTreeMap<String, ModelPrice>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: None,
            api_key_env: "WARDEN_LLM_API_KEY".into(),
            default_model: None,
            default_max_tokens: 1024,
            request_timeout: Duration::from_secs(120),
            prices: BTreeMap::new(),
        }
    }
}

/// Price of one model, in USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl ModelPrice {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok
            + completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }

    pub fn per_prompt_token(&self) -> f64 {
        self.input_per_mtok / 1e6
    }

    pub fn per_completion_token(&self) -> f64 {
        self.output_per_mtok / 1e6
    }
}
