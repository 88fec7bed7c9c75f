//! Makes the host hold ever more resources: creates wasi-http `fields`
//! in a loop and never drops them. `{"limit": N}` stops after N (to show
//! a run under the bound succeeds); `{"fill": N}` also puts N 1 KiB
//! header values in each one (a fields bomb: the most host bytes per
//! handle; past the host's per-fields bound the append traps).
//! `{"calls": true}` instead makes cheap host calls (`attempt`) for ever:
//! a host-call flood, which fuel and time must stop.
//!
//! Two modes break the interface on purpose, as a hand-written guest
//! could: `{"alias": N}` hands the host one call's list of N header values
//! that all point at the same 1 MiB of memory (N MiB to copy out of a
//! memory that holds 1), and `{"bad_handle": true}` calls a method on a
//! handle the host never gave out.
use warden_sdk::__private::wasi::http::types::Fields;

#[derive(serde::Deserialize)]
struct Input {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    fill: u32,
    #[serde(default)]
    calls: bool,
    #[serde(default)]
    alias: usize,
    #[serde(default)]
    bad_handle: bool,
}

/// `n` header entries whose values all alias one 1 MiB buffer.
#[allow(unsafe_code)]
fn aliased(n: usize) -> Vec<(String, Vec<u8>)> {
    let mut buffer = std::mem::ManuallyDrop::new(vec![b'v'; 1 << 20]);
    let (ptr, len) = (buffer.as_mut_ptr(), buffer.len());
    (0..n)
        // SAFETY: never dropped or written (the caller forgets the list);
        // only read, by the host, while lowering one call.
        .map(|i| {
            (format!("x-{i}"), unsafe {
                Vec::from_raw_parts(ptr, len, len)
            })
        })
        .collect()
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
    if input.alias > 0 {
        let entries = aliased(input.alias);
        let made = Fields::from_list(&entries).is_ok();
        std::mem::forget(entries);
        return Ok(u64::from(made));
    }
    if input.bad_handle {
        #[allow(unsafe_code)]
        // SAFETY: deliberately wrong: the host must refuse the handle.
        let forged = unsafe { Fields::from_handle(0x00ff_fff0) };
        let entries = forged.entries();
        std::mem::forget(forged);
        return Ok(entries.len() as u64);
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
