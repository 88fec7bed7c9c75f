//! Quotas per tenant (runs running and queued at once, input size, LLM
//! cost and tokens per UTC day), concurrency limits per agent or run label,
//! and [`Admission`]: the rule a lease poll applies with them. `None`: no
//! limit.

use super::sql::{Tx, p};
use super::{Store, StoreResult, now_ms};
use std::collections::{BTreeMap, HashMap};
use warden_proto::v1::Usage;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quotas {
    /// Runs leased or running at once; more wait in the queue.
    pub max_running: Option<u32>,
    /// Runs queued at once; a submit past it fails `quota_exceeded`.
    pub max_queued: Option<u32>,
    /// Largest input; a submit past it fails `quota_exceeded`.
    pub max_input_bytes: Option<u64>,
    /// LLM cost per UTC day, over every attempt; once spent, submits fail
    /// `quota_exceeded` and queued runs wait for the next day.
    pub max_cost_usd_per_day: Option<f64>,
    /// LLM tokens (prompt + completion) per UTC day, likewise.
    pub max_tokens_per_day: Option<u64>,
}

/// As the audit log says it: `max_running 2, max_cost_usd_per_day 1.5`, or
/// `no quotas`.
impl std::fmt::Display for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<String> = [
            self.max_running.map(|n| format!("max_running {n}")),
            self.max_queued.map(|n| format!("max_queued {n}")),
            self.max_input_bytes.map(|n| format!("max_input_bytes {n}")),
            self.max_cost_usd_per_day
                .map(|n| format!("max_cost_usd_per_day {n}")),
            self.max_tokens_per_day
                .map(|n| format!("max_tokens_per_day {n}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.is_empty() {
            f.write_str("no quotas")
        } else {
            f.write_str(&set.join(", "))
        }
    }
}

/// What a concurrency limit counts: the runs of one agent (by name), or
/// the runs submitted with one label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Agent(String),
    Label(String, String),
}

impl Scope {
    fn stored(&self) -> String {
        match self {
            Scope::Agent(name) => format!("agent:{name}"),
            Scope::Label(k, v) => format!("label:{k}={v}"),
        }
    }

    fn parse(stored: &str) -> Option<Self> {
        if let Some(name) = stored.strip_prefix("agent:") {
            return Some(Scope::Agent(name.to_string()));
        }
        let (k, v) = stored.strip_prefix("label:")?.split_once('=')?;
        Some(Scope::Label(k.to_string(), v.to_string()))
    }

    /// Whether a run of agent `reference` with `labels` counts against it.
    fn covers(&self, reference: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Agent(name) => warden_core::name_and_version(reference).0 == name,
            Scope::Label(k, v) => labels.get(k) == Some(v),
        }
    }
}

/// At most `max_running` runs of `scope` leased or running at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: Scope,
    pub max_running: u32,
}

/// The UTC day `at_ms` falls in (days since 1970-01-01).
fn labels(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

impl Store {
    pub fn quotas(&self, tenant: &str) -> StoreResult<Quotas> {
        self.with_conn(|c| {
            Ok(c.query_opt(
                "SELECT max_running, max_queued, max_input_bytes, max_cost_usd_per_day,
                            max_tokens_per_day
                     FROM quotas WHERE tenant = ?1",
                p![tenant],
                |r| {
                    Ok(Quotas {
                        max_running: r.get(0)?,
                        max_queued: r.get(1)?,
                        max_input_bytes: r.get(2)?,
                        max_cost_usd_per_day: r.get(3)?,
                        max_tokens_per_day: r.get(4)?,
                    })
                },
            )?
            .unwrap_or_default())
        })
    }

    pub fn set_quotas(&self, tenant: &str, q: &Quotas) -> StoreResult<()> {
        let big = |n: Option<u64>| n.map(|n| n.min(i64::MAX as u64) as i64);
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO quotas (tenant, max_running, max_queued, max_input_bytes,
                                     max_cost_usd_per_day, max_tokens_per_day)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant) DO UPDATE SET max_running = excluded.max_running,
                     max_queued = excluded.max_queued, max_input_bytes = excluded.max_input_bytes,
                     max_cost_usd_per_day = excluded.max_cost_usd_per_day,
                     max_tokens_per_day = excluded.max_tokens_per_day",
                p![
                    tenant,
                    q.max_running.map(i64::from),
                    q.max_queued.map(i64::from),
                    big(q.max_input_bytes),
                    q.max_cost_usd_per_day,
                    big(q.max_tokens_per_day),
                ],
            )?;
            tx.notify()
        })
    }

    /// `tenant`'s concurrency limits, agents first, then labels.
    pub fn limits(&self, tenant: &str) -> StoreResult<Vec<Limit>> {
        self.with_conn(|c| {
            let mut limits: Vec<Limit> = c
                .query_map(
                    "SELECT scope, max_running FROM concurrency_limits WHERE tenant = ?1",
                    p![tenant],
                    |r| Ok((r.get::<String>(0)?, r.get(1)?)),
                )?
                .into_iter()
                .filter_map(|(scope, max_running)| {
                    Scope::parse(&scope).map(|scope| Limit { scope, max_running })
                })
                .collect();
            limits.sort_by(|a, b| a.scope.cmp(&b.scope));
            Ok(limits)
        })
    }

    /// Sets `tenant`'s limit for `scope`, or removes it (`None`).
    pub fn set_limit(
        &self,
        tenant: &str,
        scope: &Scope,
        max_running: Option<u32>,
    ) -> StoreResult<()> {
        self.with_tx(|tx| {
            match max_running {
                Some(max) => tx.execute(
                    "INSERT INTO concurrency_limits (tenant, scope, max_running) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant, scope) DO UPDATE SET max_running = excluded.max_running",
                    p![tenant, scope.stored(), i64::from(max)],
                )?,
                None => tx.execute(
                    "DELETE FROM concurrency_limits WHERE tenant = ?1 AND scope = ?2",
                    p![tenant, scope.stored()],
                )?,
            };
            tx.notify()
        })
    }

    /// What `tenant`'s runs spent on LLM calls today (UTC): cost, tokens.
    pub fn spent_today(&self, tenant: &str) -> StoreResult<(f64, u64)> {
        self.with_conn(|c| {
            Ok(c.query_opt(
                "SELECT cost_usd, tokens FROM usage_daily WHERE tenant = ?1 AND day = ?2",
                p![tenant, warden_core::utc_day(now_ms())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0.0, 0)))
        })
    }

    /// How many runs of `tenant` are queued.
    pub fn queued_runs(&self, tenant: &str) -> StoreResult<u64> {
        self.with_conn(|c| {
            c.query_one(
                "SELECT count(*) FROM runs WHERE tenant = ?1 AND state = 'queued'",
                p![tenant],
                |r| r.get(0),
            )
        })
    }
}

/// Adds what an attempt of run `run_id` spent to its tenant's day.
pub(super) fn add_spend(tx: &mut Tx<'_>, run_id: &str, usage: &Usage, now: i64) -> StoreResult<()> {
    let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
    // A node reports what its meter counted; a nonsense figure adds nothing.
    let cost = if usage.cost_usd.is_finite() && usage.cost_usd > 0.0 {
        usage.cost_usd
    } else {
        0.0
    };
    if tokens == 0 && cost == 0.0 {
        return Ok(());
    }
    // Tokens stop at i64::MAX rather than overflow.
    tx.execute(
        "INSERT INTO usage_daily AS u (tenant, day, cost_usd, tokens)
         SELECT tenant, CAST(?2 AS BIGINT), CAST(?3 AS DOUBLE PRECISION), CAST(?4 AS BIGINT)
         FROM runs WHERE id = ?1
         ON CONFLICT (tenant, day) DO UPDATE SET cost_usd = u.cost_usd + excluded.cost_usd,
             tokens = CASE WHEN u.tokens > 9223372036854775807 - excluded.tokens
                           THEN 9223372036854775807 ELSE u.tokens + excluded.tokens END",
        p![
            run_id,
            warden_core::utc_day(now),
            cost,
            tokens.min(i64::MAX as u64) as i64
        ],
    )?;
    Ok(())
}

/// One tenant's room in a lease poll.
#[derive(Debug, Default)]
struct Room {
    /// Runs leased or running now.
    running: i64,
    /// How many more may start under max_running.
    left: Option<i64>,
    /// Each concurrency limit, how many more runs it lets start, and its
    /// maximum.
    limits: Vec<(Scope, i64, i64)>,
    /// Daily budget left, where a daily quota is set.
    cost_left: Option<f64>,
    tokens_left: Option<u64>,
}

impl Room {
    fn spent(&self) -> bool {
        self.cost_left.is_some_and(|c| c <= 0.0) || self.tokens_left == Some(0)
    }
}

/// Which runs a lease poll may start, by each tenant's quotas and
/// concurrency limits, read once per poll inside its transaction.
#[derive(Debug, Default)]
pub(super) struct Admission {
    tenants: HashMap<String, Room>,
}

impl Admission {
    pub(super) fn load(tx: &mut Tx<'_>, now: i64) -> StoreResult<Self> {
        let mut tenants: HashMap<String, Room> = HashMap::new();
        let running = tx.query_map(
            "SELECT tenant, count(*) FROM runs WHERE state IN ('leased', 'running')
             GROUP BY tenant",
            p![],
            |r| Ok((r.get::<String>(0)?, r.get(1)?)),
        )?;
        for (tenant, running) in running {
            tenants.entry(tenant).or_default().running = running;
        }
        let rows = tx.query_map(
            "SELECT q.tenant, q.max_running, q.max_cost_usd_per_day, q.max_tokens_per_day,
                    u.cost_usd, u.tokens
             FROM quotas q LEFT JOIN usage_daily u ON u.tenant = q.tenant AND u.day = ?1",
            p![warden_core::utc_day(now)],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<Option<i64>>(1)?,
                    r.get::<Option<f64>>(2)?,
                    r.get::<Option<i64>>(3)?,
                    r.get::<Option<f64>>(4)?.unwrap_or(0.0),
                    r.get::<Option<i64>>(5)?.unwrap_or(0),
                ))
            },
        )?;
        for (tenant, max_running, max_cost, max_tokens, cost, tokens) in rows {
            let room = tenants.entry(tenant).or_default();
            room.left = max_running.map(|max| max - room.running);
            room.cost_left = max_cost.map(|max| max - cost);
            room.tokens_left = max_tokens.map(|max| max.saturating_sub(tokens).max(0) as u64);
        }
        let rows = tx.query_map(
            "SELECT tenant, scope, max_running FROM concurrency_limits",
            p![],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)),
        )?;
        for (tenant, scope, max) in rows {
            if let Some(scope) = Scope::parse(&scope) {
                tenants
                    .entry(tenant)
                    .or_default()
                    .limits
                    .push((scope, max, max));
            }
        }
        // Count each tenant's runs in flight against its limits.
        for (tenant, room) in tenants.iter_mut().filter(|(_, r)| !r.limits.is_empty()) {
            let limits = &mut room.limits;
            tx.query_while(
                "SELECT agent, labels FROM runs WHERE state IN ('leased', 'running') AND tenant = ?1",
                p![tenant.as_str()],
                |r| {
                    let agent: String = r.get(0)?;
                    let run_labels = labels(&r.get::<String>(1)?);
                    for (scope, left, _) in limits.iter_mut() {
                        if scope.covers(&agent, &run_labels) {
                            *left -= 1;
                        }
                    }
                    Ok(true)
                },
            )?;
        }
        Ok(Admission { tenants })
    }

    /// Runs of `tenant` leased or running when the poll began.
    pub(super) fn running(&self, tenant: &str) -> i64 {
        self.tenants.get(tenant).map_or(0, |r| r.running)
    }

    /// Whether no run of `tenant` may start now (at max_running, or today's
    /// budget spent).
    pub(super) fn closed(&self, tenant: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|r| r.left.is_some_and(|l| l <= 0) || r.spent())
    }

    /// Whether a run of `tenant`, agent `reference`, with `labels_json`
    /// may start now; if so, counts it.
    pub(super) fn admit(&mut self, tenant: &str, reference: &str, labels_json: &str) -> bool {
        let Some(room) = self.tenants.get_mut(tenant) else {
            return true;
        };
        if room.left.is_some_and(|l| l <= 0) || room.spent() {
            return false;
        }
        if !room.limits.is_empty() {
            let run_labels = labels(labels_json);
            let covering: Vec<_> = room
                .limits
                .iter_mut()
                .filter(|(scope, _, _)| scope.covers(reference, &run_labels))
                .collect();
            if covering.iter().any(|(_, left, _)| *left <= 0) {
                return false;
            }
            for (_, left, _) in covering {
                *left -= 1;
            }
        }
        if let Some(left) = &mut room.left {
            *left -= 1;
        }
        true
    }

    /// Why a run of `tenant`, agent `reference`, with `labels_json` may not
    /// start now, if its tenant's max_running, daily budget or a
    /// concurrency limit holds it back (counting nothing).
    pub(super) fn holds(&self, tenant: &str, reference: &str, labels_json: &str) -> Option<String> {
        let room = self.tenants.get(tenant)?;
        if let Some(left) = room.left
            && left <= 0
        {
            return Some(format!(
                "tenant {tenant} is at its max_running ({} running, at most {})",
                room.running,
                room.running + left
            ));
        }
        if room.cost_left.is_some_and(|c| c <= 0.0) {
            return Some(format!(
                "tenant {tenant} has spent today's max_cost_usd_per_day: runs wait for the next UTC day"
            ));
        }
        if room.tokens_left == Some(0) {
            return Some(format!(
                "tenant {tenant} has spent today's max_tokens_per_day: runs wait for the next UTC day"
            ));
        }
        let run_labels = labels(labels_json);
        let (scope, left, max) = room
            .limits
            .iter()
            .find(|(scope, left, _)| *left <= 0 && scope.covers(reference, &run_labels))?;
        let running = max - left;
        Some(match scope {
            Scope::Agent(name) => {
                format!(
                    "agent {name} is at its concurrency limit ({running} running, at most {max})"
                )
            }
            Scope::Label(k, v) => format!(
                "runs labelled {k}={v} are at their concurrency limit ({running} running, at most {max})"
            ),
        })
    }
}
