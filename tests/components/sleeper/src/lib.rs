//! Sleeps `ms` milliseconds (through wasi:clocks), then echoes `tag`: a run
//! that takes a while without burning CPU. With `lines`, logs that many
//! lines spread over the sleep (`tick N` through wasi:logging, odd ones on
//! stdout); with `fail`, fails (a guest error) after sleeping.
#[derive(serde::Deserialize)]
struct Input {
    ms: u64,
    #[serde(default)]
    tag: serde_json::Value,
    #[serde(default)]
    lines: u64,
    #[serde(default)]
    fail: bool,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<serde_json::Value, warden_sdk::Error> {
    if input.lines == 0 {
        std::thread::sleep(std::time::Duration::from_millis(input.ms));
    }
    for i in 0..input.lines {
        std::thread::sleep(std::time::Duration::from_millis(input.ms / input.lines));
        if i % 2 == 0 {
            warden_sdk::log::info(format!("tick {i}"));
        } else {
            println!("tick {i}");
        }
    }
    if input.fail {
        return Err(warden_sdk::Error::msg("failing as asked"));
    }
    Ok(input.tag)
}
