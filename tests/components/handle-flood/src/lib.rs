//! Makes the host hold ever more resources: creates wasi-http `fields`
//! in a loop and never drops them. `{"limit": N}` stops after N (to show
//! a run under the bound succeeds); `{"fill": N}` also puts N 1 KiB
//! header values in each one (a fields bomb: the most host bytes per
//! handle; past the host's per-fields bound the append traps).
//! `{"calls": true}` instead makes cheap host calls (`attempt`) for ever:
//! a host-call flood, which fuel and time must stop.
use warden_sdk::__private::wasi::http::types::Fields;

#[derive(serde::Deserialize)]
struct Input {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    fill: u32,
    #[serde(default)]
    calls: bool,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<u64, warden_sdk::Error> {
    if input.calls {
        let mut made = 0u64;
        loop {
            made += u64::from(warden_sdk::context::attempt());
            std::hint::black_box(made);
        }
    }
    let value = vec![b'v'; 1024];
    let mut made = 0u64;
    while input.limit.is_none_or(|limit| made < limit) {
        let fields = Fields::new();
        for i in 0..input.fill {
            if fields.append(&format!("x-{i}"), &value).is_err() {
                return Err(warden_sdk::Error::msg(format!("append {i} refused")));
            }
        }
        std::mem::forget(fields);
        made += 1;
    }
    Ok(made)
}
