//! Key-value operations: {"op": "get"|"set"|"incr"|"keys"|"cas", "key",
//! "value", "expected"} (`cas`: swap in `value` if the key holds `expected`,
//! or is absent when `expected` is null).
use serde_json::{Value, json};
use warden_sdk::kv::Bucket;

#[derive(serde::Deserialize)]
struct Input {
    op: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    expected: Option<String>,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Value, warden_sdk::Error> {
    let bucket = Bucket::open("default")?;
    Ok(match input.op.as_str() {
        "get" => json!(
            bucket
                .get(&input.key)?
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        ),
        "set" => json!(bucket.set(&input.key, input.value.as_bytes())?),
        "incr" => json!(bucket.increment(&input.key, 1)?),
        "keys" => json!(bucket.keys()?),
        "cas" => json!(bucket.compare_and_swap(
            &input.key,
            input.expected.as_deref().map(str::as_bytes),
            input.value.as_bytes()
        )?),
        other => return Err(warden_sdk::Error::msg(format!("unknown op {other}"))),
    })
}
