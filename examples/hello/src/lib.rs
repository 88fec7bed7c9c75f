//! `hello`: echoes its JSON input back, with a greeting for `name` if given.
//!
//! ```text
//! warden run hello.wasm --input '{"name":"ada"}'
//! ```

use serde_json::{Value, json};

#[warden_sdk::agent]
fn run(input: Value) -> Result<Value, warden_sdk::Error> {
    let name = input.get("name").and_then(Value::as_str).unwrap_or("world");
    Ok(json!({ "greeting": format!("hello, {name}"), "echo": input }))
}
