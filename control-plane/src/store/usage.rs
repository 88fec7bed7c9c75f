//! Usage per tenant, agent and (UTC) day (`usage_by_agent`): every
//! recorded result adds its attempt's usage (runs, tokens, cost, fuel,
//! wall time), summed per batch of results and written in one statement
//! (on PostgreSQL, the same statement that records the results).

use super::sql::{MAX_VALUES, Param, p, values};
use super::{Store, StoreResult};
use std::collections::HashMap;
use warden_proto::v1::Usage;

/// One tenant's agent on one day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentUsage {
    pub tenant: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// The agent's name, without its version.
    pub agent: String,
    /// Attempts recorded (each ran to a result).
    pub attempts: u64,
    /// Of those, the ones that succeeded.
    pub succeeded: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub fuel: u64,
    pub wall_ms: f64,
}

/// Usage of a batch of results, by (tenant, agent).
#[derive(Default)]
pub(super) struct Daily {
    sums: HashMap<(String, String), AgentUsage>,
}

impl Daily {
    /// Adds one recorded attempt of `agent` (NAME@VERSION) of `tenant`.
    pub(super) fn add(&mut self, tenant: &str, agent: &str, usage: &Usage, succeeded: bool) {
        let name = warden_core::name_and_version(agent).0;
        let sum = self
            .sums
            .entry((tenant.to_string(), name.to_string()))
            .or_default();
        sum.attempts += 1;
        sum.succeeded += u64::from(succeeded);
        sum.prompt_tokens = sum.prompt_tokens.saturating_add(usage.prompt_tokens);
        sum.completion_tokens = sum
            .completion_tokens
            .saturating_add(usage.completion_tokens);
        // A node reports what its meter counted; a nonsense figure adds
        // nothing.
        let finite = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        sum.cost_usd += finite(usage.cost_usd);
        sum.wall_ms += finite(usage.wall_time_ms);
        sum.fuel = sum.fuel.saturating_add(usage.fuel_used.unwrap_or(0));
    }

    /// The sums as rows to add to `now`'s day.
    pub(super) fn into_rows(self, now: i64) -> DailyRows {
        let clamp = |n: u64| n.min(i64::MAX as u64) as i64;
        let rows = self
            .sums
            .into_iter()
            .map(|((tenant, agent), u)| {
                (
                    tenant,
                    agent,
                    [
                        clamp(u.attempts),
                        clamp(u.succeeded),
                        clamp(u.prompt_tokens),
                        clamp(u.completion_tokens),
                        clamp(u.fuel),
                    ],
                    [u.cost_usd, u.wall_ms],
                )
            })
            .collect();
        DailyRows {
            day: warden_core::utc_day(now),
            rows,
        }
    }
}

/// Usage sums of a batch of results: (tenant, agent, [attempts, succeeded,
/// prompt tokens, completion tokens, fuel], [cost, wall ms]) on `day`.
pub(super) struct DailyRows {
    day: i64,
    rows: Vec<(String, String, [i64; 5], [f64; 2])>,
}

impl DailyRows {
    /// The statements that add the sums to their day's rows.
    pub(super) fn statements(&self) -> Vec<(String, Vec<&dyn Param>)> {
        // Integer sums stop at i64::MAX rather than overflow.
        let sum = |c: &str| {
            format!(
                "{c} = CASE WHEN u.{c} > 9223372036854775807 - excluded.{c}
                            THEN 9223372036854775807 ELSE u.{c} + excluded.{c} END"
            )
        };
        let mut out = Vec::new();
        for chunk in self.rows.chunks(MAX_VALUES) {
            let list_rows: Vec<Vec<&dyn Param>> = chunk
                .iter()
                .map(|(tenant, agent, n, x)| {
                    vec![
                        tenant as &dyn Param,
                        agent,
                        &n[0],
                        &n[1],
                        &n[2],
                        &n[3],
                        &n[4],
                        &x[0],
                        &x[1],
                    ]
                })
                .collect();
            let mut params: Vec<&dyn Param> = vec![&self.day];
            let list = values(
                &[
                    "TEXT",
                    "TEXT",
                    "BIGINT",
                    "BIGINT",
                    "BIGINT",
                    "BIGINT",
                    "BIGINT",
                    "DOUBLE PRECISION",
                    "DOUBLE PRECISION",
                ],
                &list_rows,
                &mut params,
            );
            let sql = format!(
                "INSERT INTO usage_by_agent AS u (tenant, day, agent, attempts, succeeded,
                     prompt_tokens, completion_tokens, fuel, cost_usd, wall_ms)
                 SELECT l.column1, CAST(?1 AS BIGINT), l.column2, l.column3, l.column4,
                        l.column5, l.column6, l.column7, l.column8, l.column9
                 FROM {list} AS l WHERE l.column1 IS NOT NULL
                 ON CONFLICT (tenant, day, agent) DO UPDATE SET {}, {}, {}, {}, {},
                     cost_usd = u.cost_usd + excluded.cost_usd,
                     wall_ms = u.wall_ms + excluded.wall_ms",
                sum("attempts"),
                sum("succeeded"),
                sum("prompt_tokens"),
                sum("completion_tokens"),
                sum("fuel"),
            );
            out.push((sql, params));
        }
        out
    }
}

impl Store {
    /// Usage from day `since_day` on, of `tenant` (every tenant's if
    /// `None`), of `agent` (every agent's if `None`), by day, tenant and
    /// agent; at most 10,000 rows.
    pub fn usage(
        &self,
        tenant: Option<&str>,
        agent: Option<&str>,
        since_day: i64,
    ) -> StoreResult<Vec<AgentUsage>> {
        self.with_conn(|c| {
            c.query_map(
                "SELECT tenant, day, agent, attempts, succeeded, prompt_tokens,
                        completion_tokens, cost_usd, fuel, wall_ms
                 FROM usage_by_agent
                 WHERE day >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)
                   AND (CAST(?3 AS TEXT) IS NULL OR agent = ?3)
                 ORDER BY day, tenant, agent LIMIT 10000",
                p![since_day, tenant, agent],
                |r| {
                    Ok(AgentUsage {
                        tenant: r.get(0)?,
                        day: r.get(1)?,
                        agent: r.get(2)?,
                        attempts: r.get(3)?,
                        succeeded: r.get(4)?,
                        prompt_tokens: r.get(5)?,
                        completion_tokens: r.get(6)?,
                        cost_usd: r.get(7)?,
                        fuel: r.get(8)?,
                        wall_ms: r.get(9)?,
                    })
                },
            )
        })
    }
}
