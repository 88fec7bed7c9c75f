//! The capabilities an agent can be granted, one folder each: `llm`, `http`,
//! `kv`, `fs`, `config`, `logging`, plus the run `context`. Each folder owns
//! its policy, its state in the store (`XCtx`) and its generated `Host` trait
//! implementation. [`Grant`] says what one run may use; everything not
//! granted is denied.

pub mod config;
pub mod context;
pub mod fs;
pub mod http;
pub mod kv;
pub mod llm;
pub mod logging;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one run may use. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grant {
    /// Outgoing HTTP: `scheme://host[:port]` patterns (see [`http::HostPattern`]).
    pub http: Vec<String>,
    /// LLM models the run may use; `*` allows the provider's every model.
    pub models: Vec<String>,
    /// Key-value storage in the agent's own namespace.
    pub kv: bool,
    /// A fresh scratch directory, preopened at [`fs::SCRATCH_GUEST_PATH`].
    pub scratch_dir: bool,
    /// Config values the agent reads through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
}
