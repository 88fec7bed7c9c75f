//! A stand-in for an OpenAI-compatible LLM provider, on loopback, for
//! trying Warden with no provider and no network: `warden dev --mock-llm`.
//! Its answers are scripted and deterministic, never a model's:
//!
//! - chat without tools: `Summary:` and the first words of the last user
//!   message; `completion_tokens = min(max_tokens, 50)`;
//! - chat with tools: a research script: call `fetch_url` on the first URL
//!   in the conversation, then `save_note` with what came back, then a final
//!   answer quoting it;
//! - embeddings: 8-dimensional vectors.
//!
//! Prompt tokens are counted like Warden's estimate (4 bytes a token per
//! message). It also serves a small page at `/docs/wasm`, for the examples
//! that fetch one. The tests' fake provider answers with the same script.

use serde_json::{Value, json};

/// The page served at `/docs/wasm`.
pub const SAMPLE_PAGE: &str = "WebAssembly (Wasm) is a portable binary instruction format. \
Components built for wasm32-wasip2 run in sandboxes such as wasmtime with no ambient \
authority: every capability, from HTTP to storage, is granted by the host.";

/// The answer to a POST of `body` to `path` (`/v1/chat/completions`,
/// `/v1/embeddings`); `None` for another path.
pub fn answer(path: &str, body: &Value) -> Option<Value> {
    match path {
        "/v1/chat/completions" => Some(chat(body)),
        "/v1/embeddings" => Some(embeddings(body)),
        _ => None,
    }
}

/// Serves the stand-in on a free loopback port until the process ends;
/// returns its base URL for `[llm] base_url` (`http://127.0.0.1:PORT/v1`).
pub(crate) async fn start() -> anyhow::Result<String> {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let post_to = |path: &'static str| {
        post(move |axum::Json(body): axum::Json<Value>| async move {
            axum::Json(answer(path, &body).unwrap_or_default())
        })
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post_to("/v1/chat/completions"))
        .route("/v1/embeddings", post_to("/v1/embeddings"))
        .route("/docs/wasm", get(|| async { SAMPLE_PAGE }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the mock LLM stopped");
        }
    });
    Ok(format!("http://{addr}/v1"))
}

fn estimate(text: &str) -> u64 {
    text.len() as u64 / 4 + 1
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
    let model = body["model"].as_str().unwrap_or("mock");

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
        "id": "chatcmpl-mock",
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
