//! Reports what the run can see: config, context, the scratch dir and
//! whether anything else of the filesystem is visible.
use serde_json::{Value, json};

#[warden_sdk::agent]
fn run(_input: Value) -> Result<Value, warden_sdk::Error> {
    let scratch = std::fs::write("/scratch/note.txt", b"kept")
        .and_then(|()| std::fs::read_to_string("/scratch/note.txt"))
        .map_err(|e| e.to_string());
    let etc = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
    let remaining = warden_sdk::context::remaining();
    Ok(json!({
        "config": warden_sdk::config::get_all(),
        "run_id": warden_sdk::context::run_id(),
        "attempt": warden_sdk::context::attempt(),
        "tokens_left": remaining.tokens,
        "time_left_ms": remaining.time_ms,
        "scratch": scratch,
        "etc_passwd": etc.is_ok(),
        "env": std::env::vars().count(),
    }))
}
