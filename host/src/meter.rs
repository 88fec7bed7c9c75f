//! [`RunMeter`]: what a run has spent so far, shared by the store and the
//! host calls that run off the store (such as HTTP bodies), checked against
//! its [`RunBudget`].
//!
//! Each budget is enforced where it is cheapest and exact: wall time by the
//! epoch callback and a host-side deadline, fuel and memory by wasmtime, LLM
//! tokens and cost by the LLM capability through [`RunMeter::reserve_llm`],
//! HTTP and logs by their capabilities.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use warden_core::{ModelPrice, RunBudget, Usage};

/// Why an LLM call may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted;

/// Tokens and cost, reserved before an LLM call and settled after it.
#[derive(Debug, Default)]
struct LlmLedger {
    prompt_tokens: u64,
    completion_tokens: u64,
    reserved_tokens: u64,
    cost_usd: f64,
    reserved_cost_usd: f64,
    calls: u64,
}

/// What a run has spent so far. Shared (`Arc`) between the store and host
/// work that outlives a single host call, such as HTTP response bodies.
#[derive(Debug)]
pub struct RunMeter {
    budget: RunBudget,
    llm: Mutex<LlmLedger>,
    http_requests: AtomicU64,
    http_response_bytes: AtomicU64,
    log_bytes: AtomicU64,
    peak_memory_bytes: AtomicUsize,
    peak_disk_bytes: AtomicU64,
    host_calls: AtomicU64,
}

/// A granted LLM reservation: the `max_tokens` to send and the cost set aside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlmReservation {
    pub max_tokens: u32,
    tokens: u64,
    cost_usd: f64,
}

impl RunMeter {
    pub fn new(budget: RunBudget) -> Self {
        RunMeter {
            budget,
            llm: Mutex::default(),
            http_requests: AtomicU64::new(0),
            http_response_bytes: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            peak_memory_bytes: AtomicUsize::new(0),
            peak_disk_bytes: AtomicU64::new(0),
            host_calls: AtomicU64::new(0),
        }
    }

    pub fn budget(&self) -> &RunBudget {
        &self.budget
    }

    /// Tokens not yet spent or reserved; `None` without a token budget.
    pub fn tokens_left(&self) -> Option<u64> {
        let l = self.llm.lock().unwrap();
        self.budget.max_tokens.map(|max| {
            max.saturating_sub(l.prompt_tokens + l.completion_tokens + l.reserved_tokens)
        })
    }

    /// USD not yet spent or reserved; `None` without a cost budget.
    pub fn cost_left(&self) -> Option<f64> {
        let l = self.llm.lock().unwrap();
        self.budget
            .max_cost_usd
            .map(|max| (max - l.cost_usd - l.reserved_cost_usd).max(0.0))
    }

    /// Reserves room for one LLM call: the estimated prompt plus up to
    /// `requested` completion tokens (`default_max_tokens` when the agent
    /// asks for none). The answer's `max_tokens` is clamped to what the token
    /// and cost budgets have left after the prompt, so the provider itself
    /// stops the completion at the budget.
    pub fn reserve_llm(
        &self,
        requested: Option<u32>,
        default_max_tokens: u32,
        est_prompt_tokens: u64,
        price: &ModelPrice,
    ) -> Result<LlmReservation, BudgetExhausted> {
        let mut l = self.llm.lock().unwrap();
        let mut max_tokens = u64::from(requested.unwrap_or(default_max_tokens));
        if let Some(max) = self.budget.max_tokens {
            let used = l.prompt_tokens + l.completion_tokens + l.reserved_tokens;
            max_tokens = max_tokens.min(max.saturating_sub(used + est_prompt_tokens));
        }
        let prompt_cost = est_prompt_tokens as f64 * price.per_prompt_token();
        if let Some(max) = self.budget.max_cost_usd {
            let left = max - l.cost_usd - l.reserved_cost_usd - prompt_cost;
            if left <= 0.0 {
                max_tokens = 0;
            } else if price.per_completion_token() > 0.0 {
                max_tokens = max_tokens.min((left / price.per_completion_token()).floor() as u64);
            }
        }
        if max_tokens == 0 {
            return Err(BudgetExhausted);
        }
        let tokens = est_prompt_tokens + max_tokens;
        let cost_usd = prompt_cost + max_tokens as f64 * price.per_completion_token();
        l.reserved_tokens += tokens;
        l.reserved_cost_usd += cost_usd;
        Ok(LlmReservation {
            max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
            tokens,
            cost_usd,
        })
    }

    /// Releases a reservation and records what the call really used.
    pub fn settle_llm(&self, r: LlmReservation, prompt: u64, completion: u64, cost_usd: f64) {
        let mut l = self.llm.lock().unwrap();
        l.reserved_tokens -= r.tokens;
        l.reserved_cost_usd = (l.reserved_cost_usd - r.cost_usd).max(0.0);
        l.prompt_tokens += prompt;
        l.completion_tokens += completion;
        l.cost_usd += cost_usd;
        l.calls += 1;
    }

    /// Counts one outgoing HTTP request; false when over the budget.
    pub fn try_http_request(&self) -> bool {
        let n = self.http_requests.fetch_add(1, Relaxed) + 1;
        if n > u64::from(self.budget.max_http_requests) {
            self.http_requests.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Counts response body bytes; false once over the budget.
    pub fn add_http_response_bytes(&self, n: u64) -> bool {
        self.http_response_bytes.fetch_add(n, Relaxed) + n <= self.budget.max_http_response_bytes
    }

    /// Counts log or stdio bytes; false once over the budget (the bytes that
    /// did not fit are not kept).
    pub fn add_log_bytes(&self, n: u64) -> bool {
        self.log_bytes.fetch_add(n, Relaxed) + n <= self.budget.max_log_bytes
    }

    pub fn note_memory(&self, bytes: usize) {
        self.peak_memory_bytes.fetch_max(bytes, Relaxed);
    }

    /// The scratch directory holds `bytes` (as its quota counts).
    pub fn note_disk(&self, bytes: u64) {
        self.peak_disk_bytes.fetch_max(bytes, Relaxed);
    }

    /// The guest called into the host.
    pub fn count_host_call(&self) {
        self.host_calls.fetch_add(1, Relaxed);
    }

    /// The usage report, with the figures only the runner knows.
    pub fn usage(&self, wall: Duration, fuel_used: Option<u64>) -> Usage {
        let l = self.llm.lock().unwrap();
        Usage {
            wall_time_ms: wall.as_secs_f64() * 1000.0,
            fuel_used,
            peak_memory_bytes: self.peak_memory_bytes.load(Relaxed) as u64,
            llm_calls: l.calls,
            prompt_tokens: l.prompt_tokens,
            completion_tokens: l.completion_tokens,
            cost_usd: l.cost_usd,
            http_requests: self.http_requests.load(Relaxed),
            http_response_bytes: self
                .http_response_bytes
                .load(Relaxed)
                .min(self.budget.max_http_response_bytes),
            log_bytes: self.log_bytes.load(Relaxed).min(self.budget.max_log_bytes),
            disk_bytes: self.peak_disk_bytes.load(Relaxed),
            host_calls: self.host_calls.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(max_tokens: Option<u64>, max_cost: Option<f64>) -> RunMeter {
        RunMeter::new(RunBudget {
            max_tokens,
            max_cost_usd: max_cost,
            ..RunBudget::default()
        })
    }

    #[test]
    fn max_tokens_is_clamped_to_what_is_left() {
        let m = meter(Some(100), None);
        let free = ModelPrice::default();
        let r = m.reserve_llm(Some(1000), 512, 10, &free).unwrap();
        assert_eq!(r.max_tokens, 90, "100 tokens minus the 10-token prompt");
        // While reserved, nothing is left for another call.
        assert_eq!(m.reserve_llm(Some(10), 512, 0, &free), Err(BudgetExhausted));
        m.settle_llm(r, 30, 40, 0.0);
        assert_eq!(m.tokens_left(), Some(30));
        let r = m.reserve_llm(None, 512, 0, &free).unwrap();
        assert_eq!(r.max_tokens, 30);
        m.settle_llm(r, 10, 20, 0.0);
        assert_eq!(m.reserve_llm(None, 512, 0, &free), Err(BudgetExhausted));
        assert_eq!(m.usage(Duration::ZERO, None).total_tokens(), 100);
    }

    #[test]
    fn cost_budget_limits_completion_tokens() {
        let m = meter(None, Some(0.01));
        // $1000 per million output tokens = $0.001 a token: 10 tokens fit.
        let price = ModelPrice {
            input_per_mtok: 0.0,
            output_per_mtok: 1000.0,
        };
        let r = m.reserve_llm(Some(500), 512, 0, &price).unwrap();
        assert_eq!(r.max_tokens, 10);
        m.settle_llm(r, 0, 10, 0.01);
        assert_eq!(
            m.reserve_llm(Some(500), 512, 0, &price),
            Err(BudgetExhausted)
        );
    }

    #[test]
    fn http_request_budget_counts_and_refuses() {
        let m = RunMeter::new(RunBudget {
            max_http_requests: 2,
            ..RunBudget::default()
        });
        assert!(m.try_http_request());
        assert!(m.try_http_request());
        assert!(!m.try_http_request());
        assert_eq!(m.usage(Duration::ZERO, None).http_requests, 2);
    }
}
