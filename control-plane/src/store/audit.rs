//! The audit log: security-relevant actions (tokens, nodes, publishes,
//! cancels, denied requests), newest last, bounded in size.

use super::sql::p;
use super::{Store, StoreResult, now_ms};

/// Most entries kept; the oldest go first.
const MAX_AUDIT_ENTRIES: i64 = 100_000;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// The tenant it concerns; empty when the caller is unknown.
    pub tenant: String,
    /// Who: a token id, `node:ID`, or `anonymous`.
    pub actor: String,
    /// What: `token.create`, `node.revoke`, `publish`, `denied`, ...
    pub action: String,
    /// On what: a token id, node id, NAME@VERSION, run id, a method.
    pub target: String,
    pub detail: String,
}

impl Store {
    /// Appends `entry` (its time is now).
    pub fn audit(&self, mut entry: AuditEntry) -> StoreResult<()> {
        entry.at_ms = now_ms();
        self.with_tx(|tx| {
            let id: i64 = tx.query_one(
                "INSERT INTO audit (at, tenant, actor, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                p![
                    entry.at_ms,
                    entry.tenant,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.detail
                ],
                |r| r.get(0),
            )?;
            if id % 1000 == 0 {
                tx.execute(
                    "DELETE FROM audit WHERE id <= ?1",
                    p![id - MAX_AUDIT_ENTRIES],
                )?;
            }
            Ok(())
        })
    }

    /// The newest `limit` entries of `tenant` (every tenant's for `None`),
    /// oldest first.
    pub fn list_audit(&self, tenant: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.with_conn(|c| {
            let mut rows = c.query_map(
                "SELECT at, tenant, actor, action, target, detail FROM audit
                 WHERE CAST(?1 AS TEXT) IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2",
                p![tenant, i64::from(limit)],
                |r| {
                    Ok(AuditEntry {
                        at_ms: r.get(0)?,
                        tenant: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                    })
                },
            )?;
            rows.reverse();
            Ok(rows)
        })
    }
}
