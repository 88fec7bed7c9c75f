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
//!
//! [`Script`] is the other stand-in, for an agent's own tests: `warden run
//! --llm-script FILE` answers each chat call with the file's next reply.

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
    let post_to = |path: &'static str| {
        post(move |axum::Json(body): axum::Json<Value>| async move {
            axum::Json(answer(path, &body).unwrap_or_default())
        })
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post_to("/v1/chat/completions"))
        .route("/v1/embeddings", post_to("/v1/embeddings"))
        .route("/docs/wasm", get(|| async { SAMPLE_PAGE }));
    serve(app).await
}

/// Serves `app` on a free loopback port until the process ends; its `/v1`
/// base URL.
async fn serve(app: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the stand-in LLM stopped");
        }
    });
    Ok(format!("http://{addr}/v1"))
}

/// One scripted answer to a chat call.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    /// The assistant's text.
    #[serde(default)]
    content: Option<String>,
    /// Tools the model calls, each `{"name": ..., "arguments": {...}}`.
    #[serde(default)]
    tool_calls: Vec<ScriptedCall>,
    /// Fail the call with this HTTP status instead (429: rate limited; other
    /// 4xx: invalid request; 5xx: provider error).
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedCall {
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, Value>,
}

/// Scripted LLM replies (`warden run --llm-script FILE`): a JSON array
/// whose items answer the agent's chat calls in order. Embedding calls get
/// the mock's vectors.
#[derive(Debug)]
pub(crate) struct Script {
    file: String,
    replies: Vec<Reply>,
    next: std::sync::atomic::AtomicUsize,
}

impl Script {
    /// Reads and checks a script; the error names the file and the reply.
    pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<Script> {
        use anyhow::Context;
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read LLM script {file}"))?;
        let replies: Vec<Reply> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{file} is not an LLM script: a JSON array of replies like \
                 {{\"content\": \"...\"}}, {{\"tool_calls\": [{{\"name\": \"...\", \
                 \"arguments\": {{}}}}]}} or {{\"status\": 429}}"
            )
        })?;
        for (i, r) in replies.iter().enumerate() {
            let what = format!("{file}: reply {}", i + 1);
            match r.status {
                Some(s) if !(400..=599).contains(&s) => {
                    anyhow::bail!("{what}: status {s} is not an HTTP error status (400-599)")
                }
                Some(_) if r.content.is_some() || !r.tool_calls.is_empty() => {
                    anyhow::bail!("{what}: a failing reply (status) has no content or tool_calls")
                }
                None if r.content.is_none() && r.tool_calls.is_empty() => {
                    anyhow::bail!("{what}: give content, tool_calls or status")
                }
                _ => {}
            }
        }
        Ok(Script {
            file,
            replies,
            next: 0.into(),
        })
    }

    /// Serves the script on a free loopback port; its `/v1` base URL.
    pub(crate) async fn start(self: std::sync::Arc<Self>) -> anyhow::Result<String> {
        use axum::routing::post;
        let script = self.clone();
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                post(move |axum::Json(body): axum::Json<Value>| async move {
                    script.chat(&body)
                }),
            )
            .route(
                "/v1/embeddings",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    axum::Json(embeddings(&body))
                }),
            );
        serve(app).await
    }

    /// Chat calls answered so far (and asked for beyond the script), and
    /// the script's length.
    pub(crate) fn used(&self) -> (usize, usize) {
        let asked = self.next.load(std::sync::atomic::Ordering::SeqCst);
        (asked, self.replies.len())
    }

    fn chat(&self, body: &Value) -> (axum::http::StatusCode, axum::Json<Value>) {
        use axum::http::StatusCode;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let fail = |status: StatusCode, message: String| {
            (
                status,
                axum::Json(json!({ "error": { "message": message } })),
            )
        };
        let Some(reply) = self.replies.get(n) else {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the LLM script {} has {} replies and this is chat call {}",
                    self.file,
                    self.replies.len(),
                    n + 1
                ),
            );
        };
        if let Some(status) = reply.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return fail(status, format!("scripted failure (reply {})", n + 1));
        }
        let content = reply.content.clone().unwrap_or_default();
        let calls: Vec<Value> = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({ "id": format!("call_{}_{}", n + 1, i + 1), "type": "function",
                        "function": { "name": c.name,
                                      "arguments": Value::Object(c.arguments.clone()).to_string() } })
            })
            .collect();
        let prompt = reply.prompt_tokens.unwrap_or_else(|| {
            body["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| estimate(m["content"].as_str().unwrap_or("")))
                        .sum()
                })
                .unwrap_or(1)
        });
        let completion = reply.completion_tokens.unwrap_or_else(|| {
            estimate(&content) + calls.iter().map(|c| estimate(&c.to_string())).sum::<u64>()
        });
        let mut message = json!({ "role": "assistant", "content": content });
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        let finish = if reply.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        (
            StatusCode::OK,
            axum::Json(json!({
                "id": format!("chatcmpl-script-{}", n + 1),
                "object": "chat.completion",
                "model": body["model"].as_str().unwrap_or("scripted"),
                "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
                "usage": { "prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt.saturating_add(completion) },
            })),
        )
    }
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
