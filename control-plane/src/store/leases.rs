//! Leases and results: lease queued runs to a node, ack, renew, record
//! Complete/Fail exactly once (with retry, backoff and dead-lettering),
//! expire. Every change is one transaction; a result is accepted only for
//! the run's current (attempt, lease token), from the node it was leased
//! to.

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

/// Most queued runs one lease poll looks at: past this many runs no node
/// of this kind can take, a poll leases nothing (the placement timeout
/// fails those runs `unschedulable` in time).
const MAX_QUEUE_SCAN: i64 = 20_000;

/// Most queued runs one read of a PostgreSQL lease poll's scan takes.
const PG_SCAN_PAGE: i64 = 256;

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
        self.with_tx(|tx| Self::poll(tx, node_id, max, ttl_ms, alive_since_ms))
            .map(Option::unwrap_or_default)
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
            super::quotas::Admission::load(tx, now)?
        } else {
            super::quotas::Admission::default()
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
                let mut visit = |row: &super::sql::Row<'_>| {
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
        // Fair across tenants: each free slot goes to the tenant with
        // the fewest runs in flight, then to the oldest run. The
        // candidates go in that order, and the first `room` of them
        // still queued are claimed (on PostgreSQL, a run another replica
        // is claiming is skipped for the next).
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
        claim(tx, &picks, room as usize, node_id, now, ttl_ms).map(Some)
    }

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

    /// Records results node `node_id` (any, if `None`) sends for its
    /// leases, each exactly once and checked on its own, in one
    /// transaction. Answers are in the order of `results`.
    pub fn record(
        &self,
        node_id: Option<&str>,
        results: &[RunReport<'_>],
    ) -> StoreResult<Vec<LeaseCheck>> {
        // In the order of their run ids (see `in_lock_order`).
        let mut order: Vec<usize> = (0..results.len()).collect();
        order.sort_by(|&a, &b| results[a].lease.run_id.cmp(&results[b].lease.run_id));
        self.with_tx(|tx| {
            let now = now_ms();
            let mut answers = vec![None; results.len()];
            let mut usage = super::usage::Daily::default();
            let mut writes = Writes::default();
            for chunk in order.chunks(MAX_VALUES) {
                // The chunk before's (a run may be in both).
                tx.execute_all(&writes.statements(&now))?;
                writes = Writes::default();
                let mut current = read_leases(tx, chunk.iter().map(|&i| results[i].lease))?;
                for &i in chunk {
                    let r = &results[i];
                    let key = (r.lease.run_id.clone(), r.lease.attempt);
                    answers[i] = Some(match current.get_mut(&key) {
                        None => LeaseCheck::NotFound,
                        Some(run) => match run.check(node_id, r.lease, r.outcome) {
                            Err(answer) => answer,
                            Ok(()) => {
                                super::quotas::add_spend(tx, &r.lease.run_id, r.usage, now)?;
                                usage.add(
                                    &run.tenant,
                                    &run.agent,
                                    r.usage,
                                    matches!(r.outcome, Outcome::Succeeded { .. }),
                                );
                                writes.record(run, r, now);
                                LeaseCheck::Recorded
                            }
                        },
                    });
                }
            }
            // The last chunk's writes and the usage: on PostgreSQL, one
            // statement.
            let usage = usage.into_rows(now);
            let mut statements = writes.statements(&now);
            statements.extend(usage.statements());
            tx.execute_all(&statements)?;
            tx.notify()?;
            Ok(answers.into_iter().flatten().collect())
        })
    }

    /// Fails queued runs with a node selector that no live node (ready or
    /// draining) matches and that have waited longer than `timeout_ms`, as
    /// `unschedulable` naming the selector. Returns how many.
    pub fn fail_unschedulable(&self, timeout_ms: i64) -> StoreResult<usize> {
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
                let wanted: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
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
    }

    /// Re-queues (or dead-letters) runs whose lease expired, and the runs of
    /// nodes marked lost or gone, as `lease_lost`; a run whose cancel was
    /// requested is cancelled instead. Returns how many leases it ended.
    pub fn expire_leases(&self) -> StoreResult<usize> {
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

/// A run as a result for one of its attempts finds it.
struct Current {
    attempt: u32,
    token: Option<String>,
    leased_to: Option<String>,
    state: RunState,
    max_attempts: u32,
    cancel_requested: bool,
    /// The attempt the result is for, if it exists: its token, node and
    /// outcome.
    recorded: Option<(String, String, AttemptOutcome)>,
    tenant: String,
    /// NAME@VERSION (or an OCI reference).
    agent: String,
}

/// The runs `leases` are for, with the attempts they name, by (run id,
/// attempt); the runs are locked (in the order of their ids) until the
/// transaction ends: a replica expiring one of these leases meanwhile
/// waits, or skips it.
fn read_leases<'a>(
    tx: &mut Tx<'_>,
    leases: impl Iterator<Item = &'a LeaseRef>,
) -> StoreResult<HashMap<(String, u32), Current>> {
    let leases: Vec<&LeaseRef> = leases.collect();
    let attempts: Vec<i64> = leases.iter().map(|l| i64::from(l.attempt)).collect();
    let rows: Vec<Vec<&dyn Param>> = leases
        .iter()
        .zip(&attempts)
        .map(|(l, attempt)| vec![&l.run_id as &dyn Param, attempt])
        .collect();
    let mut params = Vec::new();
    let list = values(&["TEXT", "BIGINT"], &rows, &mut params);
    let mut out = HashMap::new();
    tx.query_while(
        &format!(
            "SELECT r.id, l.column2, r.attempt, r.lease_token, r.lease_node, r.state,
                    r.max_attempts, r.cancel_requested, a.token, a.node_id, a.outcome,
                    r.tenant, r.agent
             FROM runs r JOIN {list} AS l ON r.id = l.column1
             LEFT JOIN attempts a ON a.run_id = r.id AND a.attempt = l.column2
             ORDER BY r.id /*pg: FOR UPDATE OF r*/"
        ),
        &params,
        |r| {
            let id: String = r.get(0)?;
            let corrupt = |e: warden_core::state::UnknownState| {
                super::StoreError::Corrupt(format!("run {id}: {e}"))
            };
            let recorded = match (r.get(8)?, r.get(9)?, r.get::<Option<String>>(10)?) {
                (Some(t), Some(n), Some(o)) => Some((t, n, o.parse().map_err(corrupt)?)),
                _ => None,
            };
            let current = Current {
                attempt: r.get(2)?,
                token: r.get(3)?,
                leased_to: r.get(4)?,
                state: r.get::<String>(5)?.parse().map_err(corrupt)?,
                max_attempts: r.get(6)?,
                cancel_requested: r.get(7)?,
                recorded,
                tenant: r.get(11)?,
                agent: r.get(12)?,
            };
            out.insert((id, r.get(1)?), current);
            Ok(true)
        },
    )?;
    Ok(out)
}

impl Current {
    /// Whether a result `node_id` sends for `lease` may be recorded now.
    /// `Err` carries the answer when it may not (already recorded, stale,
    /// conflicting, or another node's lease: stale, naming nothing of it).
    fn check(
        &self,
        node_id: Option<&str>,
        lease: &LeaseRef,
        outcome: Outcome<'_>,
    ) -> Result<(), LeaseCheck> {
        let outcome = match outcome {
            Outcome::Succeeded { .. } => AttemptOutcome::Succeeded,
            Outcome::Failed { .. } => AttemptOutcome::Failed,
        };
        if let Some((t, n, recorded)) = &self.recorded {
            // An expired attempt's late result is stale, like any old token.
            let ended = !matches!(recorded, AttemptOutcome::Running | AttemptOutcome::Expired);
            if *t == lease.token && node_id.is_none_or(|id| id == n) && ended {
                let same = *recorded == outcome
                    || (outcome == AttemptOutcome::Failed
                        && *recorded == AttemptOutcome::Cancelled);
                return Err(if same {
                    LeaseCheck::AlreadyRecorded
                } else {
                    LeaseCheck::Conflict(format!(
                        "attempt {} of run {} was already recorded as {recorded}",
                        lease.attempt, lease.run_id
                    ))
                });
            }
        }
        let current_lease = self.attempt == lease.attempt
            && self.token.as_deref() == Some(lease.token.as_str())
            && node_id.is_none_or(|id| self.leased_to.as_deref() == Some(id))
            && self.state.is_leased();
        if current_lease {
            Ok(())
        } else {
            Err(LeaseCheck::Stale(format!(
                "stale lease: run {} is not leased to this node at attempt {} with this token",
                lease.run_id, lease.attempt
            )))
        }
    }
}

/// A run's new state, as a result makes it.
struct RunWrite<'a> {
    id: &'a str,
    state: &'static str,
    /// Kept as it is if `None`.
    output: Option<&'a str>,
    kind: i64,
    message: Option<&'a str>,
    usage: Vec<u8>,
    /// Kept as it is if `None`.
    not_before: Option<i64>,
}

/// How an attempt ended.
struct AttemptWrite<'a> {
    id: &'a str,
    attempt: i64,
    outcome: &'static str,
    kind: i64,
    message: &'a str,
    usage: Vec<u8>,
}

/// What recording results writes: each run's new state and its attempt's
/// end, written together by [`Writes::flush`].
#[derive(Default)]
struct Writes<'a> {
    runs: Vec<RunWrite<'a>>,
    attempts: Vec<AttemptWrite<'a>>,
}

impl<'a> Writes<'a> {
    /// Records `r` (checked by [`Current::check`]), and updates `run` to
    /// what the result makes of it. A success ends the run; a failure of a
    /// retryable kind ([`FailureKind::retryable`]) goes back to the queue
    /// after a [`Backoff::RUN_RETRY`] delay until `max_attempts`, then
    /// dead-letters.
    fn record(&mut self, run: &mut Current, r: &RunReport<'a>, now: i64) {
        let lease = r.lease;
        let usage = r.usage.encode_to_vec();
        let (state, outcome, output, kind, message, not_before) = match r.outcome {
            Outcome::Succeeded { output } => (
                RunState::Succeeded,
                AttemptOutcome::Succeeded,
                Some(output),
                None,
                None,
                None,
            ),
            Outcome::Failed { kind, message } => {
                let (state, not_before) = if kind == FailureKind::Cancelled || run.cancel_requested
                {
                    (RunState::Cancelled, now)
                } else if kind.retryable() && lease.attempt < run.max_attempts {
                    // A node that shut down gives its runs back at once.
                    let delay = if kind == FailureKind::NodeShutdown {
                        0
                    } else {
                        Backoff::RUN_RETRY.delay(lease.attempt).as_millis() as i64
                    };
                    (RunState::Queued, now + delay)
                } else if kind.retryable() {
                    (RunState::DeadLettered, now)
                } else {
                    (RunState::Failed, now)
                };
                let outcome = if state == RunState::Cancelled {
                    AttemptOutcome::Cancelled
                } else {
                    AttemptOutcome::Failed
                };
                (
                    state,
                    outcome,
                    None,
                    Some(kind),
                    Some(message),
                    Some(not_before),
                )
            }
        };
        self.runs.push(RunWrite {
            id: &lease.run_id,
            state: state.as_str(),
            output,
            kind: wire_kind(kind),
            message,
            usage: usage.clone(),
            not_before,
        });
        self.attempts.push(AttemptWrite {
            id: &lease.run_id,
            attempt: i64::from(lease.attempt),
            outcome: outcome.as_str(),
            kind: wire_kind(kind),
            message: message.unwrap_or(""),
            usage,
        });
        run.state = state;
        if let Some(recorded) = &mut run.recorded {
            recorded.2 = outcome;
        }
    }

    /// The statements that write the runs and their attempts.
    fn statements<'s>(&'s self, now: &'s i64) -> Vec<(String, Vec<&'s dyn Param>)> {
        if self.runs.is_empty() {
            return Vec::new();
        }
        let rows: Vec<Vec<&dyn Param>> = self
            .runs
            .iter()
            .map(|w| {
                vec![
                    &w.id as &dyn Param,
                    &w.state,
                    &w.output,
                    &w.kind,
                    &w.message,
                    &w.usage,
                    &w.not_before,
                ]
            })
            .collect();
        let mut runs: Vec<&dyn Param> = vec![now];
        let list = values(
            &["TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "BYTEA", "BIGINT"],
            &rows,
            &mut runs,
        );
        let runs_sql = format!(
            "UPDATE runs SET state = l.column2, output = coalesce(l.column3, runs.output),
                error_kind = l.column4, error_message = l.column5, usage = l.column6,
                not_before = coalesce(l.column7, runs.not_before), updated = ?1
             FROM {list} AS l WHERE runs.id = l.column1"
        );
        let rows: Vec<Vec<&dyn Param>> = self
            .attempts
            .iter()
            .map(|w| {
                vec![
                    &w.id as &dyn Param,
                    &w.attempt,
                    &w.outcome,
                    &w.kind,
                    &w.message,
                    &w.usage,
                ]
            })
            .collect();
        let mut attempts: Vec<&dyn Param> = vec![now];
        let list = values(
            &["TEXT", "BIGINT", "TEXT", "BIGINT", "TEXT", "BYTEA"],
            &rows,
            &mut attempts,
        );
        let attempts_sql = format!(
            "UPDATE attempts SET ended = ?1, outcome = l.column3, error_kind = l.column4,
                error_message = l.column5, usage = l.column6
             FROM {list} AS l
             WHERE attempts.run_id = l.column1 AND attempts.attempt = l.column2"
        );
        vec![(runs_sql, runs), (attempts_sql, attempts)]
    }
}

fn end_attempt(
    tx: &mut Tx<'_>,
    lease: &LeaseRef,
    outcome: AttemptOutcome,
    kind: Option<FailureKind>,
    message: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE attempts SET ended = ?3, outcome = ?4, error_kind = ?5, error_message = ?6,
                usage = ?7
         WHERE run_id = ?1 AND attempt = ?2",
        p![
            lease.run_id,
            i64::from(lease.attempt),
            now,
            outcome.as_str(),
            wire_kind(kind),
            message,
            usage.encode_to_vec()
        ],
    )?;
    Ok(())
}
