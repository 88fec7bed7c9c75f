//! `warden bridge redis`: takes jobs from Redis Streams and runs them.
//!
//! Each `--stream NAME=AGENT:LIMIT` is read through a consumer group
//! (`XREADGROUP`), never more than LIMIT of its jobs in flight. A job's
//! `input` field becomes a run of AGENT (granted what its capability
//! manifest declares), submitted with the idempotency key
//! `redis:STREAM:ENTRY-ID`, so a job submitted again (after a crash) is the
//! same run. Once the run is terminal its result (state, output, error,
//! usage) is added to the result stream and the job acknowledged, both in
//! one `MULTI`: a job gets exactly one result, however often the bridge
//! dies. At start the bridge takes back its own unacknowledged jobs, and
//! from time to time claims those another bridge left idle (`XAUTOCLAIM`).
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
    /// (its bridge died).
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

/// Entry ids of a stream's jobs in progress.
type Running = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// What every stream's worker shares.
struct Bridge {
    client: redis::Client,
    group: String,
    consumer: String,
    results: String,
    dead_letter: String,
    claim_idle: Duration,
    runs: RunServiceClient<Conn>,
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
    /// Reads `spec`'s stream for ever, reconnecting after errors.
    async fn serve(self: Arc<Self>, spec: StreamSpec) {
        let slots = Arc::new(Semaphore::new(spec.limit));
        // Jobs being run now: a read after an error starts again from this
        // consumer's pending jobs, and XAUTOCLAIM may hand back one of its
        // own long runs; neither may start a job twice.
        let running: Running = Arc::default();
        loop {
            if let Err(e) = self.clone().read(&spec, &slots, &running).await {
                tracing::warn!(stream = %spec.stream, error = %e, "reading the stream failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
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
                if !running.lock().unwrap().insert(job.id.clone()) {
                    continue;
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
                    this.job(&spec, job).await;
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
    /// it), retrying what fails on the way until it is done.
    async fn job(&self, spec: &StreamSpec, job: StreamId) {
        let mut failures = 0u32;
        loop {
            match self.try_job(spec, &job).await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(stream = %spec.stream, id = %job.id, error = %format!("{e:#}"), "job; retrying");
                    tokio::time::sleep(warden_core::Backoff::RECONNECT.delay(failures)).await;
                }
            }
        }
    }

    async fn try_job(&self, spec: &StreamSpec, job: &StreamId) -> anyhow::Result<()> {
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

    /// Adds the run's result to the result stream and acknowledges the
    /// job, in one transaction.
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
        self.add_and_ack(spec, job, &self.results, &fields).await
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
        self.add_and_ack(spec, job, &self.dead_letter, &fields)
            .await
    }

    async fn add_and_ack(
        &self,
        spec: &StreamSpec,
        job: &StreamId,
        to: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        redis::pipe()
            .atomic()
            .xadd(to, "*", fields)
            .ignore()
            .xack(&spec.stream, &self.group, &[&job.id])
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
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
