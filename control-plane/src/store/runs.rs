//! Runs: insert (submit), read, list, count and cancel. Leasing and
//! results are in [`super::leases`].

use super::sql::{MAX_VALUES, Param, Row, p, values};
use super::{Store, StoreResult, now_ms};
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use warden_core::{AttemptOutcome, FailureKind, RunState};
use warden_proto::v1 as pb;
use warden_proto::v1::{Attempt, Budget, Grant, Run};

/// A run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub tenant: String,
    pub agent: String,
    pub digest: String,
    pub input: String,
    pub budget: Budget,
    pub grant: Grant,
    pub selector: BTreeMap<String, String>,
    /// The run's own labels (for concurrency limits).
    pub labels: BTreeMap<String, String>,
    pub max_attempts: u32,
    pub traceparent: String,
    /// At most one run per key and tenant (see `SubmitRequest`).
    pub idempotency_key: Option<String>,
    /// Where its result is POSTed once it ends.
    pub webhook_url: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Runs of this tenant only; `None`: every tenant's.
    pub tenant: Option<String>,
    pub state: Option<RunState>,
    /// Runs of this agent: a name (any version) or `name@version`.
    pub agent: Option<String>,
    /// Runs carrying each of these labels with its value.
    pub labels: BTreeMap<String, String>,
    /// Runs submitted at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    pub limit: u32,
    /// Runs older than this one (its `created` and id): the page after it.
    pub after: Option<(i64, String)>,
}

/// Most runs in one page of `list_runs`.
pub const MAX_PAGE: u32 = 1000;

pub(super) fn decode<M: Message + Default>(bytes: Option<Vec<u8>>) -> Option<M> {
    bytes.and_then(|b| M::decode(b.as_slice()).ok())
}

/// A run's state in both of the protocol's fields.
pub(super) fn set_state(run: &mut Run, state: RunState) {
    run.state = state.as_str().to_string();
    run.run_state = pb::RunState::from(state) as i32;
}

/// The columns [`run_from_row`] reads, in its order.
const RUN_COLUMNS: &str = "id, tenant, agent, digest, attempt, max_attempts, input, output,
    error_kind, error_message, usage, created, updated, cancel_requested, labels, state,
    webhook_url, webhook_state, webhook_next, traceparent";

/// The columns of a run in a list, in [`run_from_row`]'s order: no input
/// or output (their sizes instead, after the run's columns) and the error
/// message cut, so a page's size is bounded by its count.
const SUMMARY_COLUMNS: &str = "id, tenant, agent, digest, attempt, max_attempts, '', NULL,
    error_kind, substr(error_message, 1, 512), usage, created, updated, cancel_requested, labels, state,
    webhook_url, webhook_state, webhook_next, traceparent,
    CAST(octet_length(input) AS BIGINT), CAST(octet_length(output) AS BIGINT)";

/// The trace id of W3C `traceparent` `00-TRACE_ID-SPAN_ID-FLAGS` (empty
/// for anything else).
fn trace_id(traceparent: &str) -> String {
    match traceparent.split('-').collect::<Vec<_>>()[..] {
        [_, id, _, _] if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

fn run_from_row(r: &Row<'_>) -> StoreResult<Run> {
    let mut run = Run {
        run_id: r.get(0)?,
        tenant: r.get(1)?,
        agent: r.get(2)?,
        component_digest: r.get(3)?,
        attempt: r.get(4)?,
        max_attempts: r.get(5)?,
        input: r.get(6)?,
        output: r.get::<Option<String>>(7)?.unwrap_or_default(),
        error_kind: r.get(8)?,
        error_message: r.get::<Option<String>>(9)?.unwrap_or_default(),
        usage: decode(r.get(10)?),
        created_unix_ms: r.get(11)?,
        updated_unix_ms: r.get(12)?,
        attempts: Vec::new(),
        cancel_requested: r.get(13)?,
        labels: serde_json::from_str(&r.get::<String>(14)?).unwrap_or_default(),
        ..Run::default()
    };
    run.input_bytes = run.input.len() as u64;
    run.output_bytes = run.output.len() as u64;
    let state: RunState = r.parse(15)?;
    set_state(&mut run, state);
    if let Some(url) = r.get::<Option<String>>(16)? {
        let due = r.get::<Option<String>>(17)?.unwrap_or_default();
        let (state, next) = match (due.as_str(), state.is_terminal()) {
            // Due once the run has ended.
            ("pending", false) => ("waiting", 0),
            ("pending", true) => ("pending", r.get::<Option<i64>>(18)?.unwrap_or(0)),
            (done, _) => (done, 0),
        };
        run.webhook = Some(pb::WebhookStatus {
            url,
            state: state.to_string(),
            next_attempt_unix_ms: next,
            deliveries: Vec::new(),
        });
    }
    run.trace_id = trace_id(&r.get::<String>(19)?);
    Ok(run)
}

fn summary_from_row(r: &Row<'_>) -> StoreResult<Run> {
    let mut run = run_from_row(r)?;
    run.input_bytes = r.get::<i64>(20)?.max(0) as u64;
    run.output_bytes = r.get::<Option<i64>>(21)?.unwrap_or(0).max(0) as u64;
    Ok(run)
}

impl Store {
    /// Inserts queued runs in one transaction; returns them as written (a
    /// run whose idempotency key was used before: the earlier run).
    pub fn insert_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Run>> {
        let now = now_ms();
        let encoded: Vec<_> = runs
            .iter()
            .map(|run| {
                (
                    run.budget.encode_to_vec(),
                    run.grant.encode_to_vec(),
                    serde_json::to_string(&run.selector).unwrap_or_default(),
                    i64::from(run.max_attempts.max(1)),
                    serde_json::to_string(&run.labels).unwrap_or_default(),
                    run.idempotency_key.as_deref(),
                    run.webhook_url.as_deref(),
                )
            })
            .collect();
        // The last column orders the rows: runs of a batch are queued in
        // the order given.
        let order: Vec<i64> = (0..runs.len() as i64).collect();
        let rows: Vec<Vec<&dyn Param>> = runs
            .iter()
            .zip(&encoded)
            .zip(&order)
            .map(
                |((run, (budget, grant, selector, max_attempts, labels, key, webhook)), i)| {
                    vec![
                        &run.id as &dyn Param,
                        &run.agent,
                        &run.digest,
                        &run.input,
                        budget,
                        grant,
                        selector,
                        max_attempts,
                        &run.traceparent,
                        &run.tenant,
                        labels,
                        key,
                        i,
                        webhook,
                    ]
                },
            )
            .collect();
        let earlier = self.with_tx(|tx| {
            // One statement per chunk; a run whose idempotency key was used
            // (before, or by an earlier run of this batch) is not inserted.
            let mut inserted = HashSet::new();
            for chunk in rows.chunks(MAX_VALUES) {
                let mut params: Vec<&dyn Param> = vec![&now];
                let list = values(
                    &[
                        "TEXT", "TEXT", "TEXT", "TEXT", "BYTEA", "BYTEA", "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT",
                    ],
                    chunk,
                    &mut params,
                );
                tx.query_while(
                    &format!(
                        "INSERT INTO runs (id, agent, digest, input, budget, grant_, selector,
                                           state, max_attempts, not_before, traceparent,
                                           created, updated, tenant, labels, idempotency_key,
                                           webhook_url, webhook_state, webhook_next)
                         SELECT column1, column2, column3, column4, column5, column6, column7,
                                'queued', column8, CAST(?1 AS BIGINT), column9,
                                CAST(?1 AS BIGINT), CAST(?1 AS BIGINT), column10, column11,
                                column12, column14,
                                CASE WHEN column14 IS NULL THEN NULL ELSE 'pending' END,
                                CASE WHEN column14 IS NULL THEN NULL ELSE 0 END
                         FROM {list} AS l
                         WHERE column1 IS NOT NULL ORDER BY column13
                         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL
                         DO NOTHING
                         RETURNING id"
                    ),
                    &params,
                    |r| {
                        inserted.insert(r.get::<String>(0)?);
                        Ok(true)
                    },
                )?;
            }
            let mut earlier = Vec::new();
            for (i, run) in runs.iter().enumerate() {
                if !inserted.contains(&run.id) {
                    // The key was used: the run made then, not a new one.
                    let first = tx.query_one(
                        &format!(
                            "SELECT {RUN_COLUMNS} FROM runs WHERE tenant = ?1 AND idempotency_key = ?2"
                        ),
                        p![run.tenant, run.idempotency_key.as_deref()],
                        run_from_row,
                    )?;
                    earlier.push((i, first));
                }
            }
            tx.notify()?;
            Ok(earlier)
        })?;
        // What was just written; no need to read it back.
        let mut written: Vec<Run> = runs
            .iter()
            .map(|run| {
                let mut row = Run {
                    run_id: run.id.clone(),
                    tenant: run.tenant.clone(),
                    agent: run.agent.clone(),
                    component_digest: run.digest.clone(),
                    attempt: 0,
                    max_attempts: run.max_attempts.max(1),
                    input: run.input.clone(),
                    labels: run.labels.clone().into_iter().collect(),
                    created_unix_ms: now,
                    updated_unix_ms: now,
                    webhook: run.webhook_url.clone().map(|url| pb::WebhookStatus {
                        url,
                        state: "waiting".into(),
                        ..Default::default()
                    }),
                    trace_id: trace_id(&run.traceparent),
                    ..Run::default()
                };
                set_state(&mut row, RunState::Queued);
                row
            })
            .collect();
        for (i, first) in earlier {
            written[i] = first;
        }
        Ok(written)
    }

    /// A run with its attempts, if it is `tenant`'s (any tenant's for
    /// `None`).
    pub fn get_run(&self, tenant: Option<&str>, id: &str) -> StoreResult<Option<Run>> {
        self.with_conn(|c| {
            let Some(mut run) = c.query_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)"),
                p![id, tenant],
                run_from_row,
            )?
            else {
                return Ok(None);
            };
            run.attempts = c.query_map(
                "SELECT attempt, node_id, started, ended, outcome, error_kind, error_message, usage
                 FROM attempts WHERE run_id = ?1 ORDER BY attempt",
                p![id],
                |r| {
                    let outcome: AttemptOutcome = r.parse(4)?;
                    Ok(Attempt {
                        attempt: r.get(0)?,
                        node_id: r.get(1)?,
                        started_unix_ms: r.get(2)?,
                        ended_unix_ms: r.get::<Option<i64>>(3)?.unwrap_or(0),
                        outcome: outcome.as_str().to_string(),
                        attempt_outcome: pb::AttemptOutcome::from(outcome) as i32,
                        kind: r.get(5)?,
                        message: r.get::<Option<String>>(6)?.unwrap_or_default(),
                        usage: decode(r.get(7)?),
                    })
                },
            )?;
            if let Some(webhook) = &mut run.webhook {
                webhook.deliveries = c.query_map(
                    "SELECT attempt, at, http_status, error, ok, duration_ms
                     FROM webhook_deliveries WHERE run_id = ?1 ORDER BY attempt",
                    p![id],
                    super::webhooks::delivery_from_row,
                )?;
            }
            Ok(Some(run))
        })
    }

    /// Runs, newest first, at most [`MAX_PAGE`], as summaries: no input,
    /// output or attempts (`input_bytes`/`output_bytes` say their sizes),
    /// the error message cut to 512 characters.
    pub fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let limit = if filter.limit == 0 {
            100
        } else {
            // A page and the first run of the next.
            filter.limit.min(MAX_PAGE + 1)
        };
        let (after_created, after_id) = match &filter.after {
            Some((created, id)) => (Some(*created), Some(id.as_str())),
            None => (None, None),
        };
        let limit = i64::from(limit);
        // Only the filters given, so each form has a plan of its own that
        // uses the index for it (runs_by_state, runs_by_tenant).
        let mut params: Vec<&dyn Param> = vec![&limit];
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE TRUE");
        let state = filter.state.map(RunState::as_str);
        if let Some(state) = &state {
            params.push(state);
            sql += &format!(" AND state = ?{}", params.len());
        }
        if let Some(tenant) = &filter.tenant {
            params.push(tenant);
            sql += &format!(" AND tenant = ?{}", params.len());
        }
        // An agent name matches each of its versions (`name@...`).
        let agent = filter.agent.as_ref().map(|a| match a.contains('@') {
            true => (a.clone(), false),
            false => (format!("{a}@"), true),
        });
        if let Some((agent, prefix)) = &agent {
            params.push(agent);
            let n = params.len();
            sql += &match prefix {
                true => format!(" AND substr(agent, 1, length(?{n})) = ?{n}"),
                false => format!(" AND agent = ?{n}"),
            };
        }
        // Labels are stored as a JSON object with its keys sorted; each
        // `"key":"value"` pair is found as it is written there (replace,
        // unlike LIKE, is case-sensitive on both backends, and a quote
        // inside a key or value is escaped, so a pair cannot match inside
        // one).
        let pairs: Vec<String> = filter
            .labels
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    serde_json::Value::from(k.as_str()),
                    serde_json::Value::from(v.as_str())
                )
            })
            .collect();
        for pair in &pairs {
            params.push(pair);
            sql += &format!(" AND replace(labels, ?{}, '') <> labels", params.len());
        }
        if let Some(since) = &filter.since_ms {
            params.push(since);
            sql += &format!(" AND created >= ?{}", params.len());
        }
        if let (Some(created), Some(id)) = (&after_created, &after_id) {
            params.push(created);
            params.push(id);
            sql += &format!(
                " AND (created, id) < (?{}, ?{})",
                params.len() - 1,
                params.len()
            );
        }
        sql += " ORDER BY created DESC, id DESC LIMIT ?1";
        self.with_conn(|c| c.query_map(&sql, &params, summary_from_row))
    }

    /// Fills in why each queued run of `runs` waits (`Run.waiting`), as a
    /// lease poll would see it now, counting nodes that have heartbeaten
    /// since `alive_since_ms`.
    pub fn explain_waiting(&self, runs: &mut [Run], alive_since_ms: i64) -> StoreResult<()> {
        if !runs
            .iter()
            .any(|r| r.run_state == pb::RunState::Queued as i32)
        {
            return Ok(());
        }
        self.off_worker(|| self.with_conn(|c| super::leases::explain(c, runs, alive_since_ms)))
    }

    /// How many runs are in `state`.
    pub fn count_runs(&self, state: RunState) -> StoreResult<u64> {
        self.with_conn(|c| {
            c.query_one(
                "SELECT count(*) FROM runs WHERE state = ?1",
                p![state.as_str()],
                |r| r.get(0),
            )
        })
    }

    /// Runs in flight and nodes, for metrics: (state, tenant, agent, count,
    /// first created) of runs queued, leased or running; (state, count) of
    /// nodes.
    pub fn stats(&self) -> StoreResult<Stats> {
        self.with_conn(|c| {
            let runs = c.query_map(
                "SELECT state, tenant, agent, count(*), min(created) FROM runs
                 WHERE state IN ('queued', 'leased', 'running')
                 GROUP BY state, tenant, agent",
                p![],
                |r| {
                    let state: RunState = r.parse(0)?;
                    Ok((state.as_str(), r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                },
            )?;
            let nodes = c.query_map(
                "SELECT state, count(*) FROM nodes GROUP BY state",
                p![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Stats { runs, nodes })
        })
    }

    /// Whether the store answers.
    pub fn ping(&self) -> StoreResult<()> {
        self.with_conn(|c| {
            c.query_one("SELECT CAST(1 AS BIGINT)", p![], |r| r.get::<i64>(0))
                .map(|_| ())
        })
    }

    /// Cancels a run of `tenant` (any, for `None`): at once when queued;
    /// through the node (Renew) when leased or running. Returns the run, or
    /// `None` if unknown.
    pub fn cancel(&self, tenant: Option<&str>, id: &str) -> StoreResult<Option<Run>> {
        let now = now_ms();
        if self.get_run(tenant, id)?.is_none() {
            return Ok(None);
        }
        self.with_tx(|tx| {
            tx.execute(
                "UPDATE runs SET state = 'cancelled', updated = ?2, error_kind = ?3,
                        error_message = 'cancelled before it started'
                 WHERE id = ?1 AND state = 'queued'",
                p![
                    id,
                    now,
                    pb::FailureKind::from(FailureKind::Cancelled) as i64
                ],
            )?;
            tx.execute(
                "UPDATE runs SET cancel_requested = 1, updated = ?2
                 WHERE id = ?1 AND state IN ('leased', 'running')",
                p![id, now],
            )?;
            tx.notify()
        })?;
        self.get_run(tenant, id)
    }
}

/// What [`Store::stats`] reads.
#[derive(Debug, Default)]
pub struct Stats {
    /// (state, tenant, agent, runs, oldest `created`) of runs queued,
    /// leased or running.
    pub runs: Vec<(&'static str, String, String, u64, i64)>,
    /// (state, nodes).
    pub nodes: Vec<(String, u64)>,
}
