//! `warden bridge redis`: its flags and start-up line; the bridge itself
//! is `warden-bridge` (`bridge/`).

use crate::remote::Remote;
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden_bridge::StreamSpec;

/// Runs jobs from a queue (Redis Streams) and publishes their results.
#[derive(Debug, Args)]
pub(crate) struct BridgeArgs {
    #[command(subcommand)]
    command: BridgeCommand,
}

#[derive(Debug, Subcommand)]
enum BridgeCommand {
    /// Runs jobs from Redis Streams and publishes their results to a
    /// result stream (runs until SIGTERM or Ctrl-C).
    Redis(RedisArgs),
}

#[derive(Debug, Args)]
struct RedisArgs {
    /// The Redis server: redis://[:PASSWORD@]HOST:PORT[/DB].
    #[arg(long, env = "WARDEN_REDIS", value_name = "URL")]
    redis: String,

    /// A stream of jobs, the agent that runs them (NAME@VERSION or
    /// oci://...) and how many may be in flight at once, e.g.
    /// `jobs:manager=manager@1.0.0:2`. Repeatable.
    #[arg(long = "stream", value_name = "STREAM=AGENT:LIMIT", required = true)]
    streams: Vec<StreamSpec>,

    /// The consumer group (made on the streams if missing, from their
    /// start).
    #[arg(long, default_value = "warden")]
    group: String,

    /// This bridge's name in the group; keep it across restarts, so the
    /// bridge takes back its own unacknowledged jobs. Default: the host
    /// name.
    #[arg(long)]
    consumer: Option<String>,

    /// Where results go: one entry per job (stream, id, run_id, state,
    /// output, error_kind, error_message, attempts, usage).
    #[arg(long, default_value = "warden:results", value_name = "STREAM")]
    results: String,

    /// Where jobs that cannot be run go, with the reason.
    #[arg(long, default_value = "warden:dead-letter", value_name = "STREAM")]
    dead_letter: String,

    /// Jobs another consumer has held unacknowledged this long are claimed
    /// (its bridge died, or lost Redis that long). A bridge keeps the jobs
    /// whose runs it is waiting on from going idle (refreshing them every
    /// quarter of this), so runs may take far longer than this.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    claim_idle: Duration,

    #[command(flatten)]
    remote: Remote,
}

pub(crate) async fn bridge(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    let BridgeCommand::Redis(args) = args.command;
    let consumer = args
        .consumer
        .clone()
        .or_else(sysinfo::System::host_name)
        .unwrap_or_else(|| "bridge".into());
    let runs = Arc::new(args.remote.runs().await?);
    let options = warden_bridge::Options {
        redis: args.redis,
        streams: args.streams,
        group: args.group,
        consumer,
        results: args.results,
        dead_letter: args.dead_letter,
        claim_idle: args.claim_idle,
    };
    let said = format!(
        "warden bridge: consumer {} of group {} on {}; results to {}, dead letters to {}",
        options.consumer,
        options.group,
        options
            .streams
            .iter()
            .map(|s| format!("{} -> {} (at most {})", s.stream, s.agent, s.limit))
            .collect::<Vec<_>>()
            .join(", "),
        options.results,
        options.dead_letter
    );
    let bridge = warden_bridge::connect(options, runs).await?;
    println!("{said}");
    std::io::stdout().flush()?;
    bridge.serve(crate::cluster::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}
