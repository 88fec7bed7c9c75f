//! Nodes: register, heartbeat, drain, liveness.

use super::sql::p;
use super::{Store, StoreResult, now_ms};
use prost::Message;
use std::collections::BTreeMap;
use warden_core::NodeState;
use warden_proto::v1::{NodeCapacity, NodeInfo, RegisterRequest};

impl Store {
    pub fn register_node(&self, req: &RegisterRequest) -> StoreResult<()> {
        let now = now_ms();
        let labels: BTreeMap<_, _> = req.labels.iter().collect();
        let capacity = req.capacity.clone().unwrap_or_default();
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO nodes (id, hostname, labels, capacity, state, free_slots, last_heartbeat)
                 VALUES (?1, ?2, ?3, ?4, 'ready', ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, labels = excluded.labels,
                     capacity = excluded.capacity, state = 'ready', free_slots = excluded.free_slots,
                     last_heartbeat = excluded.last_heartbeat",
                p![
                    req.node_id,
                    req.hostname,
                    serde_json::to_string(&labels).unwrap_or_default(),
                    capacity.encode_to_vec(),
                    i64::from(capacity.slots),
                    now
                ],
            )?;
            Ok(())
        })
    }

    /// Records a heartbeat; false when the node must register again (it is
    /// unknown, or was marked lost).
    pub fn heartbeat(
        &self,
        node_id: &str,
        active: u32,
        free: u32,
        accepting: bool,
    ) -> StoreResult<bool> {
        let now = now_ms();
        self.with_tx(|tx| {
            let n = tx.execute(
                "UPDATE nodes SET last_heartbeat = ?2, active_runs = ?3, free_slots = ?4,
                    state = CASE WHEN CAST(?5 AS BIGINT) <> 0 THEN 'ready' ELSE 'draining' END
                 WHERE id = ?1 AND state IN ('ready', 'draining')",
                p![
                    node_id,
                    now,
                    i64::from(active),
                    i64::from(free),
                    i64::from(accepting)
                ],
            )?;
            Ok(n == 1)
        })
    }

    pub fn deregister_node(&self, node_id: &str) -> StoreResult<()> {
        self.with_tx(|tx| {
            tx.execute("UPDATE nodes SET state = 'gone' WHERE id = ?1", p![node_id])?;
            Ok(())
        })
    }

    /// Marks nodes silent for longer than `timeout_ms` as lost; their leases
    /// are then ended by `expire_leases`. Returns how many.
    pub fn mark_lost_nodes(&self, timeout_ms: i64) -> StoreResult<usize> {
        let cutoff = now_ms() - timeout_ms;
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE nodes SET state = 'lost'
                 WHERE state IN ('ready', 'draining') AND last_heartbeat < ?1",
                p![cutoff],
            )
        })
    }

    pub fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        self.with_conn(|c| {
            c.query_map(
                "SELECT id, hostname, labels, capacity, state, active_runs, free_slots, last_heartbeat
                 FROM nodes ORDER BY id",
                p![],
                |r| {
                    let labels: String = r.get(2)?;
                    let capacity: Vec<u8> = r.get(3)?;
                    let state: NodeState = r.parse(4)?;
                    Ok(NodeInfo {
                        node_id: r.get(0)?,
                        hostname: r.get(1)?,
                        labels: serde_json::from_str(&labels).unwrap_or_default(),
                        capacity: NodeCapacity::decode(capacity.as_slice()).ok(),
                        state: state.as_str().to_string(),
                        node_state: warden_proto::v1::NodeState::from(state) as i32,
                        active_runs: r.get(5)?,
                        free_slots: r.get(6)?,
                        last_heartbeat_unix_ms: r.get(7)?,
                    })
                },
            )
        })
    }
}
