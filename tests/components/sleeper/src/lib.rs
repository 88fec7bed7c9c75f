//! Sleeps `ms` milliseconds (through wasi:clocks), then echoes `tag`: a run
//! that takes a while without burning CPU.
#[derive(serde::Deserialize)]
struct Input {
    ms: u64,
    #[serde(default)]
    tag: serde_json::Value,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<serde_json::Value, warden_sdk::Error> {
    std::thread::sleep(std::time::Duration::from_millis(input.ms));
    Ok(input.tag)
}
