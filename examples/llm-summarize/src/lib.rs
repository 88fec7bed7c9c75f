//! `llm-summarize`: summarizes text with the LLM the host grants.
//!
//! ```text
//! warden run llm_summarize.wasm --allow-model gpt-4o-mini --max-tokens 2000 \
//!     --input '{"text":"...long text...","max_words":40}'
//! ```

use serde::{Deserialize, Serialize};
use warden_sdk::llm::{self, ChatRequest, Message};

#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default = "default_words")]
    max_words: u32,
    model: Option<String>,
}

fn default_words() -> u32 {
    60
}

#[derive(Serialize)]
struct Output {
    summary: String,
    model: String,
    tokens: u32,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Output, warden_sdk::Error> {
    let mut req = ChatRequest::new(vec![
        Message::system(format!(
            "Summarize the user's text in at most {} words. Answer with the summary only.",
            input.max_words
        )),
        Message::user(input.text),
    ])
    .max_tokens(input.max_words * 2 + 20)
    .temperature(0.2);
    req.model = input.model;
    let answer = llm::chat(&req)?;
    Ok(Output {
        summary: answer.content.trim().to_string(),
        model: answer.model,
        tokens: answer.usage.prompt_tokens + answer.usage.completion_tokens,
    })
}
