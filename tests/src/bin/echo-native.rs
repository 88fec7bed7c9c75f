//! What the `hello` agent does, as a native program: the per-run-process
//! baseline for `benches/run_hello.rs`. Reads JSON from its first argument,
//! prints the greeting and the echo.

use serde_json::{Value, json};

fn main() {
    let input: Value = std::env::args()
        .nth(1)
        .and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or(Value::Null);
    let name = input.get("name").and_then(Value::as_str).unwrap_or("world");
    println!(
        "{}",
        json!({ "greeting": format!("hello, {name}"), "echo": input })
    );
}
