//! Quotas per tenant: how many runs may run and wait at once, and how
//! large an input may be. `None`: no limit.

use super::{Store, StoreResult};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Runs leased or running at once; more wait in the queue.
    pub max_running: Option<u32>,
    /// Runs queued at once; a submit past it fails `quota_exceeded`.
    pub max_queued: Option<u32>,
    /// Largest input; a submit past it fails `quota_exceeded`.
    pub max_input_bytes: Option<u64>,
}

impl Store {
    pub fn quotas(&self, tenant: &str) -> StoreResult<Quotas> {
        self.with_conn(|c| {
            Ok(c.prepare_cached(
                "SELECT max_running, max_queued, max_input_bytes FROM quotas WHERE tenant = ?1",
            )?
            .query_row([tenant], |r| {
                Ok(Quotas {
                    max_running: r.get(0)?,
                    max_queued: r.get(1)?,
                    max_input_bytes: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
                })
            })
            .optional()?
            .unwrap_or_default())
        })
    }

    pub fn set_quotas(&self, tenant: &str, q: &Quotas) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO quotas (tenant, max_running, max_queued, max_input_bytes)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant) DO UPDATE SET max_running = excluded.max_running,
                     max_queued = excluded.max_queued, max_input_bytes = excluded.max_input_bytes",
                params![
                    tenant,
                    q.max_running,
                    q.max_queued,
                    q.max_input_bytes.map(|n| n.min(i64::MAX as u64) as i64)
                ],
            )?;
            Ok(())
        })
    }

    /// How many runs of `tenant` are queued.
    pub fn queued_runs(&self, tenant: &str) -> StoreResult<u64> {
        self.with_conn(|c| {
            Ok(c.prepare_cached(
                "SELECT count(*) FROM runs WHERE tenant = ?1 AND state = 'queued'",
            )?
            .query_row([tenant], |r| r.get(0))?)
        })
    }
}

/// Tenants with a running limit, and how many more runs each may start
/// now (within `tx`).
pub(super) fn running_room(tx: &rusqlite::Transaction<'_>) -> StoreResult<HashMap<String, i64>> {
    let mut room = HashMap::new();
    let mut stmt = tx.prepare_cached(
        "SELECT q.tenant, q.max_running - (SELECT count(*) FROM runs r
             WHERE r.tenant = q.tenant AND r.state IN ('leased', 'running'))
         FROM quotas q WHERE q.max_running IS NOT NULL",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (tenant, left) = row?;
        room.insert(tenant, left);
    }
    Ok(room)
}
