//! Recording results: each exactly once, checked against the run's
//! current attempt and lease token, with retry, backoff and
//! dead-lettering; a batch's writes go out together.

use super::*;

impl Store {
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
            let mut usage = crate::store::usage::Daily::default();
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
                                crate::store::quotas::add_spend(tx, &r.lease.run_id, r.usage, now)?;
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
                crate::store::StoreError::Corrupt(format!("run {id}: {e}"))
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

pub(super) fn end_attempt(
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
