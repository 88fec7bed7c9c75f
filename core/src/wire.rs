//! Limits every Warden peer agrees on, so that nothing one side accepts is
//! more than the other can read.

/// The largest gRPC message a Warden peer sends or accepts: a published
/// component (64 MiB at most) with headroom, a lease with its input, a
/// batch of results.
pub const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// Most bytes of one agent log line's message streamed to and kept by the
/// control plane (longer ones are cut, saying so).
pub const MAX_LOG_LINE_BYTES: usize = 16 << 10;

/// Most bytes of one log line's context (its `wasi:logging` context).
pub const MAX_LOG_CONTEXT_BYTES: usize = 256;

/// The largest run input a control plane accepts unless configured
/// otherwise (`warden control-plane --max-input`).
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1 << 20;
