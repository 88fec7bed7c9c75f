//! Makes the host hold ever more resources: creates wasi-http `fields`
//! in a loop and never drops them. `{"limit": N}` stops after N (to show
//! a run under the bound succeeds).
use warden_sdk::__private::wasi::http::types::Fields;

#[derive(serde::Deserialize)]
struct Input {
    #[serde(default)]
    limit: Option<u64>,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<u64, warden_sdk::Error> {
    let mut made = 0u64;
    while input.limit.is_none_or(|limit| made < limit) {
        std::mem::forget(Fields::new());
        made += 1;
    }
    Ok(made)
}
