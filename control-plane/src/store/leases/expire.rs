//! Ending leases nobody will finish: expired ones and those of lost
//! nodes (re-queued or dead-lettered), and queued runs no node can ever
//! take (`unschedulable`).

use super::record::end_attempt;
use super::*;

impl Store {
    /// Fails queued runs with a node selector that no live node (ready or
    /// draining) matches and that have waited longer than `timeout_ms`, as
    /// `unschedulable` naming the selector. Returns how many.
    pub fn fail_unschedulable(&self, timeout_ms: i64) -> StoreResult<usize> {
        self.off_worker(|| {
            let now = now_ms();
            let kind = wire_kind(Some(FailureKind::Unschedulable));
            self.with_tx(|tx| {
                let nodes = tx.query_map(
                    "SELECT labels FROM nodes WHERE state IN ('ready', 'draining')",
                    p![],
                    |r| Ok(parse_labels(&r.get::<String>(0)?)),
                )?;
                let waiting: Vec<(String, String)> = tx.query_map(
                    "SELECT id, selector FROM runs
                     WHERE state = 'queued' AND selector != '{}' AND created < ?1",
                    p![now - timeout_ms],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut failed = 0;
                for (id, selector) in waiting {
                    let wanted = parse_labels(&selector);
                    let placeable = nodes.iter().any(|labels| selects(&wanted, labels));
                    if placeable {
                        continue;
                    }
                    let wanted: Vec<String> =
                        wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let message = format!(
                        "no node has the labels its selector asks for ({}) after {} s in the queue",
                        wanted.join(", "),
                        timeout_ms / 1000
                    );
                    failed += tx.execute(
                        "UPDATE runs SET state = 'failed', error_kind = ?2, error_message = ?3,
                                updated = ?4
                         WHERE id = ?1 AND state = 'queued'",
                        p![id, kind, message, now],
                    )?;
                }
                if failed > 0 {
                    tx.notify()?;
                }
                Ok(failed)
            })
        })
    }

    /// Re-queues (or dead-letters) runs whose lease expired, and the runs of
    /// nodes marked lost or gone, as `lease_lost`; a run whose cancel was
    /// requested is cancelled instead. Returns how many leases it ended.
    pub fn expire_leases(&self) -> StoreResult<usize> {
        self.off_worker(|| {
            let now = now_ms();
            let lease_lost = wire_kind(Some(FailureKind::LeaseLost));
            self.with_tx(|tx| {
                // A run whose result another replica is recording now is
                // skipped (its lease is no longer expired once that commits).
                let expired: Vec<(String, u32, String)> = tx.query_map(
                    "SELECT r.id, r.attempt, r.lease_token FROM runs r
                     LEFT JOIN nodes n ON n.id = r.lease_node
                     WHERE r.state IN ('leased', 'running')
                       AND (r.lease_expires < ?1 OR n.state IN ('lost', 'gone'))
                     /*pg: FOR UPDATE OF r SKIP LOCKED*/",
                    p![now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                for (id, attempt, token) in &expired {
                    let lease = LeaseRef {
                        run_id: id.clone(),
                        attempt: *attempt,
                        token: token.clone(),
                    };
                    let message = format!("the lease of attempt {attempt} expired");
                    end_attempt(
                        tx,
                        &lease,
                        AttemptOutcome::Expired,
                        Some(FailureKind::LeaseLost),
                        &message,
                        &Usage::default(),
                        now,
                    )?;
                    tx.execute(
                        "UPDATE runs SET
                            state = CASE WHEN cancel_requested <> 0 THEN 'cancelled'
                                         WHEN attempt < max_attempts THEN 'queued'
                                         ELSE 'dead_lettered' END,
                            error_kind = ?3, error_message = ?4,
                            not_before = ?2, updated = ?2
                         WHERE id = ?1",
                        p![id, now, lease_lost, message],
                    )?;
                }
                if !expired.is_empty() {
                    tx.notify()?;
                }
                Ok(expired.len())
            })
        })
    }
}
