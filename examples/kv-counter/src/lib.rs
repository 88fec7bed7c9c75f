//! `kv-counter`: counts how often it was called for a key; the count lives
//! in the agent's key-value namespace and survives across runs.
//!
//! ```text
//! warden run kv_counter.wasm --input '{"key":"visits"}'   # {"key":"visits","count":1}
//! warden run kv_counter.wasm --input '{"key":"visits"}'   # {"key":"visits","count":2}
//! ```

use serde::{Deserialize, Serialize};
use warden_sdk::kv::Bucket;

#[derive(Deserialize)]
struct Input {
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "visits".into()
}

#[derive(Serialize)]
struct Output {
    key: String,
    count: u64,
    keys: Vec<String>,
}

#[warden_sdk::agent]
fn run(input: Option<Input>) -> Result<Output, warden_sdk::Error> {
    let key = input.map_or_else(default_key, |i| i.key);
    let counters = Bucket::open("counters")?;
    let count = counters.increment(&key, 1)?;
    warden_sdk::log::info(format!("{key} is now {count}"));
    Ok(Output {
        key,
        count,
        keys: counters.keys()?,
    })
}
