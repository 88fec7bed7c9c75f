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

#[cfg(test)]
mod tests {
    use super::{AuditEntry, MAX_AUDIT_ENTRIES, Store};
    use crate::store::sql::p;

    /// (entries, oldest id) in the log.
    fn extent(store: &Store) -> (i64, i64) {
        store
            .with_conn(|c| {
                c.query_one("SELECT COUNT(*), MIN(id) FROM audit", p![], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .unwrap()
    }

    fn denied(n: u32) -> AuditEntry {
        AuditEntry {
            actor: "anonymous".into(),
            action: "denied".into(),
            target: format!("flood {n}"),
            ..Default::default()
        }
    }

    /// A flood of audited requests costs a row each and pushes the oldest
    /// out: past 100,000 entries the log is cut back to the newest 100,000
    /// at every 1,000th, so it never holds 101,000.
    #[test]
    fn the_log_keeps_the_newest_100_000_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cp.sqlite3")).unwrap();
        // All but the last of 101,000 entries, in one statement: audited
        // one by one they would take minutes.
        store
            .with_tx(|tx| {
                tx.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     INSERT INTO audit (at, tenant, actor, action, target, detail)
                     SELECT 0, '', 'anonymous', 'denied', 'old ' || i, '' FROM n",
                    p![MAX_AUDIT_ENTRIES + 999],
                )
            })
            .unwrap();
        assert_eq!(extent(&store), (MAX_AUDIT_ENTRIES + 999, 1));
        store.audit(denied(0)).unwrap();
        assert_eq!(extent(&store), (MAX_AUDIT_ENTRIES, 1001));
        // A thousand more: the log grows by them and is cut back again.
        for n in 1..1000 {
            store.audit(denied(n)).unwrap();
        }
        assert_eq!(extent(&store), (MAX_AUDIT_ENTRIES + 999, 1001));
        store.audit(denied(1000)).unwrap();
        assert_eq!(extent(&store), (MAX_AUDIT_ENTRIES, 2001));
        let newest = store.list_audit(None, 1).unwrap();
        assert_eq!(newest[0].target, "flood 1000");
    }
}
