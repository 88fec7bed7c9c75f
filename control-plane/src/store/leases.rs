//! Leases and results: lease queued runs to a node, ack, renew, record
//! Complete/Fail exactly once (with retry, backoff and dead-lettering),
//! expire. Every change is one transaction; a result is accepted only for
//! the run's current (attempt, lease token), from the node it was leased
//! to.

use super::runs::decode;
use super::sql::{Tx, p};
use super::{Store, StoreResult, new_lease_token, now_ms};
use prost::Message;
use std::collections::BTreeMap;
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

/// Queued runs one read of a PostgreSQL lease poll's scan takes.
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
        self.with_tx(|tx| {
            // Read under the store's lock: times follow the order of commits.
            let now = now_ms();
            // The node, its runs in flight, and whether any tenant has a
            // limit, in one statement.
            let node: Option<(String, String, Vec<u8>, i64, u32, bool)> = tx.query_opt(
                "SELECT state, labels, capacity, last_heartbeat,
                        (SELECT count(*) FROM runs
                         WHERE lease_node = ?1 AND state IN ('leased', 'running')),
                        EXISTS (SELECT 1 FROM concurrency_limits) OR EXISTS (
                            SELECT 1 FROM quotas WHERE max_running IS NOT NULL
                                OR max_cost_usd_per_day IS NOT NULL
                                OR max_tokens_per_day IS NOT NULL)
                 FROM nodes WHERE id = ?1",
                p![node_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )?;
            let Some((state, labels, capacity, last_heartbeat, in_flight, limited)) = node else {
                return Ok(Vec::new());
            };
            if state.parse() != Ok(NodeState::Ready) || last_heartbeat < alive_since_ms {
                return Ok(Vec::new());
            }
            let labels = parse_labels(&labels);
            let slots = pb::NodeCapacity::decode(capacity.as_slice())
                .map(|c| c.slots)
                .unwrap_or(0);
            let room = slots.saturating_sub(in_flight).min(max);
            if room == 0 {
                return Ok(Vec::new());
            }
            // On PostgreSQL, other replicas lease at the same time: a claim
            // skips runs another one holds (and takes the next candidate),
            // and tenants' limits are applied by one replica at a time.
            let shared = tx.is_postgres();
            if shared && limited {
                tx.execute("SELECT pg_advisory_xact_lock(?1)", p![LEASE_LOCK])?;
            }
            let candidates = if shared { room * 2 + 16 } else { room };
            let mut tenants = Vec::new();
            while let Some(next) = tx.query_opt(
                "SELECT tenant FROM runs WHERE state = 'queued' AND tenant > ?1
                 ORDER BY tenant LIMIT 1",
                p![tenants.last().map_or("", String::as_str)],
                |r| r.get::<String>(0),
            )? {
                tenants.push(next);
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
                // queue in pages, each after the last row of the one before.
                let page = if shared { PG_SCAN_PAGE } else { MAX_QUEUE_SCAN };
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
                        if runs.len() as u32 >= candidates || not_before > now {
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
                        Ok(true)
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
                }
                if !runs.is_empty() {
                    queues.push((admission.running(&tenant), runs));
                }
            }
            // Fair across tenants: each free slot goes to the tenant with
            // the fewest runs in flight, then to the oldest run.
            let mut leases = Vec::new();
            while (leases.len() as u32) < room {
                let Some((running, runs)) = queues
                    .iter_mut()
                    .filter(|(_, runs)| !runs.is_empty())
                    .min_by_key(|(running, runs)| (*running, runs[0].0))
                else {
                    break;
                };
                let (_, id) = runs.pop_front().expect("not empty");
                if let Some(lease) = lease_one(tx, &id, node_id, now, ttl_ms)? {
                    *running += 1;
                    leases.push(lease);
                }
            }
            Ok(leases)
        })
    }

    /// Node `node_id` (any, if `None`) started these runs (leased ->
    /// running). Returns the leases that are no longer current (or not its
    /// own).
    pub fn ack(&self, node_id: Option<&str>, leases: &[LeaseRef]) -> StoreResult<Vec<LeaseRef>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let mut stale = Vec::new();
            for lease in in_lock_order(leases, |l| &l.run_id) {
                let n = tx.execute(
                    "UPDATE runs SET state = 'running', updated = ?4
                     WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3
                       AND (CAST(?5 AS TEXT) IS NULL OR lease_node = ?5) AND state = 'leased'",
                    p![
                        lease.run_id,
                        i64::from(lease.attempt),
                        lease.token,
                        now,
                        node_id
                    ],
                )?;
                if n != 1 {
                    stale.push(lease.clone());
                }
            }
            Ok(stale)
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
        self.with_tx(|tx| {
            let now = now_ms();
            // In the order of their run ids (see `in_lock_order`).
            let mut order: Vec<usize> = (0..results.len()).collect();
            order.sort_by(|&a, &b| results[a].lease.run_id.cmp(&results[b].lease.run_id));
            let mut answers = vec![None; results.len()];
            for i in order {
                answers[i] = Some(record_one(tx, node_id, &results[i], now)?);
            }
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

/// Records one result (see [`Store::record`]).
fn record_one(
    tx: &mut Tx<'_>,
    node_id: Option<&str>,
    r: &RunReport<'_>,
    now: i64,
) -> StoreResult<LeaseCheck> {
    match check_lease(tx, node_id, r.lease, r.outcome)? {
        Err(answer) => Ok(answer),
        Ok(()) => {
            super::quotas::add_spend(tx, &r.lease.run_id, r.usage, now)?;
            match r.outcome {
                Outcome::Succeeded { output } => complete(tx, r.lease, output, r.usage, now),
                Outcome::Failed { kind, message } => fail(tx, r.lease, kind, message, r.usage, now),
            }
        }
    }
}

/// Leases run `id` to `node_id`; `None` if it is no longer queued, or (on
/// PostgreSQL) another replica is claiming it right now.
fn lease_one(
    tx: &mut Tx<'_>,
    id: &str,
    node_id: &str,
    now: i64,
    ttl_ms: i64,
) -> StoreResult<Option<Lease>> {
    let token = new_lease_token();
    let expires = now + ttl_ms;
    let row = tx.query_opt(
        "UPDATE runs SET state = 'leased', attempt = attempt + 1, lease_node = ?2,
            lease_token = ?3, lease_expires = ?4, updated = ?5
         WHERE id = (SELECT id FROM runs WHERE id = ?1 AND state = 'queued'
                     /*pg: FOR UPDATE SKIP LOCKED*/)
         RETURNING attempt, digest, agent, input, budget, grant_, traceparent, tenant",
        p![id, node_id, token, expires, now],
        |r| {
            Ok((
                r.get::<u32>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<Vec<u8>>(4)?,
                r.get::<Vec<u8>>(5)?,
                r.get::<String>(6)?,
                r.get::<String>(7)?,
            ))
        },
    )?;
    let Some((attempt, digest, agent, input, budget, grant, traceparent, tenant)) = row else {
        return Ok(None);
    };
    tx.execute(
        "INSERT INTO attempts (run_id, attempt, node_id, token, started, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, 'running')
         ON CONFLICT (run_id, attempt) DO UPDATE SET node_id = excluded.node_id,
             token = excluded.token, started = excluded.started, ended = NULL,
             outcome = 'running', error_kind = 0, error_message = NULL, usage = NULL",
        p![id, i64::from(attempt), node_id, token, now],
    )?;
    let (name, version) = warden_core::name_and_version(&agent);
    Ok(Some(Lease {
        run_id: id.to_string(),
        attempt,
        token,
        component_digest: digest,
        agent_name: name.to_string(),
        agent_version: version.to_string(),
        input,
        budget: decode(Some(budget)),
        grant: decode(Some(grant)),
        expires_unix_ms: expires,
        traceparent,
        tenant,
    }))
}

/// Records a success for `lease` (checked by `check_lease`).
fn complete(
    tx: &mut Tx<'_>,
    lease: &LeaseRef,
    output: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<LeaseCheck> {
    tx.execute(
        "UPDATE runs SET state = 'succeeded', output = ?2, usage = ?3, error_kind = 0,
                error_message = NULL, updated = ?4
         WHERE id = ?1",
        p![lease.run_id, output, usage.encode_to_vec(), now],
    )?;
    end_attempt(tx, lease, AttemptOutcome::Succeeded, None, "", usage, now)?;
    Ok(LeaseCheck::Recorded)
}

/// Records a failure for `lease` (checked by `check_lease`): retryable kinds
/// ([`FailureKind::retryable`]) go back to the queue after a
/// [`Backoff::RUN_RETRY`] delay until `max_attempts`, then dead-letter.
fn fail(
    tx: &mut Tx<'_>,
    lease: &LeaseRef,
    kind: FailureKind,
    message: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<LeaseCheck> {
    let (max_attempts, cancel_requested): (u32, bool) = tx.query_one(
        "SELECT max_attempts, cancel_requested FROM runs WHERE id = ?1",
        p![lease.run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (state, not_before) = if kind == FailureKind::Cancelled || cancel_requested {
        (RunState::Cancelled, now)
    } else if kind.retryable() && lease.attempt < max_attempts {
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
    tx.execute(
        "UPDATE runs SET state = ?2, error_kind = ?3, error_message = ?4, usage = ?5,
                not_before = ?6, updated = ?7
         WHERE id = ?1",
        p![
            lease.run_id,
            state.as_str(),
            wire_kind(Some(kind)),
            message,
            usage.encode_to_vec(),
            not_before,
            now
        ],
    )?;
    let outcome = if state == RunState::Cancelled {
        AttemptOutcome::Cancelled
    } else {
        AttemptOutcome::Failed
    };
    end_attempt(tx, lease, outcome, Some(kind), message, usage, now)?;
    Ok(LeaseCheck::Recorded)
}

/// Whether a result `node_id` sends for `lease` may be recorded now.
/// `Err` carries the answer when it may not (already recorded, stale,
/// conflicting, or another node's lease: stale, naming nothing of it).
fn check_lease(
    tx: &mut Tx<'_>,
    node_id: Option<&str>,
    lease: &LeaseRef,
    outcome: Outcome<'_>,
) -> StoreResult<Result<(), LeaseCheck>> {
    let outcome = match outcome {
        Outcome::Succeeded { .. } => AttemptOutcome::Succeeded,
        Outcome::Failed { .. } => AttemptOutcome::Failed,
    };
    // The run, and the attempt the result is for (if it exists), in one
    // read. The run is locked until the result is recorded: a replica
    // expiring this lease meanwhile waits, or skips it.
    type Run = (u32, Option<String>, Option<String>, String);
    type Recorded = Option<(String, String, String)>;
    let current: Option<(Run, Recorded)> = tx.query_opt(
        "SELECT r.attempt, r.lease_token, r.lease_node, r.state, a.token, a.node_id, a.outcome
         FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.attempt = ?2
         WHERE r.id = ?1 /*pg: FOR UPDATE OF r*/",
        p![lease.run_id, i64::from(lease.attempt)],
        |r| {
            let recorded = match (r.get(4)?, r.get(5)?, r.get(6)?) {
                (Some(t), Some(n), Some(o)) => Some((t, n, o)),
                _ => None,
            };
            Ok(((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?), recorded))
        },
    )?;
    let Some(((attempt, token, leased_to, state), recorded)) = current else {
        return Ok(Err(LeaseCheck::NotFound));
    };
    let state: RunState = state
        .parse()
        .map_err(|e| super::StoreError::Corrupt(format!("run {}: {e}", lease.run_id)))?;
    if let Some((t, n, recorded)) = recorded {
        let recorded: AttemptOutcome = recorded
            .parse()
            .map_err(|e| super::StoreError::Corrupt(format!("run {}: {e}", lease.run_id)))?;
        // An expired attempt's late result is stale, like any old token.
        let ended = !matches!(recorded, AttemptOutcome::Running | AttemptOutcome::Expired);
        if t == lease.token && node_id.is_none_or(|id| id == n) && ended {
            let same = recorded == outcome
                || (outcome == AttemptOutcome::Failed && recorded == AttemptOutcome::Cancelled);
            return Ok(Err(if same {
                LeaseCheck::AlreadyRecorded
            } else {
                LeaseCheck::Conflict(format!(
                    "attempt {} of run {} was already recorded as {recorded}",
                    lease.attempt, lease.run_id
                ))
            }));
        }
    }
    let current_lease = attempt == lease.attempt
        && token.as_deref() == Some(lease.token.as_str())
        && node_id.is_none_or(|id| leased_to.as_deref() == Some(id))
        && state.is_leased();
    if current_lease {
        Ok(Ok(()))
    } else {
        Ok(Err(LeaseCheck::Stale(format!(
            "stale lease: run {} is not leased to this node at attempt {} with this token",
            lease.run_id, lease.attempt
        ))))
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
