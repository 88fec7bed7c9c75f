//! The states things move through, as enums: [`RunState`],
//! [`AttemptOutcome`], [`RenewStatus`] and [`NodeState`]. Each has the
//! stable snake_case name the database, `--json` output and the older
//! string fields of the protocol use.

use serde::{Deserialize, Serialize};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(UnknownState {
                        what: stringify!($name),
                        value: s.to_string(),
                        expected: &[$($text,)*],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A name that is not one of the enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what}; expected one of: {}", .expected.join(", "))]
pub struct UnknownState {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

named_enum! {
    /// Where a run is. `queued → leased → running →` one of the terminal
    /// states, or back to `queued` for another attempt.
    RunState {
        Queued = "queued",
        Leased = "leased",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Retryable failures used every attempt.
        DeadLettered = "dead_lettered",
        Cancelled = "cancelled",
    }
}

impl RunState {
    /// Whether a run in this state has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::DeadLettered | RunState::Cancelled
        )
    }

    /// Whether a node holds the run's lease.
    pub fn is_leased(self) -> bool {
        matches!(self, RunState::Leased | RunState::Running)
    }
}

named_enum! {
    /// How one attempt of a run ended.
    AttemptOutcome {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// The lease expired (or its node was lost) before a result.
        Expired = "expired",
        Cancelled = "cancelled",
    }
}

named_enum! {
    /// The answer to renewing one lease.
    RenewStatus {
        /// Extended.
        Ok = "ok",
        /// Extended, but the run was cancelled: stop it and report the cancel.
        Cancelled = "cancelled",
        /// No longer this node's: stop the run, report nothing.
        Lost = "lost",
    }
}

named_enum! {
    /// A node as the control plane sees it.
    NodeState {
        Ready = "ready",
        /// Finishing its runs; takes no new leases.
        Draining = "draining",
        /// Stopped heartbeating; its leases were re-queued.
        Lost = "lost",
        /// Deregistered.
        Gone = "gone",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in AttemptOutcome::ALL {
            assert_eq!(s.as_str().parse::<AttemptOutcome>().unwrap(), *s);
        }
        for s in RenewStatus::ALL {
            assert_eq!(s.as_str().parse::<RenewStatus>().unwrap(), *s);
        }
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>().unwrap(), *s);
        }
        let e = "done".parse::<RunState>().unwrap_err().to_string();
        assert!(e.contains("`done`") && e.contains("dead_lettered"), "{e}");
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = RunState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            terminal,
            ["succeeded", "failed", "dead_lettered", "cancelled"]
        );
    }
}
