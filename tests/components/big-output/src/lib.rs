//! Returns a string of `bytes` bytes, logs `log_lines` lines to stdout, then
//! writes `tail` to stderr with no newline.
#[derive(serde::Deserialize)]
struct Input {
    #[serde(default)]
    bytes: usize,
    #[serde(default)]
    log_lines: usize,
    #[serde(default)]
    tail: String,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<String, warden_sdk::Error> {
    for i in 0..input.log_lines {
        println!("log line {i} with some padding to make it longer");
    }
    // stderr is unbuffered in the guest; stdout would hold a line without
    // a newline in its buffer until the (never-run) exit handlers.
    eprint!("{}", input.tail);
    Ok("x".repeat(input.bytes))
}
