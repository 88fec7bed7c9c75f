//! Calls chat up to `calls` times asking for `max_tokens` each; reports each
//! outcome, and stops at the first budget-exhausted.
use warden_sdk::llm::{self, ChatRequest, LlmError, Message};

#[derive(serde::Deserialize)]
struct Input {
    calls: u32,
    max_tokens: Option<u32>,
    model: Option<String>,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Vec<String>, warden_sdk::Error> {
    let mut outcomes = Vec::new();
    for i in 0..input.calls {
        let mut req = ChatRequest::new(vec![Message::user(format!("call {i}"))]);
        req.max_tokens = input.max_tokens;
        req.model = input.model.clone();
        match llm::chat(&req) {
            Ok(r) => outcomes.push(format!(
                "ok:{}",
                r.usage.prompt_tokens + r.usage.completion_tokens
            )),
            Err(LlmError::BudgetExhausted) => {
                outcomes.push("budget_exhausted".into());
                break;
            }
            Err(e) => outcomes.push(format!("error:{e:?}")),
        }
    }
    Ok(outcomes)
}
