//! Why queued runs have not started, in words, for Get, List and Watch
//! (`Store::explain_waiting`): read when asked, with the rules a lease poll
//! applies ([`super::claim`]).

use super::*;
use crate::store::quotas::Admission;
use warden_proto::v1::Run;

/// What holds back a queued run, most telling first: a retry backoff, no
/// ready node it may run on, its tenant's quota, budget or a concurrency
/// limit, or every node it may run on busy; otherwise it waits its turn
/// (the free slots it may have are named).
pub(crate) fn explain(tx: &mut Tx<'_>, runs: &mut [Run], alive_since_ms: i64) -> StoreResult<()> {
    let queued: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].run_state == pb::RunState::Queued as i32)
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    // Each queued run's selector and retry time, read by id.
    let mut pending: HashMap<String, (BTreeMap<String, String>, i64)> = HashMap::new();
    for chunk in queued.chunks(MAX_VALUES) {
        let rows: Vec<Vec<&dyn Param>> = chunk
            .iter()
            .map(|&i| vec![&runs[i].run_id as &dyn Param])
            .collect();
        let mut params = Vec::new();
        let list = values(&["TEXT"], &rows, &mut params);
        tx.query_while(
            &format!(
                "SELECT r.id, r.selector, r.not_before FROM runs r
                 JOIN {list} AS v ON r.id = v.column1 WHERE r.state = 'queued'"
            ),
            &params,
            |r| {
                pending.insert(r.get(0)?, (parse_labels(&r.get::<String>(1)?), r.get(2)?));
                Ok(true)
            },
        )?;
    }
    // Ready nodes that heartbeat (as a lease poll takes them): their
    // labels and free slots.
    let in_flight: HashMap<String, u32> = tx
        .query_map(
            "SELECT lease_node, count(*) FROM runs
             WHERE state IN ('leased', 'running') AND lease_node IS NOT NULL
             GROUP BY lease_node",
            p![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .into_iter()
        .collect();
    let nodes: Vec<(BTreeMap<String, String>, u32)> = tx
        .query_map(
            "SELECT id, labels, capacity FROM nodes WHERE state = 'ready' AND last_heartbeat >= ?1",
            p![alive_since_ms],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Vec<u8>>(2)?,
                ))
            },
        )?
        .into_iter()
        .map(|(id, labels, capacity)| {
            let slots = pb::NodeCapacity::decode(capacity.as_slice()).map_or(0, |c| c.slots);
            let busy = in_flight.get(&id).copied().unwrap_or(0);
            (parse_labels(&labels), slots.saturating_sub(busy))
        })
        .collect();
    // Quotas and limits, where a tenant has any.
    let limited: bool = tx.query_one(
        "SELECT EXISTS (SELECT 1 FROM concurrency_limits) OR EXISTS (
             SELECT 1 FROM quotas WHERE max_running IS NOT NULL
                 OR max_cost_usd_per_day IS NOT NULL OR max_tokens_per_day IS NOT NULL)",
        p![],
        |r| r.get(0),
    )?;
    let admission = if limited {
        Admission::load(tx, now)?
    } else {
        Admission::default()
    };
    for &i in &queued {
        let run = &mut runs[i];
        let Some((selector, not_before)) = pending.get(&run.run_id) else {
            continue; // leased since it was read
        };
        let labels = serde_json::to_string(&run.labels).unwrap_or_default();
        run.waiting = why(&nodes, &admission, run, selector, *not_before, &labels, now);
    }
    Ok(())
}

fn why(
    nodes: &[(BTreeMap<String, String>, u32)],
    admission: &Admission,
    run: &Run,
    selector: &BTreeMap<String, String>,
    not_before: i64,
    labels_json: &str,
    now: i64,
) -> String {
    if not_before > now {
        let wait = std::time::Duration::from_secs(((not_before - now) as u64).div_ceil(1000));
        return format!(
            "retry backoff after attempt {}: next attempt in {}",
            run.attempt,
            humantime::format_duration(wait)
        );
    }
    let able: Vec<u32> = nodes
        .iter()
        .filter(|(labels, _)| selects(selector, labels))
        .map(|(_, free)| *free)
        .collect();
    if able.is_empty() {
        return if nodes.is_empty() {
            "no node is ready".to_string()
        } else {
            let wanted: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("no ready node has the labels {}", wanted.join(", "))
        };
    }
    if let Some(held) = admission.holds(&run.tenant, &run.agent, labels_json) {
        return held;
    }
    if able.iter().all(|free| *free == 0) {
        return match able.len() {
            1 => "the one node it may run on is busy (no free slot)".to_string(),
            n => format!("all {n} nodes it may run on are busy (no free slot)"),
        };
    }
    let free: u32 = able.iter().sum();
    let slots = if free == 1 { "slot" } else { "slots" };
    format!("waiting its turn: {free} free {slots} on the nodes it may run on")
}
