//! `research-agent`: a real tool-calling loop. The LLM chooses tools —
//! `fetch_url` (HTTP GET of an allowed URL) and `save_note` / `read_notes`
//! (notes in the agent's key-value namespace) — until it answers. When the
//! token budget runs out it stops cleanly and returns what it has, marked
//! `"stopped": "budget_exhausted"`.
//!
//! ```text
//! warden run research_agent.wasm --allow-model gpt-4o-mini --max-tokens 20000 \
//!     --allow-http 'https://*.wikipedia.org' \
//!     --input '{"question":"What is WASI? Start at https://en.wikipedia.org/wiki/WebAssembly"}'
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warden_sdk::kv::Bucket;
use warden_sdk::llm::{self, ChatRequest, LlmError, Message, Tool, ToolCall};

#[derive(Deserialize)]
struct Input {
    question: String,
    #[serde(default = "default_steps")]
    max_steps: u32,
    model: Option<String>,
}

fn default_steps() -> u32 {
    8
}

#[derive(Serialize, Default)]
struct Output {
    answer: String,
    /// `answered`, `budget_exhausted` or `max_steps`.
    stopped: &'static str,
    steps: u32,
    tools_used: Vec<String>,
    notes: Vec<String>,
}

/// Longest page text handed back to the model.
const MAX_PAGE_CHARS: usize = 4000;

fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "fetch_url",
            "Fetch a web page (HTTP GET) and return the start of its text.",
            json!({ "type": "object", "properties": { "url": { "type": "string" } }, "required": ["url"] }),
        ),
        Tool::new(
            "save_note",
            "Save a short note under a key, to remember a finding.",
            json!({ "type": "object",
                    "properties": { "key": { "type": "string" }, "text": { "type": "string" } },
                    "required": ["key", "text"] }),
        ),
        Tool::new(
            "read_notes",
            "Read every note saved so far.",
            json!({ "type": "object", "properties": {} }),
        ),
    ]
}

fn call_tool(call: &ToolCall, notes: &Bucket) -> String {
    let args: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
    let result = match call.name.as_str() {
        "fetch_url" => match args["url"].as_str() {
            Some(url) => warden_sdk::http::get(url)
                .map(|r| {
                    let text: String = r.text().chars().take(MAX_PAGE_CHARS).collect();
                    format!("HTTP {}\n{text}", r.status)
                })
                .map_err(|e| e.to_string()),
            None => Err("fetch_url needs a url".into()),
        },
        "save_note" => match (args["key"].as_str(), args["text"].as_str()) {
            (Some(key), Some(text)) => notes
                .set(key, text)
                .map(|()| format!("saved note {key}"))
                .map_err(|e| e.to_string()),
            _ => Err("save_note needs key and text".into()),
        },
        "read_notes" => read_notes(notes)
            .map(|n| n.join("\n"))
            .map_err(|e| e.to_string()),
        other => Err(format!("no tool named {other}")),
    };
    result.unwrap_or_else(|e| format!("error: {e}"))
}

fn read_notes(notes: &Bucket) -> Result<Vec<String>, warden_sdk::kv::KvError> {
    let mut out = Vec::new();
    for key in notes.keys()? {
        if let Some(v) = notes.get(&key)? {
            out.push(format!("{key}: {}", String::from_utf8_lossy(&v)));
        }
    }
    Ok(out)
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Output, warden_sdk::Error> {
    let notes = Bucket::open(&format!("notes-{}", warden_sdk::context::run_id()))?;
    let mut messages = vec![
        Message::system(
            "You are a careful research agent. Use the tools to fetch sources and keep notes, \
             then answer the question concisely, citing what you fetched.",
        ),
        Message::user(input.question),
    ];
    let mut out = Output {
        stopped: "max_steps",
        ..Output::default()
    };
    while out.steps < input.max_steps {
        out.steps += 1;
        let mut req = ChatRequest::new(messages.clone())
            .tools(tools())
            .max_tokens(800);
        req.model = input.model.clone();
        let reply = match llm::chat(&req) {
            Ok(reply) => reply,
            Err(LlmError::BudgetExhausted) => {
                warden_sdk::log::warn("token budget exhausted; stopping with what we have");
                out.stopped = "budget_exhausted";
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if reply.tool_calls.is_empty() {
            out.answer = reply.content;
            out.stopped = "answered";
            break;
        }
        messages.push(Message::assistant_tool_calls(
            reply.content.clone(),
            reply.tool_calls.clone(),
        ));
        for call in &reply.tool_calls {
            warden_sdk::log::info(format!("tool {} {}", call.name, call.arguments));
            out.tools_used.push(call.name.clone());
            let result = call_tool(call, &notes);
            messages.push(Message::tool_result(call.id.clone(), result));
        }
    }
    out.notes = read_notes(&notes)?;
    if out.answer.is_empty() && !out.notes.is_empty() {
        out.answer = format!("No final answer; notes so far: {}", out.notes.join("; "));
    }
    for key in notes.keys()? {
        notes.delete(&key)?;
    }
    Ok(out)
}
