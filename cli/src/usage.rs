//! `warden usage`: what each tenant's agents used per UTC day.

use crate::output::safe;
use crate::remote::{Remote, status};
use clap::Args;
use std::process::ExitCode;
use warden_proto::v1 as pb;

/// Usage per tenant, agent and UTC day: attempts (and how many succeeded),
/// LLM tokens and cost, fuel and wall time. Every attempt that ran to a
/// result counts, failed ones too. Your own tenant's; the system role sees
/// every tenant's.
#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// From this day on: a date (2026-11-01) or a time ago (7d, 36h).
    #[arg(long, default_value = "7d", value_parser = parse_since)]
    since: i64,

    /// Only this agent (its name, without a version).
    #[arg(long)]
    agent: Option<String>,

    /// Only this tenant (system role).
    #[arg(long)]
    tenant: Option<String>,

    /// Print JSON: one object per row.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: Remote,
}

/// `--since`: the Unix ms of a date's start (UTC), or of now minus a
/// duration; at most the start of today.
fn parse_since(text: &str) -> Result<i64, String> {
    let now = warden_core::now_ms();
    if let Ok(at) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")) {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("`{text}` is before 1970"))?
            .as_millis() as i64;
        return Ok(ms.min(now));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is neither a date (2026-11-01) nor a duration (7d)"))?;
    // "7d" is today and the six days before it.
    let ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
    Ok(now
        .saturating_sub(ms)
        .saturating_add(86_400_000)
        .clamp(1, now))
}

pub(crate) async fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.remote.runs().await?;
    let rows = client
        .usage(pb::UsageRequest {
            since_unix_ms: args.since,
            agent: args.agent.unwrap_or_default(),
            tenant: args.tenant.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .usage;
    if args.json {
        for u in &rows {
            let doc = serde_json::to_value(warden_api::AgentUsage::from(u)).unwrap_or_default();
            println!("{doc}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no usage recorded in that time");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10}  {:<16}  {:<24}  {:>8}  {:>8}  {:>10}  {:>10}  {:>10}  {:>14}  {:>10}",
        "DAY",
        "TENANT",
        "AGENT",
        "ATTEMPTS",
        "OK",
        "TOKENS IN",
        "TOKENS OUT",
        "COST USD",
        "FUEL",
        "WALL S"
    );
    for u in &rows {
        println!(
            "{:<10}  {:<16}  {:<24}  {:>8}  {:>8}  {:>10}  {:>10}  {:>10.4}  {:>14}  {:>10.3}",
            u.day,
            safe(&u.tenant),
            safe(&u.agent),
            u.attempts,
            u.succeeded,
            u.prompt_tokens,
            u.completion_tokens,
            u.cost_usd,
            u.fuel,
            u.wall_time_ms / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_a_date_or_a_time_ago() {
        let day = 86_400_000;
        assert_eq!(super::parse_since("2026-11-01").unwrap() % day, 0);
        let week = super::parse_since("7d").unwrap();
        let today = warden_core::utc_day(warden_core::now_ms());
        assert_eq!(warden_core::utc_day(week), today - 6);
        assert!(super::parse_since("yesterday-ish").is_err());
    }
}
