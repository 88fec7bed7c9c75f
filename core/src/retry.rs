//! The one retry policy: [`Backoff`], exponential with equal jitter. Used
//! for a run's retries after retryable failures
//! ([`Backoff::RUN_RETRY`]) and for a node's reconnects and re-sends
//! ([`Backoff::RECONNECT`]).

use std::time::Duration;

/// Exponential backoff: the `n`th delay (from 1) is drawn uniformly from
/// `[ceiling(n) / 2, ceiling(n)]`, where `ceiling(n)` is `initial * 2^(n-1)`,
/// at most `max` ("equal jitter": never less than half the ceiling, so the
/// pause always grows, and spread so that many clients do not retry
/// together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// A run's next attempt after a retryable failure: 0.5 s doubling to 60 s.
    pub const RUN_RETRY: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(60),
    };

    /// A node reconnecting or re-sending to the control plane: 100 ms
    /// doubling to 5 s.
    pub const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// The most the `n`th delay can be.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The `n`th delay, jittered.
    pub fn delay(&self, n: u32) -> Duration {
        let ceiling = self.ceiling(n).as_millis() as u64;
        Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_and_stop_at_the_cap() {
        let b = Backoff::RUN_RETRY;
        for n in 1..=12 {
            let ceiling = b.ceiling(n);
            assert_eq!(
                ceiling,
                Duration::from_millis((500u64 << (n - 1)).min(60_000)),
                "attempt {n}"
            );
            for _ in 0..200 {
                let d = b.delay(n);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
            }
        }
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        assert_eq!(Backoff::RECONNECT.ceiling(7), Duration::from_secs(5));
    }
}
