//! Leases and results: lease queued runs to a node ([`claim`]), ack,
//! renew, record Complete/Fail exactly once with retry, backoff and
//! dead-lettering ([`record`]), expire ([`expire`]). A result is accepted
//! only for the run's current (attempt, lease token), from the node it was
//! leased to.

mod claim;
mod expire;
mod record;
mod waiting;

pub(crate) use waiting::explain;

use super::runs::decode;
use super::sql::{MAX_VALUES, Param, Tx, p, values};
use super::{Store, StoreResult, new_lease_token, now_ms};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use warden_core::{AttemptOutcome, Backoff, FailureKind, NodeState, RenewStatus, RunState};
use warden_proto::v1 as pb;
use warden_proto::v1::{Lease, LeaseRef, Usage};

/// The answer to Complete/Fail for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Recorded now.
    Recorded,
    /// This exact result was recorded before (a retried call).
    AlreadyRecorded,
    /// The lease is not the run's current one (expired and re-leased, or
    /// never existed): the result is not recorded.
    Stale(String),
    /// The lease is current, but a different result was recorded for it.
    Conflict(String),
    NotFound,
}

/// How a run attempt ended, as reported by its node.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Succeeded { output: &'a str },
    Failed { kind: FailureKind, message: &'a str },
}

/// One result to record for a lease.
#[derive(Debug, Clone, Copy)]
pub struct RunReport<'a> {
    pub lease: &'a LeaseRef,
    pub outcome: Outcome<'a>,
    pub usage: &'a Usage,
}

/// Labels or a selector as stored (JSON).
fn parse_labels(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Whether a node with `labels` satisfies `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn wire_kind(kind: Option<FailureKind>) -> i64 {
    kind.map_or(0, |k| pb::FailureKind::from(k) as i64)
}

impl Store {
    /// Node `node_id` (any, if `None`) started these runs (leased ->
    /// running). Returns the leases that are no longer current (or not its
    /// own).
    pub fn ack(&self, node_id: Option<&str>, leases: &[LeaseRef]) -> StoreResult<Vec<LeaseRef>> {
        let now = now_ms();
        let sorted = in_lock_order(leases, |l| &l.run_id);
        let attempts: Vec<i64> = sorted.iter().map(|l| i64::from(l.attempt)).collect();
        let rows: Vec<Vec<&dyn Param>> = sorted
            .iter()
            .zip(&attempts)
            .map(|(l, attempt)| vec![&l.run_id as &dyn Param, attempt, &l.token])
            .collect();
        // Each statement stands alone (no transaction: on PostgreSQL, two
        // round trips fewer).
        self.with_conn(|tx| {
            let mut acked = HashSet::new();
            for chunk in rows.chunks(MAX_VALUES) {
                let mut params: Vec<&dyn Param> = vec![&now, &node_id];
                let list = values(&["TEXT", "BIGINT", "TEXT"], chunk, &mut params);
                tx.write_once(|tx| {
                    tx.query_while(
                        &format!(
                            "UPDATE runs SET state = 'running', updated = ?1
                         FROM (SELECT r.id FROM runs r JOIN {list} AS l
                                 ON r.id = l.column1 AND r.attempt = l.column2
                                    AND r.lease_token = l.column3
                               WHERE (CAST(?2 AS TEXT) IS NULL OR r.lease_node = ?2)
                                 AND r.state = 'leased'
                               ORDER BY r.id /*pg: FOR UPDATE OF r*/) AS x
                         WHERE runs.id = x.id
                         RETURNING runs.id, runs.attempt, runs.lease_token"
                        ),
                        &params,
                        |r| {
                            acked.insert((
                                r.get::<String>(0)?,
                                r.get::<u32>(1)?,
                                r.get::<String>(2)?,
                            ));
                            Ok(true)
                        },
                    )
                })?;
            }
            Ok(leases
                .iter()
                .filter(|l| !acked.contains(&(l.run_id.clone(), l.attempt, l.token.clone())))
                .cloned()
                .collect())
        })
    }

    /// Extends current leases of `node_id`; says for each whether it is
    /// extended, cancelled (extended, so the node can report the cancel)
    /// or lost, with the new expiry.
    pub fn renew(
        &self,
        node_id: &str,
        leases: &[LeaseRef],
        ttl_ms: i64,
    ) -> StoreResult<Vec<(LeaseRef, RenewStatus, i64)>> {
        let now = now_ms();
        let expires = now + ttl_ms;
        self.with_tx(|tx| {
            let mut out = Vec::with_capacity(leases.len());
            for l in in_lock_order(leases, |l| &l.run_id) {
                let cancel: Option<bool> = tx.query_opt(
                    "UPDATE runs SET lease_expires = ?5
                     WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3 AND lease_node = ?4
                       AND state IN ('leased', 'running')
                     RETURNING cancel_requested",
                    p![l.run_id, i64::from(l.attempt), l.token, node_id, expires],
                    |r| r.get(0),
                )?;
                let status = match cancel {
                    Some(true) => RenewStatus::Cancelled,
                    Some(false) => RenewStatus::Ok,
                    None => RenewStatus::Lost,
                };
                out.push((l.clone(), status, expires));
            }
            Ok(out)
        })
    }
}

/// `items` in the order of their run ids: every transaction that locks
/// several runs (ack, renew, record) takes the locks in one order, so two
/// of them (on two replicas, or a node's ack and its report) never
/// deadlock.
fn in_lock_order<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| id(a).cmp(id(b)));
    sorted
}
