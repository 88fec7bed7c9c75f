//! Logs that go to the run's log (bounded by the run's log budget), through
//! `wasi:logging`. `println!`/`eprintln!` also land in the run's log.
//!
//! ```ignore
//! warden_sdk::log::info("starting");
//! warden_sdk::log::warn(format!("{n} retries"));
//! ```

use crate::__private::wasi::logging::logging::{Level, log};

const CONTEXT: &str = "agent";

pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, CONTEXT, message.as_ref());
}

pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, CONTEXT, message.as_ref());
}

pub fn info(message: impl AsRef<str>) {
    log(Level::Info, CONTEXT, message.as_ref());
}

pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, CONTEXT, message.as_ref());
}

pub fn error(message: impl AsRef<str>) {
    log(Level::Error, CONTEXT, message.as_ref());
}
