//! `warden bridge redis`: takes jobs from Redis Streams and runs them.
//!
//! Each `--stream NAME=AGENT:LIMIT` is read through a consumer group
//! (`XREADGROUP`), never more than LIMIT of its jobs in flight. A job's
//! `input` field becomes a run of AGENT (granted what its capability
//! manifest declares), submitted with the idempotency key
//! `redis:STREAM:ENTRY-ID`, so a job submitted again (after a crash, or by
//! another bridge) is the same run. Once the run is terminal one script
//! ([`ACK_THEN_ADD`]) acknowledges the job and, only if that acknowledged
//! it, adds its result (state, output, error, usage) to the result stream:
//! whichever bridge gets there first publishes, any other finds the job
//! acknowledged and drops it. So a job gets one result however many
//! bridges run and however often they die (the README says exactly when it
//! does not).
//!
//! At start the bridge takes back its own unacknowledged jobs, and from
//! time to time claims those another bridge left idle (`XAUTOCLAIM`). Idle
//! means stopped: while a job's run is in flight (submitted) its bridge
//! resets the job's idle time every quarter of `--claim-idle`
//! ([`KEEP_OWNED`]), so a job being run is taken only from a bridge that
//! lost Redis for that long, and then both wait on the same run and one
//! publishes. A job not yet submitted (its bridge retrying) is not kept, so
//! a bridge that cannot submit does not hold on to it.
//!
//! A job without a usable input (none, not JSON, or refused by the control
//! plane as invalid) goes to the dead-letter stream with the reason,
//! acknowledged likewise; any other failure (control plane away, unknown
//! agent, a quota, a refused token) is retried, so no job is lost to a
//! mistake in the bridge's setup.

mod worker;

use crate::remote::{Conn, Remote, status};
use anyhow::Context;
use clap::{Args, Subcommand};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;

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
    #[arg(long = "stream", value_name = "STREAM=AGENT:LIMIT", value_parser = parse_stream, required = true)]
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

/// One `--stream`.
#[derive(Debug, Clone)]
struct StreamSpec {
    stream: String,
    agent: String,
    limit: usize,
}

fn parse_stream(text: &str) -> Result<StreamSpec, String> {
    let bad = || format!("`{text}` is not STREAM=AGENT:LIMIT (e.g. jobs:manager=manager@1.0.0:2)");
    let (stream, rest) = text.split_once('=').ok_or_else(bad)?;
    let (agent, limit) = rest.rsplit_once(':').ok_or_else(bad)?;
    let limit: usize = limit.parse().map_err(|_| bad())?;
    if stream.is_empty() || agent.is_empty() || !(1..=10_000).contains(&limit) {
        return Err(bad());
    }
    Ok(StreamSpec {
        stream: stream.into(),
        agent: agent.into(),
        limit,
    })
}

pub(crate) async fn bridge(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BridgeCommand::Redis(args) => redis_bridge(args).await,
    }
}

/// Acknowledges a job and, only if that acknowledged it (it was still
/// pending, so no bridge has published it), adds its entry to the result
/// or dead-letter stream, in one atomic step. The target's type is checked
/// first, because a script is not undone by an error halfway: an
/// acknowledgement followed by a failed `XADD` would lose the result.
///
/// KEYS: the job stream, the target stream. ARGV: the group, the job's
/// entry id, then the entry's fields and values. Answers 1 if it added the
/// entry, 0 if the job was already acknowledged.
const ACK_THEN_ADD: &str = r"
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then
  return redis.error_reply(KEYS[2] .. ' holds a ' .. kind .. ', not a stream')
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return 1
";

/// Resets the idle time of the jobs this consumer is running, so no other
/// bridge's `XAUTOCLAIM` takes them: `XCLAIM` to itself with `JUSTID` (the
/// delivery count stays). Only entries still pending for this consumer:
/// one another bridge has taken, or that is acknowledged, is left alone.
/// Nor one deleted from the stream (trimmed), which `XCLAIM` would drop
/// from the pending list and so cost its result.
///
/// KEYS: the job stream. ARGV: the group, this consumer, then entry ids.
/// Answers how many it refreshed.
const KEEP_OWNED: &str = r"
local kept = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 1
    and #redis.call('XRANGE', KEYS[1], id, id) == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    kept = kept + 1
  end
end
return kept
";

/// A stream's jobs in progress: entry id -> whether its run is submitted
/// (then the job is kept owned, [`KEEP_OWNED`]).
type Running = Arc<std::sync::Mutex<std::collections::HashMap<String, bool>>>;

/// What every stream's worker shares.
struct Bridge {
    client: redis::Client,
    group: String,
    consumer: String,
    results: String,
    dead_letter: String,
    claim_idle: Duration,
    runs: RunServiceClient<Conn>,
    ack_then_add: redis::Script,
    keep_owned: redis::Script,
}

async fn redis_bridge(args: RedisArgs) -> anyhow::Result<ExitCode> {
    let client = redis::Client::open(args.redis.as_str())
        .with_context(|| format!("--redis `{}` is not a Redis URL", args.redis))?;
    // Fail at once on an unreachable server or a bad password.
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot reach Redis at {}", args.redis))?;
    for spec in &args.streams {
        create_group(&mut conn, &spec.stream, &args.group).await?;
    }
    let consumer = args
        .consumer
        .clone()
        .or_else(sysinfo::System::host_name)
        .unwrap_or_else(|| "bridge".into());
    let bridge = Arc::new(Bridge {
        client,
        group: args.group.clone(),
        consumer: consumer.clone(),
        results: args.results.clone(),
        dead_letter: args.dead_letter.clone(),
        claim_idle: args.claim_idle,
        runs: args.remote.runs().await?,
        ack_then_add: redis::Script::new(ACK_THEN_ADD),
        keep_owned: redis::Script::new(KEEP_OWNED),
    });
    println!(
        "warden bridge: consumer {consumer} of group {} on {}; results to {}, dead letters to {}",
        args.group,
        args.streams
            .iter()
            .map(|s| format!("{} -> {} (at most {})", s.stream, s.agent, s.limit))
            .collect::<Vec<_>>()
            .join(", "),
        args.results,
        args.dead_letter
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let workers: Vec<_> = args
        .streams
        .into_iter()
        .map(|spec| tokio::spawn(bridge.clone().serve(spec)))
        .collect();
    crate::cluster::shutdown_signal().await;
    for w in workers {
        w.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `task` for ever, again 1 s after each error.
async fn again_after_errors<F>(stream: &str, what: &str, mut task: impl FnMut() -> F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    loop {
        if let Err(e) = task().await {
            tracing::warn!(stream, error = %e, "{what} failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Makes `group` on `stream` (and the stream) unless it exists.
async fn create_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> anyhow::Result<()> {
    let made: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match made {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot make group {group} on {stream}")),
    }
}
