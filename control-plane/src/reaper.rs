//! The reaper: marks nodes that stopped heartbeating lost and ends expired
//! leases (re-queued as `lease_lost`, cancelled, or dead-lettered), four
//! times a second.

use crate::ControlPlane;
use std::time::Duration;

impl ControlPlane {
    /// Marks silent nodes lost and re-queues expired leases, four times a
    /// second.
    pub(crate) async fn reap(self) {
        let timeout = self.config.node_timeout.as_millis() as i64;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let lost = self.store.mark_lost_nodes(timeout);
            let expired = self.store.expire_leases();
            let placement = self.config.placement_timeout.as_millis() as i64;
            match self.store.fail_unschedulable(placement) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(runs = n, "runs no node can take failed as unschedulable");
                    self.changed.notify_waiters();
                }
                Err(e) => tracing::error!(error = %e, "placement check"),
            }
            match (lost, expired) {
                (Ok(lost), Ok(expired)) => {
                    if lost > 0 {
                        tracing::warn!(lost, "nodes stopped heartbeating; marked lost");
                    }
                    if expired > 0 {
                        tracing::info!(expired, "leases expired; runs re-queued");
                        self.changed.notify_waiters();
                    }
                }
                (Err(e), _) | (_, Err(e)) => tracing::error!(error = %e, "lease reaper"),
            }
        }
    }
}
