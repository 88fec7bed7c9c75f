//! The one `bindgen!` of the host: Rust types and `Host` traits for the
//! `warden:agent/agent` world in `wit/`.
//!
//! WASI interfaces reuse the bindings of `wasmtime-wasi` and
//! `wasmtime-wasi-http` through `with:`, so resources such as streams and
//! HTTP requests are the same types those crates implement. Our own
//! interfaces (`llm`, `context`), `wasi:keyvalue`, `wasi:config` and
//! `wasi:logging` are implemented in `crate::capability`.

/// The host side of a `wasi:keyvalue` bucket handed to a guest: a partition
/// of the agent's namespace. Defined here, with the bindings that name it,
/// so the bindings do not depend on the capability that implements them.
#[derive(Debug)]
pub struct Bucket {
    pub(crate) name: String,
}

wasmtime::component::bindgen!({
    path: "../wit",
    world: "warden:agent/agent",
    imports: {
        "warden:agent/llm": async | trappable,
        "wasi:keyvalue/store": async | trappable,
        "wasi:keyvalue/atomics": async | trappable,
        "warden:agent/kv-cas": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:cli": wasmtime_wasi::p2::bindings::cli,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:keyvalue/store.bucket": Bucket,
    },
});

pub use warden::agent::{context, kv_cas, llm};
pub use wasi::config::store as config_store;
pub use wasi::keyvalue::{atomics as kv_atomics, store as kv_store};
pub use wasi::logging::logging;
