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

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use warden_proto::v1 as pb;
use warden_proto::v1::run_service_client::RunServiceClient;

/// What a bridge does: where it reads jobs and writes results.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Redis server: redis://[:PASSWORD@]HOST:PORT[/DB].
    pub redis: String,
    /// The job streams, each with its agent and limit.
    pub streams: Vec<StreamSpec>,
    /// The consumer group (made on the streams if missing, from their
    /// start).
    pub group: String,
    /// This bridge's name in the group: kept across restarts, it takes
    /// back its own unacknowledged jobs.
    pub consumer: String,
    /// Where results go: one entry per job (stream, id, run_id, state,
    /// output, error_kind, error_message, attempts, usage).
    pub results: String,
    /// Where jobs that cannot be run go, with the reason.
    pub dead_letter: String,
    /// Jobs another consumer has held unacknowledged this long are claimed;
    /// this bridge refreshes its own in flight every quarter of it.
    pub claim_idle: Duration,
}

/// One stream of jobs: `STREAM=AGENT:LIMIT`, e.g.
/// `jobs:manager=manager@1.0.0:2`.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub stream: String,
    /// The agent that runs its jobs (NAME@VERSION or oci://...).
    pub agent: String,
    /// The most of its jobs in flight at once (1 to 10,000).
    pub limit: usize,
}

impl std::str::FromStr for StreamSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("`{text}` is not STREAM=AGENT:LIMIT (e.g. jobs:manager=manager@1.0.0:2)");
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
}

/// What a bridge asks of the control plane: submit a run, read one. A run
/// service client is one.
#[async_trait::async_trait]
pub trait Runs: Send + Sync {
    async fn submit(&self, request: pb::SubmitRequest)
    -> Result<pb::SubmitResponse, tonic::Status>;
    async fn get(&self, run_id: &str) -> Result<pb::Run, tonic::Status>;
}

#[async_trait::async_trait]
impl<T> Runs for RunServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    async fn submit(
        &self,
        request: pb::SubmitRequest,
    ) -> Result<pb::SubmitResponse, tonic::Status> {
        let mut client = self.clone();
        Ok(RunServiceClient::submit(&mut client, request)
            .await?
            .into_inner())
    }

    async fn get(&self, run_id: &str) -> Result<pb::Run, tonic::Status> {
        let request = pb::GetRunRequest {
            run_id: run_id.into(),
        };
        let mut client = self.clone();
        Ok(RunServiceClient::get(&mut client, request)
            .await?
            .into_inner())
    }
}

/// A gRPC status as an error to log.
fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("unauthenticated: {}", e.message()),
        tonic::Code::PermissionDenied => anyhow::anyhow!("permission denied: {}", e.message()),
        _ => anyhow::anyhow!("{}", e.message()),
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
    runs: Arc<dyn Runs>,
    ack_then_add: redis::Script,
    keep_owned: redis::Script,
}

/// A bridge connected to Redis, its groups made, ready to [`serve`](Self::serve).
pub struct Connected {
    bridge: Arc<Bridge>,
    streams: Vec<StreamSpec>,
}

/// Connects to `options`' Redis and makes each stream's group: fails at
/// once if Redis cannot be reached or a group cannot be made. `runs`
/// reaches the control plane.
pub async fn connect(options: Options, runs: Arc<dyn Runs>) -> anyhow::Result<Connected> {
    let client = redis::Client::open(options.redis.as_str())
        .with_context(|| format!("--redis `{}` is not a Redis URL", options.redis))?;
    // Fail at once on an unreachable server or a bad password.
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot reach Redis at {}", options.redis))?;
    for spec in &options.streams {
        create_group(&mut conn, &spec.stream, &options.group).await?;
    }
    let bridge = Arc::new(Bridge {
        client,
        group: options.group,
        consumer: options.consumer,
        results: options.results,
        dead_letter: options.dead_letter,
        claim_idle: options.claim_idle,
        runs,
        ack_then_add: redis::Script::new(ACK_THEN_ADD),
        keep_owned: redis::Script::new(KEEP_OWNED),
    });
    Ok(Connected {
        bridge,
        streams: options.streams,
    })
}

impl Connected {
    /// Runs jobs from every stream until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let workers: Vec<_> = self
            .streams
            .into_iter()
            .map(|spec| tokio::spawn(self.bridge.clone().serve(spec)))
            .collect();
        shutdown.await;
        for w in workers {
            w.abort();
        }
    }
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

#[cfg(test)]
mod tests {
    use super::StreamSpec;

    #[test]
    fn a_stream_is_stream_agent_and_limit_and_a_bad_one_is_named() {
        let spec: StreamSpec = "jobs:manager=manager@1.0.0:2".parse().unwrap();
        assert_eq!(
            (spec.stream.as_str(), spec.agent.as_str(), spec.limit),
            ("jobs:manager", "manager@1.0.0", 2)
        );
        // The agent may hold colons (an OCI reference); the limit is last.
        let oci: StreamSpec = "q=oci://reg:5000/a:1.0:3".parse().unwrap();
        assert_eq!((oci.agent.as_str(), oci.limit), ("oci://reg:5000/a:1.0", 3));
        for bad in [
            "jobs",
            "jobs=a",
            "=a:1",
            "jobs=:1",
            "jobs=a:0",
            "jobs=a:10001",
            "jobs=a:x",
        ] {
            let e = bad.parse::<StreamSpec>().unwrap_err();
            assert!(
                e.contains(&format!("`{bad}` is not STREAM=AGENT:LIMIT")),
                "{e}"
            );
        }
    }
}
