//! [`FakeOpenAi`]: a stand-in for an OpenAI-compatible provider on loopback
//! (the one boundary Warden does not own). It records every request and
//! answers deterministically:
//!
//! - chat without tools: a short summary of the last user message;
//!   `completion_tokens = min(max_tokens, 50)`;
//! - chat with tools: a fixed research script: first call `fetch_url` on the
//!   first URL in the conversation, then `save_note` with what came back,
//!   then a final answer quoting it;
//! - embeddings: 8-dimensional vectors.
//!
//! Prompt tokens are counted like Warden's estimate (4 bytes a token per
//! message), so budgets can be asserted exactly. It also serves a small
//! document at `/docs/wasm` for demos.

use crate::http_server::{Request, Response, TestServer};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

pub struct FakeOpenAi {
    server: TestServer,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// The document served at `/docs/wasm`.
pub const WASM_DOC: &str = "WebAssembly (Wasm) is a portable binary instruction format. \
Components built for wasm32-wasip2 run in sandboxes such as wasmtime with no ambient \
authority: every capability, from HTTP to storage, is granted by the host.";

impl FakeOpenAi {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    pub fn start_on(port: u16) -> Self {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = requests.clone();
        let server = TestServer::start_on(port, move |req| respond(req, &log));
        FakeOpenAi { server, requests }
    }

    /// Base URL to configure as the provider: `http://127.0.0.1:PORT/v1`.
    /// A node config (TOML) that uses this provider, with model `small`
    /// priced at $1,000 per million tokens either way.
    pub fn node_config(&self) -> String {
        format!(
            "[llm]\nbase_url = \"{}\"\n[llm.prices.small]\ninput_per_mtok = 1000.0\noutput_per_mtok = 1000.0\n",
            self.base_url()
        )
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    pub fn server(&self) -> &TestServer {
        &self.server
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn estimate(text: &str) -> u64 {
    text.len() as u64 / 4 + 1
}

fn respond(req: &Request, log: &Mutex<Vec<Recorded>>) -> Response {
    if req.method == "GET" && req.path == "/docs/wasm" {
        return Response::text(200, WASM_DOC);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Response::json(400, &json!({ "error": { "message": "body is not JSON" } }));
    };
    log.lock().unwrap().push(Recorded {
        path: req.path.clone(),
        authorization: req.header("authorization").map(str::to_string),
        body: body.clone(),
    });
    match req.path.as_str() {
        "/v1/chat/completions" => Response::json(200, &chat(&body)),
        "/v1/embeddings" => Response::json(200, &embeddings(&body)),
        _ => Response::json(404, &json!({ "error": { "message": "no such endpoint" } })),
    }
}

fn chat(body: &Value) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let prompt: u64 = messages
        .iter()
        .map(|m| estimate(m["content"].as_str().unwrap_or("")))
        .chain(
            tools
                .iter()
                .map(|t| estimate(&t["function"]["parameters"].to_string())),
        )
        .sum();
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(1024);
    let model = body["model"].as_str().unwrap_or("fake");

    let tool_results: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str())
        .collect();
    let (content, tool_calls, completion) = if tools.is_empty() {
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let words: Vec<&str> = last_user.split_whitespace().take(12).collect();
        (
            format!("Summary: {}", words.join(" ")),
            None,
            max_tokens.min(50),
        )
    } else {
        let has_tool = |name: &str| tools.iter().any(|t| t["function"]["name"] == name);
        let url = messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .find_map(|c| c.split_whitespace().find(|w| w.starts_with("http")));
        match (tool_results.len(), url) {
            (0, Some(url)) if has_tool("fetch_url") => (
                String::new(),
                Some(json!([{ "id": "call_1", "type": "function",
                    "function": { "name": "fetch_url", "arguments": json!({ "url": url }).to_string() } }])),
                max_tokens.min(20),
            ),
            (1, _) if has_tool("save_note") => {
                let note: String = tool_results[0].chars().take(100).collect();
                (
                    String::new(),
                    Some(json!([{ "id": "call_2", "type": "function",
                        "function": { "name": "save_note", "arguments": json!({ "key": "finding", "text": note }).to_string() } }])),
                    max_tokens.min(20),
                )
            }
            _ => {
                let quote: String = tool_results
                    .first()
                    .map(|t| t.chars().take(120).collect())
                    .unwrap_or_default();
                (
                    format!("Based on what I fetched: {quote}"),
                    None,
                    max_tokens.min(40),
                )
            }
        }
    };
    let finish = if tool_calls.is_some() {
        "tool_calls"
    } else if completion == max_tokens {
        "length"
    } else {
        "stop"
    };
    let mut message = json!({ "role": "assistant", "content": content });
    if let Some(calls) = tool_calls {
        message["tool_calls"] = calls;
    }
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": completion,
                   "total_tokens": prompt + completion },
    })
}

fn embeddings(body: &Value) -> Value {
    let inputs = body["input"].as_array().cloned().unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let t = text.as_str().unwrap_or("");
            let v: Vec<f32> = (0..8).map(|d| ((t.len() + d) % 7) as f32 / 7.0).collect();
            json!({ "object": "embedding", "index": i, "embedding": v })
        })
        .collect();
    let prompt: u64 = inputs
        .iter()
        .map(|t| estimate(t.as_str().unwrap_or("")))
        .sum();
    json!({ "object": "list", "data": data, "model": body["model"],
            "usage": { "prompt_tokens": prompt, "total_tokens": prompt } })
}
