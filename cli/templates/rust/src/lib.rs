//! `{{name}}`: greets by name. It counts greetings per name in its own
//! key-value namespace, and asks the LLM for the greeting when the run may
//! use one (else it says hello itself).

use serde::{Deserialize, Serialize};
use warden_sdk::kv::Bucket;
use warden_sdk::llm::{self, ChatRequest, Message};

#[derive(Deserialize)]
struct Input {
    #[serde(default = "world")]
    name: String,
}

fn world() -> String {
    "world".into()
}

#[derive(Serialize)]
struct Output {
    greeting: String,
    times: u64,
}

#[warden_sdk::agent]
fn run(input: Option<Input>) -> Result<Output, warden_sdk::Error> {
    let input = input.unwrap_or(Input { name: world() });
    let times = Bucket::open("greetings")?.increment(&input.name, 1)?;
    let ask = ChatRequest::new(vec![Message::user(format!(
        "Write a one-line greeting for {}.",
        input.name
    ))])
    .max_tokens(60);
    let greeting = match llm::chat(&ask) {
        Ok(answer) => answer.content.trim().to_string(),
        Err(e) => {
            warden_sdk::log::warn(format!("no greeting from the LLM ({e}); saying hello"));
            format!("hello, {}", input.name)
        }
    };
    Ok(Output { greeting, times })
}
