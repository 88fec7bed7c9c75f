//! The capabilities an agent can be granted, one folder each: `llm`, `http`,
//! `kv`, `fs`, `config`, `logging`, plus the run `context`. Each folder owns
//! its policy, its state in the store (`XCtx`) and its generated `Host` trait
//! implementation. [`Grant`] (from `warden_core`) says what one run may use;
//! everything not granted is denied.

pub mod config;
pub mod context;
pub mod fs;
pub mod http;
pub mod kv;
pub mod llm;
pub mod logging;

pub use warden_core::Grant;
