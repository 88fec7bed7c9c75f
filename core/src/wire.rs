//! Limits every Warden peer agrees on, so that nothing one side accepts is
//! more than the other can read.

/// The largest gRPC message a Warden peer sends or accepts: a published
/// component (64 MiB at most) with headroom, a lease with its input, a
/// batch of results.
pub const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// The largest run input a control plane accepts unless configured
/// otherwise (`warden control-plane --max-input`).
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1 << 20;
