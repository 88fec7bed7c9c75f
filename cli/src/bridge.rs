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

impl Bridge {
    /// Reads `spec`'s stream for ever, and keeps the jobs in flight
    /// owned, reconnecting after errors.
    async fn serve(self: Arc<Self>, spec: StreamSpec) {
        let slots = Arc::new(Semaphore::new(spec.limit));
        // Jobs being run now: a read after an error starts again from this
        // consumer's pending jobs, and XAUTOCLAIM may hand back one of its
        // own jobs; neither may start a job twice.
        let running: Running = Arc::default();
        let read = || self.clone().read(&spec, &slots, &running);
        let refresh = || self.refresh_in_flight(&spec, &running);
        tokio::join!(
            again_after_errors(&spec.stream, "reading the stream", read),
            again_after_errors(&spec.stream, "refreshing the jobs in flight", refresh),
        );
    }

    /// Every quarter of `--claim-idle`, resets the idle time of the jobs in
    /// flight ([`KEEP_OWNED`]), well before another bridge's `XAUTOCLAIM`
    /// would take them.
    async fn refresh_in_flight(&self, spec: &StreamSpec, running: &Running) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let every = (self.claim_idle / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = running
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, submitted)| **submitted)
                .map(|(id, _)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            self.keep_owned
                .key(&spec.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(&ids)
                .invoke_async::<u64>(&mut conn)
                .await?;
        }
    }

    /// Hands each job to a task while a slot is free: first this
    /// consumer's own unacknowledged jobs, then idle ones of others and
    /// new ones.
    async fn read(
        self: Arc<Self>,
        spec: &StreamSpec,
        slots: &Arc<Semaphore>,
        running: &Running,
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut own = Some("0".to_string());
        let mut claimed_at = tokio::time::Instant::now() - self.claim_idle;
        loop {
            // Wait for a free slot, then read as many jobs as are free.
            let first = slots.clone().acquire_owned().await?;
            let free = 1 + slots.available_permits();
            let jobs = if let Some(after) = &own {
                let jobs = self.read_group(&mut conn, spec, free, after, None).await?;
                own = jobs.last().map(|j| j.id.clone());
                jobs
            } else if claimed_at.elapsed() >= self.claim_idle / 2 {
                claimed_at = tokio::time::Instant::now();
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&spec.stream)
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(self.claim_idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(free)
                    .query_async(&mut conn)
                    .await?;
                if !reply.claimed.is_empty() {
                    tracing::info!(stream = %spec.stream, jobs = reply.claimed.len(), "claimed jobs another consumer left");
                }
                reply.claimed
            } else {
                self.read_group(&mut conn, spec, free, ">", Some(1000))
                    .await?
            };
            let mut permits = vec![first];
            for job in jobs {
                {
                    let mut running = running.lock().unwrap();
                    if running.contains_key(&job.id) {
                        continue;
                    }
                    running.insert(job.id.clone(), false);
                }
                let permit = match permits.pop() {
                    Some(p) => p,
                    None => slots.clone().acquire_owned().await?,
                };
                let this = self.clone();
                let spec = spec.clone();
                let running = running.clone();
                tokio::spawn(async move {
                    let _slot = permit;
                    let id = job.id.clone();
                    this.job(&spec, job, &running).await;
                    running.lock().unwrap().remove(&id);
                });
            }
        }
    }

    async fn read_group(
        &self,
        conn: &mut MultiplexedConnection,
        spec: &StreamSpec,
        count: usize,
        after: &str,
        block_ms: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&spec.stream).arg(after);
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Runs one job to its end and publishes the result (or dead-letters
    /// it), retrying what fails on the way until it is done, or until
    /// another bridge has acknowledged it.
    async fn job(&self, spec: &StreamSpec, job: StreamId, running: &Running) {
        let mut failures = 0u32;
        loop {
            match self.try_job(spec, &job, running).await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(stream = %spec.stream, id = %job.id, error = %format!("{e:#}"), "job; retrying");
                    tokio::time::sleep(warden_core::Backoff::RECONNECT.delay(failures)).await;
                    if self.acknowledged(spec, &job).await {
                        tracing::info!(stream = %spec.stream, id = %job.id, "job acknowledged meanwhile (by another bridge); dropping it");
                        return;
                    }
                }
            }
        }
    }

    /// Whether the job is no longer pending in the group (an error counts
    /// as still pending).
    async fn acknowledged(&self, spec: &StreamSpec, job: &StreamId) -> bool {
        let pending = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("XPENDING")
                .arg(&spec.stream)
                .arg(&self.group)
                .arg(&job.id)
                .arg(&job.id)
                .arg(1)
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await
        };
        pending.await.is_ok_and(|entries| entries.is_empty())
    }

    async fn try_job(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        running: &Running,
    ) -> anyhow::Result<()> {
        let input = match job_input(job) {
            Ok(input) => input,
            Err(reason) => return self.dead_letter(spec, job, &reason).await,
        };
        let mut runs = self.runs.clone();
        let submitted = runs
            .submit(pb::SubmitRequest {
                agent: spec.agent.clone(),
                input,
                idempotency_key: format!("redis:{}:{}", spec.stream, job.id),
                // What the agent's capability manifest declares.
                grant: Some(pb::Grant {
                    as_declared: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let run = match submitted {
            Ok(r) => r
                .into_inner()
                .run
                .context("the control plane answered no run")?,
            // The job itself is bad (its input): it would fail again.
            Err(e) if e.code() == tonic::Code::InvalidArgument => {
                return self.dead_letter(spec, job, e.message()).await;
            }
            // Anything else is the bridge's setup or the control plane's
            // state (unreachable, a quota, an unknown agent, a refused
            // token), not the job's: retried, with the reason logged, so a
            // mistake in --stream or --token loses no job.
            Err(e) => return Err(status(e)),
        };
        // From here on the job is kept owned while its run goes on.
        running.lock().unwrap().insert(job.id.clone(), true);
        let run = self.wait_terminal(&run.run_id).await?;
        self.publish(spec, job, &run).await
    }

    async fn wait_terminal(&self, run_id: &str) -> anyhow::Result<pb::Run> {
        let mut runs = self.runs.clone();
        let mut pause = Duration::from_millis(20);
        loop {
            let run = runs
                .get(pb::GetRunRequest {
                    run_id: run_id.into(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let terminal = warden_core::RunState::from_proto(run.run_state)
                .is_some_and(warden_core::RunState::is_terminal);
            if terminal {
                return Ok(run);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Acknowledges the job and adds the run's result to the result stream
    /// ([`ACK_THEN_ADD`]).
    async fn publish(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        run: &pb::Run,
    ) -> anyhow::Result<()> {
        let state = warden_core::RunState::from_proto(run.run_state)
            .map_or("unknown", warden_core::RunState::as_str);
        let kind = warden_core::FailureKind::from_proto(run.error_kind)
            .map_or("", warden_core::FailureKind::as_str);
        let usage = run
            .usage
            .as_ref()
            .map(|u| {
                serde_json::json!({
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "cost_usd": u.cost_usd,
                    "fuel_used": u.fuel_used,
                    "wall_time_ms": u.wall_time_ms,
                })
                .to_string()
            })
            .unwrap_or_else(|| "{}".into());
        let fields: [(&str, &str); 9] = [
            ("stream", &spec.stream),
            ("id", &job.id),
            ("run_id", &run.run_id),
            ("state", state),
            ("output", &run.output),
            ("error_kind", kind),
            ("error_message", &run.error_message),
            ("attempts", &run.attempt.to_string()),
            ("usage", &usage),
        ];
        self.publish_once(spec, job, &self.results, &fields).await
    }

    async fn dead_letter(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(stream = %spec.stream, id = %job.id, %reason, "job dead-lettered");
        let raw = serde_json::to_string(
            &job.map
                .iter()
                .map(|(k, v)| (k.clone(), field_text(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )?;
        let fields: [(&str, &str); 4] = [
            ("stream", &spec.stream),
            ("id", &job.id),
            ("reason", reason),
            ("fields", &raw),
        ];
        self.publish_once(spec, job, &self.dead_letter, &fields)
            .await
    }

    async fn publish_once(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        to: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let mut call = self.ack_then_add.key(&spec.stream);
        call.key(to).arg(&self.group).arg(&job.id);
        for (field, value) in fields {
            call.arg(field).arg(value);
        }
        let added: u8 = call.invoke_async(&mut conn).await?;
        if added == 0 {
            // Another bridge took the job (this one lost Redis, or could
            // not submit, for --claim-idle) and published it first.
            tracing::info!(stream = %spec.stream, id = %job.id, "job already acknowledged (by another bridge); not published again");
        }
        Ok(())
    }
}

/// A field as text (binary-safe: bytes that are not UTF-8 are replaced).
fn field_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The job's `input` (JSON text), or why it cannot be run.
fn job_input(job: &StreamId) -> Result<String, String> {
    let value = job
        .map
        .get("input")
        .ok_or_else(|| "the job has no `input` field".to_string())?;
    let redis::Value::BulkString(bytes) = value else {
        return Err("the job's `input` field is not a string".into());
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| "the job's `input` is not UTF-8".to_string())?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| format!("the job's `input` is not JSON: {e}"))?;
    Ok(text)
}
