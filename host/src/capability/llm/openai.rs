//! [`OpenAiProvider`]: the OpenAI-compatible HTTP API (`/chat/completions`,
//! `/embeddings`). The API key stays in the host.

use super::{BoxFuture, Embeddings, LlmProvider, ProviderChat};
use crate::bindings::llm::{ChatResponse, Error, FinishReason, Role, ToolCall, Usage};
use serde_json::{Value, json};
use std::time::Duration;

pub struct OpenAiProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiProvider {
    /// `base_url` includes the version path, e.g. `https://api.openai.com/v1`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(OpenAiProvider {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::Timeout
            } else {
                Error::Provider(format!(
                    "cannot reach the LLM provider: {}",
                    without_url(&e)
                ))
            }
        })?;
        let status = resp.status();
        let text = read_bounded(resp).await?;
        if status.as_u16() == 429 {
            return Err(Error::RateLimited);
        }
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            Error::Provider(format!(
                "provider answered {status} with a body that is not JSON"
            ))
        })?;
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string();
            return Err(if status.is_client_error() {
                Error::InvalidRequest(format!("{status}: {message}"))
            } else {
                Error::Provider(format!("{status}: {message}"))
            });
        }
        Ok(value)
    }
}

/// A reqwest error without the URL (which may name internal hosts).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<provider>");
    }
    text
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn chat_body(req: &ProviderChat) -> Result<Value, Error> {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let mut msg = json!({ "role": role_name(m.role), "content": m.content });
            if let Some(id) = &m.tool_call_id {
                msg["tool_call_id"] = json!(id);
            }
            if !m.tool_calls.is_empty() {
                msg["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments },
                        })
                    })
                    .collect();
            }
            msg
        })
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_tokens,
    });
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|t| {
                let params: Value = serde_json::from_str(&t.parameters_json_schema).map_err(|e| {
                    Error::InvalidRequest(format!("tool {}: parameters are not JSON: {e}", t.name))
                })?;
                Ok(json!({
                    "type": "function",
                    "function": { "name": t.name, "description": t.description, "parameters": params },
                }))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        body["tools"] = Value::Array(tools);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if req.json_output {
        body["response_format"] = json!({ "type": "json_object" });
    }
    Ok(body)
}

/// Most bytes of one provider answer: a chat completion or a batch of
/// embeddings is far smaller; a provider that sends more is refused, not
/// buffered.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// The answer's body as text, refused past [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut resp: reqwest::Response) -> Result<String, Error> {
    let mut body = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                Error::Timeout
            } else {
                Error::Provider(without_url(&e))
            }
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Error::Provider(format!(
                "the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn parse_chat(v: &Value, model: &str) -> Result<ChatResponse, Error> {
    let choice = &v["choices"][0];
    if choice.is_null() {
        return Err(Error::Provider("the provider returned no choices".into()));
    }
    let message = &choice["message"];
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    name: c["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    arguments: c["function"]["arguments"]
                        .as_str()
                        .unwrap_or("{}")
                        .to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let finish_reason = match choice["finish_reason"].as_str() {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
    let tokens = |k: &str| u32::try_from(v["usage"][k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    Ok(ChatResponse {
        content: message["content"].as_str().unwrap_or_default().to_string(),
        tool_calls,
        finish_reason,
        usage: Usage {
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        },
        model: v["model"].as_str().unwrap_or(model).to_string(),
    })
}

impl LlmProvider for OpenAiProvider {
    fn address(&self) -> Option<(String, u16)> {
        let uri: http::Uri = self.base_url.parse().ok()?;
        let tls = uri.scheme_str() == Some("https");
        Some((
            uri.host()?.to_string(),
            uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        ))
    }

    fn chat(&self, req: ProviderChat) -> BoxFuture<'_, Result<ChatResponse, Error>> {
        Box::pin(async move {
            let body = chat_body(&req)?;
            let value = self.post("/chat/completions", body).await?;
            parse_chat(&value, &req.model)
        })
    }

    fn embed(
        &self,
        model: String,
        inputs: Vec<String>,
    ) -> BoxFuture<'_, Result<Embeddings, Error>> {
        Box::pin(async move {
            let value = self
                .post("/embeddings", json!({ "model": model, "input": inputs }))
                .await?;
            parse_embeddings(&value)
        })
    }
}

fn parse_embeddings(value: &Value) -> Result<Embeddings, Error> {
    let data = value["data"]
        .as_array()
        .ok_or_else(|| Error::Provider("embeddings answer has no data".into()))?;
    let vectors = data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .map(|xs| {
                    xs.iter()
                        .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                        .collect()
                })
                .ok_or_else(|| Error::Provider("embedding is not a list of numbers".into()))
        })
        .collect::<Result<Vec<Vec<f32>>, Error>>()?;
    Ok(Embeddings {
        vectors,
        prompt_tokens: u32::try_from(value["usage"]["prompt_tokens"].as_u64().unwrap_or(0))
            .unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::llm::{Message, Tool};
    use proptest::prelude::*;

    /// Any JSON, shaped a little like a provider's answers.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            prop_oneof![Just("stop"), Just("tool_calls"), Just("length")].prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("choices".to_string()),
                        Just("message".to_string()),
                        Just("tool_calls".to_string()),
                        Just("function".to_string()),
                        Just("usage".to_string()),
                        Just("prompt_tokens".to_string()),
                        Just("data".to_string()),
                        Just("embedding".to_string()),
                        Just("content".to_string()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn fuzz_provider_answers_never_panic(v in any_json()) {
            let _ = parse_chat(&v, "m");
            let _ = parse_embeddings(&v);
        }
    }

    #[test]
    fn request_body_carries_tools_and_tool_messages() {
        let req = ProviderChat {
            model: "m".into(),
            messages: vec![
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_call_id: None,
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "fetch".into(),
                        arguments: "{\"url\":\"x\"}".into(),
                    }],
                },
                Message {
                    role: Role::Tool,
                    content: "result".into(),
                    tool_call_id: Some("c1".into()),
                    tool_calls: vec![],
                },
            ],
            tools: vec![Tool {
                name: "fetch".into(),
                description: "d".into(),
                parameters_json_schema: "{\"type\":\"object\"}".into(),
            }],
            max_tokens: 7,
            temperature: None,
            json_output: true,
        };
        let body = chat_body(&req).unwrap();
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(
            body["messages"][0]["tool_calls"][0]["function"]["name"],
            "fetch"
        );
        assert_eq!(body["messages"][1]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
        assert_eq!(body["response_format"]["type"], "json_object");
    }

    #[test]
    fn bad_tool_schema_is_an_invalid_request() {
        let req = ProviderChat {
            model: "m".into(),
            messages: vec![],
            tools: vec![Tool {
                name: "t".into(),
                description: String::new(),
                parameters_json_schema: "not json".into(),
            }],
            max_tokens: 1,
            temperature: None,
            json_output: false,
        };
        assert!(matches!(chat_body(&req), Err(Error::InvalidRequest(_))));
    }

    #[test]
    fn parses_tool_calls_and_usage() {
        let v = json!({
            "model": "m-2024",
            "choices": [{ "finish_reason": "tool_calls", "message": {
                "content": null,
                "tool_calls": [{ "id": "c", "type": "function",
                    "function": { "name": "kv_note", "arguments": "{}" } }]
            }}],
            "usage": { "prompt_tokens": 5, "completion_tokens": 3 }
        });
        let r = parse_chat(&v, "m").unwrap();
        assert_eq!(r.model, "m-2024");
        assert_eq!(r.tool_calls[0].name, "kv_note");
        assert!(matches!(r.finish_reason, FinishReason::ToolCalls));
        assert_eq!(r.usage.prompt_tokens + r.usage.completion_tokens, 8);
    }
}
