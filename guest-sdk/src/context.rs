//! What the run knows about itself: id, attempt, remaining budget.
//!
//! ```ignore
//! if warden_sdk::context::remaining().tokens == Some(0) { /* wrap up */ }
//! ```

use crate::__private::warden::agent::context;

pub use context::BudgetRemaining;

/// This run's id.
pub fn run_id() -> String {
    context::run_id()
}

/// The attempt number, from 1.
pub fn attempt() -> u32 {
    context::attempt()
}

/// Tokens, USD and milliseconds left.
pub fn remaining() -> BudgetRemaining {
    context::remaining()
}
