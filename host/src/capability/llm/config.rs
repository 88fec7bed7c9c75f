//! The `[llm]` section of the node config: provider endpoint and key (never
//! visible to guests), defaults and the price table used for cost budgets.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
pub use warden_core::ModelPrice;

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
    #[serde(with = "warden_core::budget::duration")]
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
