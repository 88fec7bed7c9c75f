//! Between the wire types of `proto/warden/v1` and the host's own.

use crate::budget::{RunBudget, Usage};
use crate::capability::Grant;
use crate::failure::FailureKind;
use std::time::Duration;
use warden_proto::v1 as pb;

/// A wire budget; zero fields take the defaults of [`RunBudget`].
pub fn budget_from_proto(b: Option<pb::Budget>) -> RunBudget {
    let d = RunBudget::default();
    let Some(b) = b else { return d };
    let or = |v: u64, default: u64| if v == 0 { default } else { v };
    RunBudget {
        timeout: if b.timeout_ms == 0 {
            d.timeout
        } else {
            Duration::from_millis(b.timeout_ms)
        },
        fuel: b.fuel,
        max_memory_bytes: or(b.max_memory_bytes, d.max_memory_bytes),
        max_tokens: b.max_tokens,
        max_cost_usd: b.max_cost_usd,
        max_http_requests: if b.max_http_requests == 0 {
            d.max_http_requests
        } else {
            b.max_http_requests
        },
        max_http_response_bytes: or(b.max_http_response_bytes, d.max_http_response_bytes),
        max_output_bytes: or(b.max_output_bytes, d.max_output_bytes),
        max_log_bytes: or(b.max_log_bytes, d.max_log_bytes),
    }
}

pub fn budget_to_proto(b: &RunBudget) -> pb::Budget {
    pb::Budget {
        timeout_ms: b.timeout.as_millis() as u64,
        fuel: b.fuel,
        max_memory_bytes: b.max_memory_bytes,
        max_tokens: b.max_tokens,
        max_cost_usd: b.max_cost_usd,
        max_http_requests: b.max_http_requests,
        max_http_response_bytes: b.max_http_response_bytes,
        max_output_bytes: b.max_output_bytes,
        max_log_bytes: b.max_log_bytes,
    }
}

pub fn grant_from_proto(g: Option<pb::Grant>) -> Grant {
    let g = g.unwrap_or_default();
    Grant {
        http: g.http,
        models: g.models,
        kv: g.kv,
        scratch_dir: g.scratch_dir,
        config: g.config.into_iter().collect(),
    }
}

pub fn grant_to_proto(g: &Grant) -> pb::Grant {
    pb::Grant {
        http: g.http.clone(),
        models: g.models.clone(),
        kv: g.kv,
        scratch_dir: g.scratch_dir,
        config: g.config.clone().into_iter().collect(),
        as_declared: false,
    }
}

pub fn usage_to_proto(u: &Usage) -> pb::Usage {
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
    }
}

pub fn usage_from_proto(u: Option<pb::Usage>) -> Usage {
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
    }
}

pub fn kind_to_proto(k: FailureKind) -> pb::FailureKind {
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
    }
}

pub fn kind_from_proto(k: i32) -> Option<FailureKind> {
    FailureKind::ALL
        .into_iter()
        .find(|kind| kind_to_proto(*kind) as i32 == k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in FailureKind::ALL {
            assert_eq!(kind_from_proto(kind_to_proto(k) as i32), Some(k));
        }
        assert_eq!(kind_from_proto(0), None);
    }

    #[test]
    fn budgets_round_trip() {
        let b = RunBudget {
            fuel: Some(5),
            max_tokens: Some(9),
            ..RunBudget::default()
        };
        assert_eq!(budget_from_proto(Some(budget_to_proto(&b))), b);
        assert_eq!(budget_from_proto(None), RunBudget::default());
    }
}
