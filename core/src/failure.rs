//! Why a run failed: [`FailureKind`], the one enum shared by the CLI's JSON,
//! the lease protocol, the control plane's retry rule and metrics, and
//! [`RunFailure`], a kind with a message for the user.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of failure a run can end in. Names are stable: they appear in
/// `--json` output, exit reports and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Wall-time budget exceeded (guest code or time spent in host calls).
    Timeout,
    /// The fuel (CPU work) budget ran out.
    FuelExhausted,
    /// The guest tried to grow memory past its limit.
    MemoryLimit,
    /// Output or log bytes over their budget.
    OutputTooLarge,
    /// Guest panic, `unreachable`, stack overflow or another wasm trap.
    Trap,
    /// The agent's `run` returned `Err`.
    GuestError,
    /// The agent needs a capability the run was not granted.
    CapabilityDenied,
    /// Not a component, or not one of the `warden:agent/agent` world.
    InvalidComponent,
    /// The run was cancelled.
    Cancelled,
    /// The node shut down before the run finished.
    NodeShutdown,
    /// A fault of the host, not of the agent.
    HostError,
    /// The node lost the run's lease (it expired, or went to another node);
    /// its result is not recorded.
    LeaseLost,
    /// The guest went past a bound on what it may make the host hold
    /// (resource handles, ...); the message names the bound.
    ResourceLimit,
    /// No node could take the run (its node selector matched none) within
    /// the control plane's placement timeout; the message names the
    /// selector.
    Unschedulable,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 14] = [
        FailureKind::Timeout,
        FailureKind::FuelExhausted,
        FailureKind::MemoryLimit,
        FailureKind::OutputTooLarge,
        FailureKind::Trap,
        FailureKind::GuestError,
        FailureKind::CapabilityDenied,
        FailureKind::InvalidComponent,
        FailureKind::Cancelled,
        FailureKind::NodeShutdown,
        FailureKind::HostError,
        FailureKind::LeaseLost,
        FailureKind::ResourceLimit,
        FailureKind::Unschedulable,
    ];

    /// Whether a run that failed this way is worth another attempt. Fixed
    /// per kind: a deterministic agent fails the same way again on anything
    /// but a host-side fault. The control plane's retry rule is this
    /// function; it keeps no copy.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureKind::NodeShutdown | FailureKind::HostError | FailureKind::LeaseLost
        )
    }

    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::FuelExhausted => "fuel_exhausted",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::Trap => "trap",
            FailureKind::GuestError => "guest_error",
            FailureKind::CapabilityDenied => "capability_denied",
            FailureKind::InvalidComponent => "invalid_component",
            FailureKind::Cancelled => "cancelled",
            FailureKind::NodeShutdown => "node_shutdown",
            FailureKind::HostError => "host_error",
            FailureKind::LeaseLost => "lease_lost",
            FailureKind::ResourceLimit => "resource_limit",
            FailureKind::Unschedulable => "unschedulable",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run: its kind and a message that names the problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RunFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// The most bytes of a failure message kept: a guest controls its error
/// text, and every message travels to the control plane and to clients.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 64 << 10;

impl RunFailure {
    /// A failure; a message over [`MAX_FAILURE_MESSAGE_BYTES`] is cut there
    /// (on a character boundary), with a marker saying how long it was.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_FAILURE_MESSAGE_BYTES {
            let total = message.len();
            let mut end = MAX_FAILURE_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(&format!("… [truncated: {total} bytes in all]"));
        }
        RunFailure { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: FailureKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary_with_a_marker() {
        let long = "é".repeat(MAX_FAILURE_MESSAGE_BYTES); // 2 bytes each
        let f = RunFailure::new(FailureKind::GuestError, long.clone());
        assert!(f.message.len() < MAX_FAILURE_MESSAGE_BYTES + 64);
        assert!(f.message.starts_with(&long[..MAX_FAILURE_MESSAGE_BYTES]));
        assert!(
            f.message
                .ends_with(&format!("[truncated: {} bytes in all]", long.len())),
            "{}",
            &f.message[f.message.len() - 60..]
        );
        let odd = format!("x{}", "é".repeat(MAX_FAILURE_MESSAGE_BYTES));
        assert!(
            RunFailure::new(FailureKind::Trap, odd)
                .message
                .is_char_boundary(MAX_FAILURE_MESSAGE_BYTES - 1)
        );
        assert_eq!(RunFailure::new(FailureKind::Trap, "short").message, "short");
    }

    #[test]
    fn only_host_side_faults_retry() {
        let retryable: Vec<_> = FailureKind::ALL
            .into_iter()
            .filter(|k| k.retryable())
            .collect();
        assert_eq!(
            retryable,
            [
                FailureKind::NodeShutdown,
                FailureKind::HostError,
                FailureKind::LeaseLost
            ]
        );
    }
}
