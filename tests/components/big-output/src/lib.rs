//! Returns a string of `bytes` bytes, and logs `log_lines` lines to stdout.
#[derive(serde::Deserialize)]
struct Input {
    #[serde(default)]
    bytes: usize,
    #[serde(default)]
    log_lines: usize,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<String, warden_sdk::Error> {
    for i in 0..input.log_lines {
        println!("log line {i} with some padding to make it longer");
    }
    Ok("x".repeat(input.bytes))
}
