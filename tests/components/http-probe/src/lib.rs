//! GETs `url`; answers {"status", "body"} or {"error"}.
use serde_json::{Value, json};

#[derive(serde::Deserialize)]
struct Input {
    url: String,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Value, warden_sdk::Error> {
    Ok(match warden_sdk::http::get(&input.url) {
        Ok(r) => json!({ "status": r.status, "body": r.text() }),
        Err(e) => json!({ "error": e.to_string(), "denied": e.is_denied() }),
    })
}
