//! Conversions between this crate's types and the wire types of
//! `proto/warden/v1` (feature `proto`). Unset wire budget fields are unset
//! here too; [`crate::BudgetRequest::resolve`] fills them from the one set
//! of defaults.

use crate::budget::{BudgetRequest, RunBudget, Usage};
use crate::failure::FailureKind;
use crate::grant::Grant;
use crate::state::{AttemptOutcome, NodeState, RenewStatus, RunState};
use std::time::Duration;
use warden_proto::v1 as pb;

impl From<FailureKind> for pb::FailureKind {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Timeout => pb::FailureKind::Timeout,
            FailureKind::FuelExhausted => pb::FailureKind::FuelExhausted,
            FailureKind::MemoryLimit => pb::FailureKind::MemoryLimit,
            FailureKind::OutputTooLarge => pb::FailureKind::OutputTooLarge,
            FailureKind::Trap => pb::FailureKind::Trap,
            FailureKind::GuestError => pb::FailureKind::GuestError,
            FailureKind::CapabilityDenied => pb::FailureKind::CapabilityDenied,
            FailureKind::InvalidComponent => pb::FailureKind::InvalidComponent,
            FailureKind::Cancelled => pb::FailureKind::Cancelled,
            FailureKind::NodeShutdown => pb::FailureKind::NodeShutdown,
            FailureKind::HostError => pb::FailureKind::HostError,
            FailureKind::LeaseLost => pb::FailureKind::LeaseLost,
            FailureKind::ResourceLimit => pb::FailureKind::ResourceLimit,
            FailureKind::Unschedulable => pb::FailureKind::Unschedulable,
        }
    }
}

impl FailureKind {
    /// The kind a wire value names; `None` for unspecified or unknown.
    pub fn from_proto(k: i32) -> Option<FailureKind> {
        FailureKind::ALL
            .into_iter()
            .find(|kind| pb::FailureKind::from(*kind) as i32 == k)
    }
}

macro_rules! enum_proto {
    ($ours:ident <=> $wire:ident { $($variant:ident),* $(,)? }) => {
        impl From<$ours> for pb::$wire {
            fn from(s: $ours) -> Self {
                match s {
                    $($ours::$variant => pb::$wire::$variant,)*
                }
            }
        }

        impl $ours {
            /// The value a wire enum names; `None` for unspecified or unknown.
            pub fn from_proto(v: i32) -> Option<$ours> {
                match pb::$wire::try_from(v).ok()? {
                    $(pb::$wire::$variant => Some($ours::$variant),)*
                    pb::$wire::Unspecified => None,
                }
            }

            /// The value a message carries: its enum field, else (from a
            /// peer that predates the enum) its older string field.
            pub fn from_wire(v: i32, name: &str) -> Option<$ours> {
                Self::from_proto(v).or_else(|| name.parse().ok())
            }
        }
    };
}

enum_proto!(RunState <=> RunState {
    Queued, Leased, Running, Succeeded, Failed, DeadLettered, Cancelled
});
enum_proto!(AttemptOutcome <=> AttemptOutcome {
    Running, Succeeded, Failed, Expired, Cancelled
});
enum_proto!(RenewStatus <=> RenewStatus { Ok, Cancelled, Lost });
enum_proto!(NodeState <=> NodeState { Ready, Draining, Lost, Gone });

impl From<Option<pb::Budget>> for BudgetRequest {
    fn from(b: Option<pb::Budget>) -> Self {
        let Some(b) = b else {
            return BudgetRequest::default();
        };
        BudgetRequest {
            timeout: b.timeout_ms.map(Duration::from_millis),
            fuel: b.fuel,
            max_memory_bytes: b.max_memory_bytes,
            max_tokens: b.max_tokens,
            max_cost_usd: b.max_cost_usd,
            max_http_requests: b.max_http_requests,
            max_http_response_bytes: b.max_http_response_bytes,
            max_output_bytes: b.max_output_bytes,
            max_log_bytes: b.max_log_bytes,
            max_disk_bytes: b.max_disk_bytes,
        }
    }
}

impl From<&BudgetRequest> for pb::Budget {
    fn from(b: &BudgetRequest) -> Self {
        pb::Budget {
            timeout_ms: b
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            fuel: b.fuel,
            max_memory_bytes: b.max_memory_bytes,
            max_tokens: b.max_tokens,
            max_cost_usd: b.max_cost_usd,
            max_http_requests: b.max_http_requests,
            max_http_response_bytes: b.max_http_response_bytes,
            max_output_bytes: b.max_output_bytes,
            max_log_bytes: b.max_log_bytes,
            max_disk_bytes: b.max_disk_bytes,
        }
    }
}

impl From<&RunBudget> for pb::Budget {
    fn from(b: &RunBudget) -> Self {
        pb::Budget::from(&BudgetRequest::from(b))
    }
}

impl From<Option<pb::Budget>> for RunBudget {
    /// A wire budget; unset fields take the defaults.
    fn from(b: Option<pb::Budget>) -> Self {
        BudgetRequest::from(b).resolve()
    }
}

impl From<pb::Grant> for Grant {
    /// The grant fields (`as_declared` is a submit's flag, not a grant).
    fn from(g: pb::Grant) -> Self {
        Grant {
            http: g.http,
            models: g.models,
            kv: g.kv,
            scratch_dir: g.scratch_dir,
            config: g.config.into_iter().collect(),
        }
    }
}

impl From<&Grant> for pb::Grant {
    fn from(g: &Grant) -> Self {
        pb::Grant {
            http: g.http.clone(),
            models: g.models.clone(),
            kv: g.kv,
            scratch_dir: g.scratch_dir,
            config: g.config.clone().into_iter().collect(),
            as_declared: false,
        }
    }
}

impl From<&Usage> for pb::Usage {
    fn from(u: &Usage) -> Self {
        pb::Usage {
            wall_time_ms: u.wall_time_ms,
            fuel_used: u.fuel_used,
            peak_memory_bytes: u.peak_memory_bytes,
            llm_calls: u.llm_calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
            http_requests: u.http_requests,
            http_response_bytes: u.http_response_bytes,
            log_bytes: u.log_bytes,
            disk_bytes: u.disk_bytes,
            host_calls: u.host_calls,
        }
    }
}

impl From<Option<pb::Usage>> for Usage {
    fn from(u: Option<pb::Usage>) -> Self {
        let u = u.unwrap_or_default();
        Usage {
            wall_time_ms: u.wall_time_ms,
            fuel_used: u.fuel_used,
            peak_memory_bytes: u.peak_memory_bytes,
            llm_calls: u.llm_calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
            http_requests: u.http_requests,
            http_response_bytes: u.http_response_bytes,
            log_bytes: u.log_bytes,
            disk_bytes: u.disk_bytes,
            host_calls: u.host_calls,
        }
    }
}

/// The name of a log line's source in JSON output and in the control
/// plane's store: `log`, `stdout`, `stderr`, `warden` (an unknown value
/// reads as `log`).
pub fn log_source_name(source: i32) -> &'static str {
    match pb::LogSource::try_from(source) {
        Ok(pb::LogSource::Stdout) => "stdout",
        Ok(pb::LogSource::Stderr) => "stderr",
        Ok(pb::LogSource::Warden) => "warden",
        _ => "log",
    }
}

/// The source [`log_source_name`] names.
pub fn log_source_named(name: &str) -> pb::LogSource {
    match name {
        "stdout" => pb::LogSource::Stdout,
        "stderr" => pb::LogSource::Stderr,
        "warden" => pb::LogSource::Warden,
        _ => pb::LogSource::Log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip() {
        for k in FailureKind::ALL {
            assert_eq!(
                FailureKind::from_proto(pb::FailureKind::from(k) as i32),
                Some(k)
            );
        }
        assert_eq!(FailureKind::from_proto(0), None);
        assert_eq!(FailureKind::from_proto(99), None);
        for s in RunState::ALL {
            assert_eq!(
                RunState::from_proto(pb::RunState::from(*s) as i32),
                Some(*s)
            );
        }
        for s in AttemptOutcome::ALL {
            let wire = pb::AttemptOutcome::from(*s) as i32;
            assert_eq!(AttemptOutcome::from_proto(wire), Some(*s));
        }
        for s in RenewStatus::ALL {
            let wire = pb::RenewStatus::from(*s) as i32;
            assert_eq!(RenewStatus::from_proto(wire), Some(*s));
        }
        for s in NodeState::ALL {
            assert_eq!(
                NodeState::from_proto(pb::NodeState::from(*s) as i32),
                Some(*s)
            );
        }
        assert_eq!(RunState::from_proto(0), None);
        // A peer that predates the enum fields sends only the name.
        assert_eq!(RunState::from_wire(0, "running"), Some(RunState::Running));
        assert_eq!(RenewStatus::from_wire(0, "lost"), Some(RenewStatus::Lost));
        assert_eq!(
            RunState::from_wire(pb::RunState::Failed as i32, "running"),
            Some(RunState::Failed)
        );
        assert_eq!(RunState::from_wire(0, ""), None);
    }

    #[test]
    fn budgets_round_trip_and_unset_means_default() {
        let b = RunBudget {
            fuel: Some(5),
            max_tokens: Some(9),
            ..RunBudget::default()
        };
        assert_eq!(RunBudget::from(Some(pb::Budget::from(&b))), b);
        assert_eq!(RunBudget::from(None), RunBudget::default());
        assert_eq!(
            RunBudget::from(Some(pb::Budget::default())),
            RunBudget::default()
        );
        // A set zero stays zero (no HTTP requests), unlike an unset field.
        let none = pb::Budget {
            max_http_requests: Some(0),
            ..pb::Budget::default()
        };
        assert_eq!(RunBudget::from(Some(none)).max_http_requests, 0);
        let partial = BudgetRequest {
            max_tokens: Some(3),
            ..BudgetRequest::default()
        };
        assert_eq!(
            BudgetRequest::from(Some(pb::Budget::from(&partial))),
            partial
        );
    }
}
