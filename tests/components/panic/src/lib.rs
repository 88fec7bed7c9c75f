//! Panics with a message that names its input.
#[warden_sdk::agent]
fn run(input: serde_json::Value) -> Result<(), warden_sdk::Error> {
    panic!("agent gave up on {input}");
}
