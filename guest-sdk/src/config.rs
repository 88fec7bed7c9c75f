//! Config values the run was given (`--config KEY=VALUE`, the agent's
//! manifest), through `wasi:config/store`.
//!
//! ```ignore
//! let greeting = warden_sdk::config::get("greeting").unwrap_or("hello".into());
//! ```

use crate::__private::wasi::config::store;

/// The value of `key`, if the run has one.
pub fn get(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}

/// Every config value of the run.
pub fn get_all() -> Vec<(String, String)> {
    store::get_all().unwrap_or_default()
}
