//! `warden:agent/context`: what a run may know about itself (its id, its
//! attempt, what is left of its budget). Nothing about the host.

use crate::bindings::context::{self, BudgetRemaining};
use crate::meter::RunMeter;
use std::sync::Arc;
use std::time::Instant;

pub struct ContextCtx {
    pub run_id: String,
    pub attempt: u32,
    pub deadline: Instant,
    pub meter: Arc<RunMeter>,
}

impl context::Host for ContextCtx {
    fn run_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.run_id.clone())
    }

    fn attempt(&mut self) -> wasmtime::Result<u32> {
        Ok(self.attempt)
    }

    fn remaining(&mut self) -> wasmtime::Result<BudgetRemaining> {
        let time = self.deadline.saturating_duration_since(Instant::now());
        Ok(BudgetRemaining {
            tokens: self.meter.tokens_left(),
            cost_usd: self.meter.cost_left(),
            time_ms: u64::try_from(time.as_millis()).unwrap_or(u64::MAX),
        })
    }
}
