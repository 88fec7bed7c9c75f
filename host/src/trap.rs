//! [`BudgetTrap`]: a budget the store enforces by trapping (epoch callback,
//! resource limiter, output streams). The runner recognises it with
//! `downcast_ref` and so tells a timeout from a memory limit without
//! parsing messages.

use warden_core::FailureKind;

/// A budget the store enforces by trapping. Raised as the error of a trap
/// (epoch callback, resource limiter, output streams) and recognised by the
/// runner with `downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetTrap {
    #[error("wall-time budget of {0:?} exceeded")]
    Timeout(std::time::Duration),
    #[error("memory limit of {limit} bytes exceeded (asked to grow to {desired} bytes)")]
    Memory { limit: usize, desired: usize },
    #[error("log and stdio output over the budget of {0} bytes")]
    LogBytes(u64),
    #[error("the run was cancelled")]
    Cancelled,
}

impl BudgetTrap {
    pub fn kind(&self) -> FailureKind {
        match self {
            BudgetTrap::Timeout(_) => FailureKind::Timeout,
            BudgetTrap::Memory { .. } => FailureKind::MemoryLimit,
            BudgetTrap::LogBytes(_) => FailureKind::OutputTooLarge,
            BudgetTrap::Cancelled => FailureKind::Cancelled,
        }
    }
}
