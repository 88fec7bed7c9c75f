//! `http-fetch`: GETs a URL (which the run must be allowed to reach) and
//! reports the status, size and the start of the body.
//!
//! ```text
//! warden run http_fetch.wasm --input '{"url":"https://example.com/"}' --allow-http https://example.com
//! ```

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    url: String,
}

#[derive(Serialize)]
struct Output {
    url: String,
    status: u16,
    content_type: Option<String>,
    bytes: usize,
    excerpt: String,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Output, warden_sdk::Error> {
    let response = warden_sdk::http::get(&input.url)?;
    let text = response.text();
    Ok(Output {
        status: response.status,
        content_type: response.header("content-type"),
        bytes: response.body.len(),
        excerpt: text.chars().take(200).collect(),
        url: input.url,
    })
}
