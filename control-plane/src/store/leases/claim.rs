//! Leasing: one poll hands a node the queued runs it can take, fair
//! across tenants and within their quotas and limits, and starts their
//! attempts.

use super::*;

/// Most queued runs one lease poll looks at: past this many runs no node
/// of this kind can take, a poll leases nothing (the placement timeout
/// fails those runs `unschedulable` in time).
const MAX_QUEUE_SCAN: i64 = 20_000;

/// Most queued runs one read of a PostgreSQL lease poll's scan takes.
const PG_SCAN_PAGE: i64 = 256;

/// Key of the advisory lock under which PostgreSQL replicas lease runs of
/// tenants with limits (one at a time, so no limit is passed by two).
const LEASE_LOCK: i64 = 0x7761_7264_656f;

impl Store {
    /// Hands up to `max` queued runs whose selector the node's labels
    /// satisfy to `node_id`, never more than the node's free slots in
    /// flight. Each lease gets a new lease token and attempt. A node that
    /// is not ready (draining, lost, gone) or has not heartbeaten since
    /// `alive_since_ms` (paused, partitioned) gets nothing, even if its
    /// stream is still open.
    pub fn lease_runs(
        &self,
        node_id: &str,
        max: u32,
        ttl_ms: i64,
        alive_since_ms: i64,
    ) -> StoreResult<Vec<Lease>> {
        // On PostgreSQL every statement is a round trip, and a transaction
        // adds two (BEGIN, COMMIT) but isolates nothing here (each
        // statement reads what is committed when it starts; the claim
        // re-checks each run in one statement): a poll runs without one
        // unless a tenant has limits, which one replica at a time applies.
        if self.is_postgres()
            && let Some(leases) =
                self.with_conn(|tx| Self::poll(tx, node_id, max, ttl_ms, alive_since_ms))?
        {
            return Ok(leases);
        }
        self.off_worker(|| {
            self.with_tx(|tx| Self::poll(tx, node_id, max, ttl_ms, alive_since_ms))
                .map(Option::unwrap_or_default)
        })
    }

    /// One lease poll (see [`Store::lease_runs`]), in a transaction or not
    /// (on PostgreSQL). `None`: tenants have limits, and this is not a
    /// transaction.
    fn poll(
        tx: &mut Tx<'_>,
        node_id: &str,
        max: u32,
        ttl_ms: i64,
        alive_since_ms: i64,
    ) -> StoreResult<Option<Vec<Lease>>> {
        // Read under the store's lock: times follow the order of commits.
        let now = now_ms();
        // The node, its runs in flight, whether any tenant has a limit,
        // and the first two tenants with queued runs, in one statement.
        type NodeRow = (String, String, Vec<u8>, i64, u32, bool, Option<String>);
        let node: Option<(NodeRow, Option<String>)> = tx.query_opt(
            "SELECT state, labels, capacity, last_heartbeat,
                    (SELECT count(*) FROM runs
                     WHERE lease_node = ?1 AND state IN ('leased', 'running')),
                    EXISTS (SELECT 1 FROM concurrency_limits) OR EXISTS (
                        SELECT 1 FROM quotas WHERE max_running IS NOT NULL
                            OR max_cost_usd_per_day IS NOT NULL
                            OR max_tokens_per_day IS NOT NULL),
                    q.first,
                    (SELECT min(tenant) FROM runs WHERE state = 'queued' AND tenant > q.first)
             FROM nodes, (SELECT min(tenant) AS first FROM runs WHERE state = 'queued') AS q
             WHERE id = ?1",
            p![node_id],
            |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                    r.get(7)?,
                ))
            },
        )?;
        let Some(((state, labels, capacity, last_heartbeat, in_flight, limited, first), second)) =
            node
        else {
            return Ok(Some(Vec::new()));
        };
        if state.parse() != Ok(NodeState::Ready) || last_heartbeat < alive_since_ms {
            return Ok(Some(Vec::new()));
        }
        let labels = parse_labels(&labels);
        let slots = pb::NodeCapacity::decode(capacity.as_slice())
            .map(|c| c.slots)
            .unwrap_or(0);
        let room = slots.saturating_sub(in_flight).min(max);
        if room == 0 {
            return Ok(Some(Vec::new()));
        }
        // On PostgreSQL, other replicas lease at the same time: a claim
        // skips runs another one holds (and takes the next candidate),
        // and tenants' limits are applied by one replica at a time.
        let shared = tx.is_postgres();
        if shared && limited {
            if !tx.in_transaction() {
                return Ok(None);
            }
            tx.execute("SELECT pg_advisory_xact_lock(?1)", p![LEASE_LOCK])?;
        }
        let candidates = if shared { room * 2 + 16 } else { room };
        // The tenants with queued runs, one index probe each, past the
        // first two.
        let mut tenants: Vec<String> = first.into_iter().chain(second).collect();
        if tenants.len() == 2 {
            tenants.extend(tx.query_map(
                "WITH RECURSIVE t (tenant) AS (
                     SELECT min(tenant) FROM runs WHERE state = 'queued' AND tenant > ?1
                     UNION ALL
                     SELECT (SELECT min(tenant) FROM runs
                             WHERE state = 'queued' AND tenant > t.tenant)
                     FROM t WHERE t.tenant IS NOT NULL)
                 SELECT tenant FROM t WHERE tenant IS NOT NULL",
                p![tenants[1]],
                |r| r.get::<String>(0),
            )?);
        }
        // Each tenant's queue in order, past any runs this node cannot
        // take (their selector wants labels it lacks) and runs over a
        // quota or concurrency limit: those never stand in front of runs
        // it can. Runs waiting out a retry backoff sort last and end a
        // tenant's scan. (`not_before` is compared here, not in SQL: a
        // bound value in a range would make SQLite re-plan every call.)
        // Rows are read lazily: a scan stops once it has enough. One
        // tenant with no limits needs no admission (nor fairness).
        let mut admission = if limited || tenants.len() > 1 {
            crate::store::quotas::Admission::load(tx, now)?
        } else {
            crate::store::quotas::Admission::default()
        };
        let mut queues = Vec::new();
        for tenant in tenants {
            if admission.closed(&tenant) {
                continue;
            }
            let mut runs = std::collections::VecDeque::new();
            // SQLite steps through one statement lazily. PostgreSQL
            // sends every row a statement selects, so it reads the
            // queue in pages, each after the last row of the one
            // before: the first as long as the claim's candidates (most
            // polls need no more), then longer.
            let mut page = if shared {
                i64::from(candidates)
            } else {
                MAX_QUEUE_SCAN
            };
            // (not_before, created, seq): on PostgreSQL only.
            let mut after: Option<(i64, i64, i64)> = None;
            let mut scanned = 0;
            loop {
                let (mut read, mut done) = (0, false);
                let from = after.take();
                let mut visit = |row: &crate::store::sql::Row<'_>| {
                    read += 1;
                    let not_before: i64 = row.get(2)?;
                    let created: i64 = row.get(3)?;
                    let id: String = row.get(0)?;
                    if shared {
                        after = Some((not_before, created, row.get(6)?));
                    }
                    // (A full list of candidates ended the scan at its last push.)
                    if not_before > now {
                        done = true;
                        return Ok(false);
                    }
                    let selector: String = row.get(1)?;
                    if selector != "{}" && !selects(&parse_labels(&selector), &labels) {
                        return Ok(true);
                    }
                    let agent: String = row.get(4)?;
                    if !admission.admit(&tenant, &agent, &row.get::<String>(5)?) {
                        done = admission.closed(&tenant);
                        return Ok(!done);
                    }
                    runs.push_back(((not_before, created), id));
                    done = runs.len() as u32 >= candidates;
                    Ok(!done)
                };
                match from {
                    None if !shared => tx.query_while(
                        "SELECT id, selector, not_before, created, agent, labels FROM runs
                         WHERE state = 'queued' AND tenant = ?1
                         ORDER BY not_before, created LIMIT ?2",
                        p![tenant, page],
                        &mut visit,
                    )?,
                    None => tx.query_while(
                        "SELECT id, selector, not_before, created, agent, labels, seq FROM runs
                         WHERE state = 'queued' AND tenant = ?1
                         ORDER BY not_before, created, seq LIMIT ?2",
                        p![tenant, page],
                        &mut visit,
                    )?,
                    Some((not_before, created, seq)) => tx.query_while(
                        "SELECT id, selector, not_before, created, agent, labels, seq FROM runs
                         WHERE state = 'queued' AND tenant = ?1
                           AND (not_before, created, seq) > (?3, ?4, ?5)
                         ORDER BY not_before, created, seq LIMIT ?2",
                        p![tenant, page, not_before, created, seq],
                        &mut visit,
                    )?,
                }
                scanned += read;
                if done || read < page || scanned >= MAX_QUEUE_SCAN {
                    break;
                }
                page = (page * 2).min(PG_SCAN_PAGE);
            }
            if !runs.is_empty() {
                queues.push((admission.running(&tenant), runs));
            }
        }
        // The candidates go in fair order, and the first `room` of them
        // still queued are claimed (on PostgreSQL, a run another replica
        // is claiming is skipped for the next).
        let picks = fair_order(queues);
        claim(tx, &picks, room as usize, node_id, now, ttl_ms).map(Some)
    }
}

/// One tenant's part of a poll: its runs in flight, and the runs of it the
/// node may take, oldest first (by `(not_before, created)`).
type TenantQueue = (i64, std::collections::VecDeque<((i64, i64), String)>);

/// The order in which the candidates get free slots, fair across tenants:
/// each goes to the tenant with the fewest runs in flight (counting the
/// ones picked before it), then to the oldest run.
fn fair_order(mut queues: Vec<TenantQueue>) -> Vec<String> {
    let mut picks = Vec::new();
    while let Some((running, runs)) = queues
        .iter_mut()
        .filter(|(_, runs)| !runs.is_empty())
        .min_by_key(|(running, runs)| (*running, runs[0].0))
    {
        let (_, id) = runs.pop_front().expect("not empty");
        *running += 1;
        picks.push(id);
    }
    picks
}

/// Starts attempts (`SELECT`ed after it: run, attempt, node, token, start,
/// outcome)...
const START_ATTEMPTS: &str =
    "INSERT INTO attempts (run_id, attempt, node_id, token, started, outcome)";
/// ... in place of the attempt row of that number, if there is one.
const RESTART_ATTEMPT: &str = "ON CONFLICT (run_id, attempt) DO UPDATE SET
    node_id = excluded.node_id, token = excluded.token, started = excluded.started,
    ended = NULL, outcome = 'running', error_kind = 0, error_message = NULL, usage = NULL";

/// Leases the first `room` of runs `ids` (in that order) that are still
/// queued to `node_id`, in one statement, and starts their attempts in
/// another. On PostgreSQL, runs another replica is claiming now are skipped.
///
/// The runs are found by id alone: the state is checked as an expression no
/// index holds (`state || ''`). With `state = 'queued'`, PostgreSQL's
/// planner, whose statistics lag a burst of submits (it may think a few runs
/// are queued when thousands are), chose to read the whole queue through its
/// index to find a few dozen candidates.
fn claim(
    tx: &mut Tx<'_>,
    ids: &[String],
    room: usize,
    node_id: &str,
    now: i64,
    ttl_ms: i64,
) -> StoreResult<Vec<Lease>> {
    let expires = now + ttl_ms;
    let tokens: Vec<String> = ids.iter().map(|_| new_lease_token()).collect();
    let order: Vec<i64> = (0..ids.len() as i64).collect();
    let rows: Vec<Vec<&dyn Param>> = ids
        .iter()
        .zip(&tokens)
        .zip(&order)
        .map(|((id, token), i)| vec![id as &dyn Param, token, i])
        .collect();
    // On PostgreSQL the attempts start in the same statement (a round trip
    // fewer, and atomic outside a transaction).
    let pg = tx.is_postgres();
    let mut leased: Vec<Lease> = Vec::new();
    for chunk in rows.chunks(MAX_VALUES) {
        let want = room.saturating_sub(leased.len()) as i64;
        if want == 0 {
            break;
        }
        let mut params: Vec<&dyn Param> = vec![&node_id, &expires, &now, &want];
        let list = values(&["TEXT", "TEXT", "BIGINT"], chunk, &mut params);
        let update = format!(
            "UPDATE runs SET state = 'leased', attempt = attempt + 1, lease_node = ?1,
                lease_token = x.token, lease_expires = ?2, updated = ?3
             FROM (SELECT r.id, l.column2 AS token
                   FROM runs r JOIN {list} AS l ON r.id = l.column1
                   WHERE r.state || '' = 'queued'
                   ORDER BY l.column3 LIMIT ?4 /*pg: FOR UPDATE OF r SKIP LOCKED*/) AS x
             WHERE runs.id = x.id
             RETURNING runs.id, runs.attempt, runs.lease_token, runs.digest, runs.agent,
                       runs.input, runs.budget, runs.grant_, runs.traceparent, runs.tenant,
                       runs.created"
        );
        let sql = if pg {
            format!(
                "WITH claimed AS ({update}),
                 started AS ({START_ATTEMPTS} SELECT id, attempt, ?1, lease_token, ?3, 'running'
                     FROM claimed {RESTART_ATTEMPT})
                 SELECT * FROM claimed"
            )
        } else {
            update
        };
        tx.write_once(|tx| {
            tx.query_while(&sql, &params, |r| {
                let agent: String = r.get(4)?;
                let (name, version) = warden_core::name_and_version(&agent);
                leased.push(Lease {
                    run_id: r.get(0)?,
                    attempt: r.get(1)?,
                    token: r.get(2)?,
                    component_digest: r.get(3)?,
                    agent_name: name.to_string(),
                    agent_version: version.to_string(),
                    input: r.get(5)?,
                    budget: decode(Some(r.get(6)?)),
                    grant: decode(Some(r.get(7)?)),
                    expires_unix_ms: expires,
                    traceparent: r.get(8)?,
                    tenant: r.get(9)?,
                    created_unix_ms: r.get(10)?,
                });
                Ok(true)
            })
        })?;
    }
    // In the order of the candidates.
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    leased.sort_by_key(|l| position.get(l.run_id.as_str()).copied());
    if pg {
        return Ok(leased);
    }
    let attempts: Vec<i64> = leased.iter().map(|l| i64::from(l.attempt)).collect();
    let rows: Vec<Vec<&dyn Param>> = leased
        .iter()
        .zip(&attempts)
        .map(|(l, attempt)| vec![&l.run_id as &dyn Param, attempt, &l.token])
        .collect();
    for chunk in rows.chunks(MAX_VALUES) {
        let mut params: Vec<&dyn Param> = vec![&node_id, &now];
        let list = values(&["TEXT", "BIGINT", "TEXT"], chunk, &mut params);
        tx.execute(
            &format!(
                "{START_ATTEMPTS} SELECT l.column1, l.column2, CAST(?1 AS TEXT), l.column3,
                        CAST(?2 AS BIGINT), 'running'
                 FROM {list} AS l WHERE l.column1 IS NOT NULL {RESTART_ATTEMPT}"
            ),
            &params,
        )?;
    }
    Ok(leased)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant with `running` runs in flight and queued runs `ids`, the
    /// first created at `from` ms, one a millisecond after another.
    fn queue(running: i64, from: i64, ids: &[&str]) -> TenantQueue {
        let runs = ids
            .iter()
            .zip(from..)
            .map(|(id, created)| ((0, created), id.to_string()))
            .collect();
        (running, runs)
    }

    #[test]
    fn each_slot_goes_to_the_tenant_with_the_fewest_runs_in_flight() {
        // `a` has 2 in flight, `b` none: `b` gets two slots first, then
        // they alternate, oldest first on a tie.
        let order = fair_order(vec![
            queue(2, 0, &["a1", "a2", "a3"]),
            queue(0, 10, &["b1", "b2", "b3", "b4"]),
        ]);
        assert_eq!(order, ["b1", "b2", "a1", "b3", "a2", "b4", "a3"]);
    }

    #[test]
    fn on_a_tie_the_oldest_run_goes_first() {
        let order = fair_order(vec![queue(1, 20, &["a1", "a2"]), queue(1, 5, &["b1"])]);
        assert_eq!(order, ["b1", "a1", "a2"]);
    }

    #[test]
    fn a_run_waiting_out_a_backoff_sorts_after_one_that_is_not() {
        let mut late = queue(0, 0, &["a1"]);
        late.1[0].0 = (1_000, 0);
        let order = fair_order(vec![late, queue(0, 50, &["b1"])]);
        assert_eq!(order, ["b1", "a1"]);
    }

    #[test]
    fn no_candidates_no_picks() {
        assert!(fair_order(Vec::new()).is_empty());
        assert!(fair_order(vec![queue(3, 0, &[])]).is_empty());
    }
}
