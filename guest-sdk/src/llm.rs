//! Chat and embeddings with the LLM the host provides, metered against the
//! run's token and cost budget. The host holds the provider's endpoint and
//! key; the agent names a model (or takes the host's default).
//!
//! ```ignore
//! use warden_sdk::llm::{self, ChatRequest, Message};
//!
//! let answer = llm::chat(&ChatRequest::new(vec![
//!     Message::system("Be brief."),
//!     Message::user("What is WebAssembly?"),
//! ]))?;
//! println!("{} ({} tokens)", answer.content, answer.usage.completion_tokens);
//! ```
//!
//! When the budget runs out, calls fail with [`LlmError::BudgetExhausted`]
//! and the run goes on: finish with what you have.

use crate::__private::warden::agent::llm;
use core::fmt;

pub use llm::{ChatRequest, ChatResponse, FinishReason, Message, Role, Tool, ToolCall, Usage};

/// Why an LLM call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// The model is not on the run's allow-list (or no LLM was granted).
    ModelNotAllowed(String),
    /// The run's token or cost budget is spent: finish with what you have.
    BudgetExhausted,
    RateLimited,
    InvalidRequest(String),
    Provider(String),
    Timeout,
}

impl From<llm::Error> for LlmError {
    fn from(e: llm::Error) -> Self {
        match e {
            llm::Error::ModelNotAllowed(m) => LlmError::ModelNotAllowed(m),
            llm::Error::BudgetExhausted => LlmError::BudgetExhausted,
            llm::Error::RateLimited => LlmError::RateLimited,
            llm::Error::InvalidRequest(m) => LlmError::InvalidRequest(m),
            llm::Error::Provider(m) => LlmError::Provider(m),
            llm::Error::Timeout => LlmError::Timeout,
        }
    }
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }

    /// The assistant turn that asked for `calls` (send it back before the
    /// tool results).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls: calls,
            ..Message::new(Role::Assistant, content)
        }
    }

    /// The result of the tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

impl Tool {
    /// A tool the model may call; `parameters` is a JSON Schema.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
    ) -> Self {
        Tool {
            name: name.into(),
            description: description.into(),
            parameters_json_schema: parameters.to_string(),
        }
    }
}

impl ChatRequest {
    /// A request with the host's default model and no tools.
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest {
            model: None,
            messages,
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
            json_output: false,
        }
    }

    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = tools;
        self
    }

    /// At most this many completion tokens (the host may clamp it further).
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Ask for a JSON object as the answer.
    pub fn json(mut self) -> Self {
        self.json_output = true;
        self
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmError::ModelNotAllowed(m) => write!(f, "model not allowed: {m}"),
            LlmError::BudgetExhausted => f.write_str("the run's LLM budget is exhausted"),
            LlmError::RateLimited => f.write_str("the LLM provider is rate limiting"),
            LlmError::InvalidRequest(m) => write!(f, "invalid LLM request: {m}"),
            LlmError::Provider(m) => write!(f, "LLM provider error: {m}"),
            LlmError::Timeout => f.write_str("the LLM request timed out"),
        }
    }
}

impl std::error::Error for LlmError {}

/// One chat completion.
pub fn chat(req: &ChatRequest) -> Result<ChatResponse, LlmError> {
    Ok(llm::chat(req)?)
}

/// Embeddings of `inputs`, one vector each.
pub fn embed(model: Option<&str>, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
    Ok(llm::embed(model, inputs)?)
}
