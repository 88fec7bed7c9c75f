//! Runs, attempts and leases: submit, lease to a node, ack, renew, complete,
//! fail (with retry, backoff and dead-lettering), cancel, expire.

use super::{Store, StoreResult, next_token, now_ms, optional};
use prost::Message;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::BTreeMap;
use warden_proto::v1::{Attempt, Budget, FailureKind, Grant, Lease, LeaseRef, Run, Usage};

/// A run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub agent: String,
    pub digest: String,
    pub input: String,
    pub budget: Budget,
    pub grant: Grant,
    pub selector: BTreeMap<String, String>,
    pub max_attempts: u32,
    pub traceparent: String,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<String>,
    pub limit: u32,
}

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

/// Retry backoff: 500 ms doubling per attempt, capped at 60 s, with ±25 %
/// jitter so retries of many runs do not arrive together.
pub fn backoff_ms(attempt: u32) -> i64 {
    let base = 500i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(7))
        .min(60_000);
    let jitter = rand::random_range(-(base / 4)..=(base / 4));
    base + jitter
}

const TERMINAL: &[&str] = &["succeeded", "failed", "dead_lettered", "cancelled"];

/// Whether a run in `state` has ended (succeeded, failed, dead-lettered or
/// cancelled).
pub fn is_terminal(state: &str) -> bool {
    TERMINAL.contains(&state)
}

fn decode<M: Message + Default>(bytes: Option<Vec<u8>>) -> Option<M> {
    bytes.and_then(|b| M::decode(b.as_slice()).ok())
}

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        run_id: r.get("id")?,
        agent: r.get("agent")?,
        component_digest: r.get("digest")?,
        state: r.get("state")?,
        attempt: r.get("attempt")?,
        max_attempts: r.get("max_attempts")?,
        input: r.get("input")?,
        output: r.get::<_, Option<String>>("output")?.unwrap_or_default(),
        error_kind: r.get("error_kind")?,
        error_message: r
            .get::<_, Option<String>>("error_message")?
            .unwrap_or_default(),
        usage: decode(r.get("usage")?),
        created_unix_ms: r.get("created")?,
        updated_unix_ms: r.get("updated")?,
        attempts: Vec::new(),
        cancel_requested: r.get("cancel_requested")?,
    })
}

impl Store {
    /// Inserts queued runs in one transaction; returns them as written.
    pub fn insert_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Run>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO runs (id, agent, digest, input, budget, grant_, selector, state,
                                   max_attempts, not_before, traceparent, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?9, ?9)",
            )?;
            for run in runs {
                stmt.execute(params![
                    run.id,
                    run.agent,
                    run.digest,
                    run.input,
                    run.budget.encode_to_vec(),
                    run.grant.encode_to_vec(),
                    serde_json::to_string(&run.selector).unwrap_or_default(),
                    run.max_attempts.max(1),
                    now,
                    run.traceparent,
                ])?;
            }
            Ok(())
        })?;
        // What was just written; no need to read it back.
        Ok(runs
            .iter()
            .map(|run| Run {
                run_id: run.id.clone(),
                agent: run.agent.clone(),
                component_digest: run.digest.clone(),
                state: "queued".into(),
                attempt: 0,
                max_attempts: run.max_attempts.max(1),
                input: run.input.clone(),
                created_unix_ms: now,
                updated_unix_ms: now,
                ..Run::default()
            })
            .collect())
    }

    /// A run with its attempts.
    pub fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        self.with_conn(|c| {
            let Some(mut run) = optional(c.prepare_cached("SELECT * FROM runs WHERE id = ?1")?.query_row([id], run_from_row))? else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(
                "SELECT attempt, node_id, token, started, ended, outcome, error_kind, error_message, usage
                 FROM attempts WHERE run_id = ?1 ORDER BY attempt",
            )?;
            run.attempts = stmt
                .query_map([id], |r| {
                    Ok(Attempt {
                        attempt: r.get(0)?,
                        node_id: r.get(1)?,
                        token: r.get::<_, i64>(2)? as u64,
                        started_unix_ms: r.get(3)?,
                        ended_unix_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        outcome: r.get(5)?,
                        kind: r.get(6)?,
                        message: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                        usage: decode(r.get(8)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some(run))
        })
    }

    pub fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT * FROM runs WHERE (?1 IS NULL OR state = ?1) ORDER BY created DESC LIMIT ?2",
            )?;
            let runs = stmt
                .query_map(params![filter.state, limit], run_from_row)?
                .collect::<Result<_, _>>()?;
            Ok(runs)
        })
    }

    /// How many runs are in `state`.
    pub fn count_runs(&self, state: &str) -> StoreResult<u64> {
        self.with_conn(|c| {
            Ok(
                c.prepare_cached("SELECT count(*) FROM runs WHERE state = ?1")?
                    .query_row([state], |r| r.get(0))?,
            )
        })
    }

    /// Hands up to `max` queued runs whose selector the node's labels
    /// satisfy to `node_id`, never more than the node's free slots in
    /// flight. Each lease gets a new fencing token and attempt. A node that
    /// has not heartbeaten since `alive_since_ms` (paused, partitioned) gets
    /// nothing, even if its stream is still open.
    pub fn lease_runs(
        &self,
        node_id: &str,
        max: u32,
        ttl_ms: i64,
        alive_since_ms: i64,
    ) -> StoreResult<Vec<Lease>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let node: Option<(String, String, Vec<u8>, i64)> = tx.prepare_cached("SELECT state, labels, capacity, last_heartbeat FROM nodes WHERE id = ?1")?.query_row([node_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((state, labels, capacity, last_heartbeat)) = node else {
                return Ok(Vec::new());
            };
            if state != "ready" || last_heartbeat < alive_since_ms {
                return Ok(Vec::new());
            }
            let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
            let slots = warden_proto::v1::NodeCapacity::decode(capacity.as_slice())
                .map(|c| c.slots)
                .unwrap_or(0);
            let in_flight: u32 = tx.prepare_cached("SELECT count(*) FROM runs WHERE lease_node = ?1 AND state IN ('leased', 'running')")?.query_row([node_id],
                |r| r.get(0),
            )?;
            let room = slots.saturating_sub(in_flight).min(max);
            if room == 0 {
                return Ok(Vec::new());
            }
            // In queue order; runs waiting out a retry backoff sort last and
            // end the scan. (`not_before` is compared here, not in SQL: a
            // bound value in a range would make SQLite re-plan every call.)
            let mut stmt = tx.prepare_cached(
                "SELECT id, selector, not_before FROM runs WHERE state = 'queued'
                 ORDER BY not_before, created LIMIT ?1",
            )?;
            let candidates: Vec<(String, String)> = stmt
                .query_map([room * 4 + 16], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?))
                })?
                .filter_map(|row| match row {
                    Ok((id, selector, not_before)) => (not_before <= now).then_some(Ok((id, selector))),
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            let mut leases = Vec::new();
            for (id, selector) in candidates {
                if leases.len() as u32 >= room {
                    break;
                }
                let selector: BTreeMap<String, String> = serde_json::from_str(&selector).unwrap_or_default();
                if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    continue;
                }
                leases.push(lease_one(tx, &id, node_id, now, ttl_ms)?);
            }
            Ok(leases)
        })
    }

    /// The node started these runs (leased -> running). Returns the leases
    /// that are no longer current.
    pub fn ack(&self, leases: &[LeaseRef]) -> StoreResult<Vec<LeaseRef>> {
        let now = now_ms();
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE runs SET state = 'running', updated = ?4
                 WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3 AND state = 'leased'",
            )?;
            let mut stale = Vec::new();
            for lease in leases {
                let n = stmt.execute(params![
                    lease.run_id,
                    lease.attempt,
                    lease.token as i64,
                    now
                ])?;
                if n != 1 {
                    stale.push(lease.clone());
                }
            }
            Ok(stale)
        })
    }

    /// Extends current leases of `node_id`; says for each whether it is
    /// `ok`, `cancelled` (extended, so the node can report the cancel) or
    /// `lost`.
    pub fn renew(
        &self,
        node_id: &str,
        leases: &[LeaseRef],
        ttl_ms: i64,
    ) -> StoreResult<Vec<(LeaseRef, &'static str, i64)>> {
        let now = now_ms();
        let expires = now + ttl_ms;
        self.with_tx(|tx| {
            let mut out = Vec::with_capacity(leases.len());
            for l in leases {
                let cancel: Option<bool> = tx
                    .prepare_cached(
                        "UPDATE runs SET lease_expires = ?5
                         WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3 AND lease_node = ?4
                           AND state IN ('leased', 'running')
                         RETURNING cancel_requested",
                    )?
                    .query_row(
                        params![l.run_id, l.attempt, l.token as i64, node_id, expires],
                        |r| r.get(0),
                    )
                    .optional()?;
                let status = match cancel {
                    Some(true) => "cancelled",
                    Some(false) => "ok",
                    None => "lost",
                };
                out.push((l.clone(), status, expires));
            }
            Ok(out)
        })
    }

    /// Records results, each exactly once and checked on its own, in one
    /// transaction. Answers are in the order of `results`.
    pub fn record(&self, results: &[RunReport<'_>]) -> StoreResult<Vec<LeaseCheck>> {
        let now = now_ms();
        self.with_tx(|tx| {
            results
                .iter()
                .map(|r| match r.outcome {
                    Outcome::Succeeded { output } => complete(tx, r.lease, output, r.usage, now),
                    Outcome::Failed { kind, message } => {
                        fail(tx, r.lease, kind, message, r.usage, now)
                    }
                })
                .collect()
        })
    }

    /// Cancels a run: at once when queued; through the node (Renew) when
    /// leased or running. Returns the run, or `None` if unknown.
    pub fn cancel(&self, id: &str) -> StoreResult<Option<Run>> {
        let now = now_ms();
        self.with_tx(|tx| {
            tx.prepare_cached(
                "UPDATE runs SET state = 'cancelled', updated = ?2, error_kind = ?3,
                        error_message = 'cancelled before it started'
                 WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id, now, FailureKind::Cancelled as i32])?;
            tx.prepare_cached(
                "UPDATE runs SET cancel_requested = 1, updated = ?2
                 WHERE id = ?1 AND state IN ('leased', 'running')",
            )?
            .execute(params![id, now])?;
            Ok(())
        })?;
        self.get_run(id)
    }

    /// Re-queues (or dead-letters) runs whose lease expired, and the runs of
    /// nodes marked lost. Returns how many leases it ended.
    pub fn expire_leases(&self) -> StoreResult<usize> {
        let now = now_ms();
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT r.id, r.attempt, r.lease_token FROM runs r
                 LEFT JOIN nodes n ON n.id = r.lease_node
                 WHERE r.state IN ('leased', 'running')
                   AND (r.lease_expires < ?1 OR n.state IN ('lost', 'gone'))",
            )?;
            let expired: Vec<(String, u32, i64)> = stmt
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (id, attempt, token) in &expired {
                let lease = LeaseRef {
                    run_id: id.clone(),
                    attempt: *attempt,
                    token: *token as u64,
                };
                end_attempt(
                    tx,
                    &lease,
                    "expired",
                    FailureKind::Unspecified,
                    "lease expired",
                    &Usage::default(),
                    now,
                )?;
                tx.prepare_cached(
                    "UPDATE runs SET
                        state = CASE WHEN cancel_requested THEN 'cancelled'
                                     WHEN attempt < max_attempts THEN 'queued'
                                     ELSE 'dead_lettered' END,
                        error_message = 'lease expired on attempt ' || attempt,
                        not_before = ?2, updated = ?2
                     WHERE id = ?1",
                )?
                .execute(params![id, now])?;
            }
            Ok(expired.len())
        })
    }
}

fn retryable(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::NodeShutdown | FailureKind::HostError)
}

fn lease_one(
    tx: &Transaction<'_>,
    id: &str,
    node_id: &str,
    now: i64,
    ttl_ms: i64,
) -> StoreResult<Lease> {
    let token = next_token(tx)?;
    let expires = now + ttl_ms;
    let row = tx.prepare_cached("UPDATE runs SET state = 'leased', attempt = attempt + 1, lease_node = ?2, lease_token = ?3,
                lease_expires = ?4, updated = ?5
         WHERE id = ?1 AND state = 'queued'
         RETURNING attempt, digest, agent, input, budget, grant_, traceparent")?.query_row(params![id, node_id, token as i64, expires, now],
        |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, String>(6)?,
            ))
        },
    )?;
    let (attempt, digest, agent, input, budget, grant, traceparent) = row;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (run_id, attempt, node_id, token, started, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
    )?
    .execute(params![id, attempt, node_id, token as i64, now])?;
    let (name, version) = agent.split_once('@').unwrap_or((&agent, ""));
    Ok(Lease {
        run_id: id.to_string(),
        attempt,
        token,
        component_digest: digest,
        agent_name: name.to_string(),
        agent_version: version.to_string(),
        input,
        budget: Budget::decode(budget.as_slice()).ok(),
        grant: Grant::decode(grant.as_slice()).ok(),
        expires_unix_ms: expires,
        traceparent,
    })
}

/// Records a success for `lease`, exactly once.
fn complete(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    output: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<LeaseCheck> {
    if let Err(answer) = check_lease(tx, lease, "succeeded")? {
        return Ok(answer);
    }
    tx.prepare_cached(
        "UPDATE runs SET state = 'succeeded', output = ?2, usage = ?3, error_kind = 0,
                error_message = NULL, updated = ?4
         WHERE id = ?1",
    )?
    .execute(params![lease.run_id, output, usage.encode_to_vec(), now])?;
    end_attempt(
        tx,
        lease,
        "succeeded",
        FailureKind::Unspecified,
        "",
        usage,
        now,
    )?;
    Ok(LeaseCheck::Recorded)
}

/// Records a failure for `lease`, exactly once: retryable kinds go back to
/// the queue with backoff until `max_attempts`, then dead-letter.
fn fail(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    kind: FailureKind,
    message: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<LeaseCheck> {
    if let Err(answer) = check_lease(tx, lease, "failed")? {
        return Ok(answer);
    }
    let (max_attempts, cancel_requested): (u32, bool) = tx
        .prepare_cached("SELECT max_attempts, cancel_requested FROM runs WHERE id = ?1")?
        .query_row([&lease.run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (state, not_before) = if kind == FailureKind::Cancelled || cancel_requested {
        ("cancelled", now)
    } else if retryable(kind) && lease.attempt < max_attempts {
        // A node that shut down gives its runs back at once.
        let delay = if kind == FailureKind::NodeShutdown {
            0
        } else {
            backoff_ms(lease.attempt)
        };
        ("queued", now + delay)
    } else if retryable(kind) {
        ("dead_lettered", now)
    } else {
        ("failed", now)
    };
    tx.prepare_cached(
        "UPDATE runs SET state = ?2, error_kind = ?3, error_message = ?4, usage = ?5,
                not_before = ?6, updated = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        lease.run_id,
        state,
        kind as i32,
        message,
        usage.encode_to_vec(),
        not_before,
        now
    ])?;
    let outcome = if state == "cancelled" {
        "cancelled"
    } else {
        "failed"
    };
    end_attempt(tx, lease, outcome, kind, message, usage, now)?;
    Ok(LeaseCheck::Recorded)
}

/// Whether a result for `lease` may be recorded now. `Err` carries the
/// answer when it may not (already recorded, stale, conflicting).
fn check_lease(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    outcome: &str,
) -> StoreResult<Result<(), LeaseCheck>> {
    let current: Option<(u32, Option<i64>, String)> = tx
        .prepare_cached("SELECT attempt, lease_token, state FROM runs WHERE id = ?1")?
        .query_row([&lease.run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((attempt, token, state)) = current else {
        return Ok(Err(LeaseCheck::NotFound));
    };
    let recorded: Option<(i64, String)> = tx
        .prepare_cached("SELECT token, outcome FROM attempts WHERE run_id = ?1 AND attempt = ?2")?
        .query_row(params![lease.run_id, lease.attempt], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match recorded {
        // An expired attempt's late result is stale, like any old token.
        Some((t, o)) if t as u64 == lease.token && o != "running" && o != "expired" => {
            let same = o == outcome || (outcome == "failed" && o == "cancelled");
            return Ok(Err(if same {
                LeaseCheck::AlreadyRecorded
            } else {
                LeaseCheck::Conflict(format!(
                    "attempt {} of run {} was already recorded as {o}",
                    lease.attempt, lease.run_id
                ))
            }));
        }
        _ => {}
    }
    let current_lease = attempt == lease.attempt
        && token.map(|t| t as u64) == Some(lease.token)
        && matches!(state.as_str(), "leased" | "running");
    if current_lease {
        Ok(Ok(()))
    } else {
        Ok(Err(LeaseCheck::Stale(format!(
            "stale lease: run {} is at attempt {attempt} ({state}); this result is for attempt {} (token {})",
            lease.run_id, lease.attempt, lease.token
        ))))
    }
}

fn end_attempt(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    outcome: &str,
    kind: FailureKind,
    message: &str,
    usage: &Usage,
    now: i64,
) -> StoreResult<()> {
    tx.prepare_cached("UPDATE attempts SET ended = ?3, outcome = ?4, error_kind = ?5, error_message = ?6, usage = ?7
         WHERE run_id = ?1 AND attempt = ?2")?.execute(params![lease.run_id, lease.attempt, now, outcome, kind as i32, message, usage.encode_to_vec()],
    )?;
    Ok(())
}
