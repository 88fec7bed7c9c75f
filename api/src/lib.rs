//! The JSON documents of Warden's HTTP API: what it answers (runs,
//! attempts, agents, nodes, usage, audit entries, problems) and what it
//! takes (a submit). Each answer is made from the gRPC message the same
//! call returns, so the two APIs say the same thing; the CLI's `--json`
//! prints these documents too.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use warden_core::{
    AttemptOutcome, BudgetRequest, FailureKind, Grant, NodeState, RunState, Usage, now_ms,
};
use warden_proto::v1 as pb;

mod admin;
mod webhook;
pub use admin::{Agent, AuditEntry, AuditLog, ConcurrencyLimit, Published, Quotas, Validation};
pub use webhook::{Webhook, WebhookDelivery};

/// Why a run or an attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunError {
    pub kind: FailureKind,
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

impl RunError {
    fn of(kind: i32, message: &str) -> Option<Self> {
        FailureKind::from_proto(kind).map(|kind| RunError {
            kind,
            message: message.to_string(),
            retryable: kind.retryable(),
        })
    }
}

/// One attempt of a run: which node, when, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub node_id: String,
    pub outcome: Option<AttemptOutcome>,
    pub started_unix_ms: i64,
    pub ended_unix_ms: i64,
    pub error: Option<RunError>,
}

impl From<&pb::Attempt> for Attempt {
    fn from(a: &pb::Attempt) -> Self {
        Attempt {
            attempt: a.attempt,
            node_id: a.node_id.clone(),
            outcome: AttemptOutcome::from_wire(a.attempt_outcome, &a.outcome),
            started_unix_ms: a.started_unix_ms,
            ended_unix_ms: a.ended_unix_ms,
            error: RunError::of(a.kind, &a.message),
        }
    }
}

/// A run. In a list it is a summary: `input`, `output` and `attempts` are
/// absent (their sizes are there); one run read by its id has them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub run_id: String,
    pub tenant: String,
    /// `name@version`.
    pub agent: String,
    /// The component's sha256 digest.
    pub digest: String,
    pub labels: BTreeMap<String, String>,
    pub state: Option<RunState>,
    /// The attempt it is on (from 1; 0 before the first).
    pub attempt: u32,
    pub max_attempts: u32,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Why it failed, once it has.
    pub error: Option<RunError>,
    pub usage: Usage,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// Whether a cancel was asked for and has not yet taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Why a queued run has not started yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Its input, as submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub input: Option<Box<RawValue>>,
    /// Its result (JSON `null` until it has one), as the agent gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<Attempt>>,
    /// The W3C trace id its spans carry, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Where its result is POSTed once it ends, and how that went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

impl Run {
    /// The whole run: input, output and attempts too.
    pub fn full(run: &pb::Run) -> Self {
        Run {
            input: Some(raw_or_null(&run.input)),
            output: Some(raw_or_null(&run.output)),
            attempts: Some(run.attempts.iter().map(Attempt::from).collect()),
            webhook: run.webhook.as_ref().map(|w| Webhook::of(w, true)),
            ..Self::summary(run)
        }
    }

    /// The run as a list shows it: no input, output or attempts.
    pub fn summary(run: &pb::Run) -> Self {
        Run {
            run_id: run.run_id.clone(),
            tenant: run.tenant.clone(),
            agent: run.agent.clone(),
            digest: run.component_digest.clone(),
            labels: run.labels.clone().into_iter().collect(),
            state: RunState::from_wire(run.run_state, &run.state),
            attempt: run.attempt,
            max_attempts: run.max_attempts,
            input_bytes: run.input_bytes,
            output_bytes: run.output_bytes,
            error: RunError::of(run.error_kind, &run.error_message),
            usage: Usage::from(run.usage),
            created_unix_ms: run.created_unix_ms,
            updated_unix_ms: run.updated_unix_ms,
            cancel_requested: run.cancel_requested,
            waiting: (!run.waiting.is_empty()).then(|| run.waiting.clone()),
            input: None,
            output: None,
            attempts: None,
            trace_id: (!run.trace_id.is_empty()).then(|| run.trace_id.clone()),
            webhook: run.webhook.as_ref().map(|w| Webhook::of(w, false)),
        }
    }
}

/// A stored JSON text as it is; empty or not JSON: `null`.
fn raw_or_null(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// A page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A run to start: `POST /v1/runs`, and each of `POST /v1/runs:batch`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// `name@version` of a published agent, `name` alone (its newest
    /// version), or an `oci://` reference.
    pub agent: String,
    /// Any JSON value (default `null`), passed to the agent as it is
    /// written.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    pub input: Option<Box<RawValue>>,
    /// What the run may spend; unset fields take the agent's manifest's,
    /// else the control plane's defaults.
    #[serde(default)]
    pub budget: BudgetRequest,
    /// What the run may use, checked against the agent's capability
    /// manifest; absent: what the manifest declares.
    #[serde(default)]
    pub grant: Option<Grant>,
    /// Only nodes with all these labels may run it.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The run's own labels (concurrency limits may be set per label).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Attempts at most (absent: the control plane's default).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// At most one run per key and tenant: a repeat answers with the
    /// first run.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// A W3C `traceparent` to put the run's spans under.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Check everything and start nothing: the answer (`200`, a
    /// [`DryRun`]) lists every problem found.
    #[serde(default)]
    pub dry_run: bool,
    /// POST the run's result here once it ends, signed (a URL on the
    /// tenant's webhook allow-list).
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// One problem a dry run found: the code a submit would fail with and its
/// message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitProblem {
    /// `not_found`, `invalid_argument`, `permission_denied`, ...
    pub code: String,
    pub message: String,
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DryRun {
    /// No problems: the submit would be taken.
    pub ok: bool,
    pub problems: Vec<SubmitProblem>,
    /// What would not refuse the submit but hold the run back (no ready
    /// node for its selector).
    pub warnings: Vec<SubmitProblem>,
}

impl From<&pb::SubmitResponse> for DryRun {
    fn from(answer: &pb::SubmitResponse) -> Self {
        let listed = |found: &[pb::SubmitProblem]| {
            found
                .iter()
                .map(|p| SubmitProblem {
                    code: p.code.clone(),
                    message: p.message.clone(),
                })
                .collect()
        };
        DryRun {
            ok: answer.problems.is_empty(),
            problems: listed(&answer.problems),
            warnings: listed(&answer.warnings),
        }
    }
}

impl SubmitRun {
    /// The gRPC request for this submit.
    pub fn to_request(&self) -> pb::SubmitRequest {
        let grant = match &self.grant {
            Some(grant) => pb::Grant::from(grant),
            None => pb::Grant {
                as_declared: true,
                ..Default::default()
            },
        };
        pb::SubmitRequest {
            agent: self.agent.clone(),
            input: self
                .input
                .as_ref()
                .map_or_else(|| "null".to_string(), |raw| raw.get().to_string()),
            budget: Some(pb::Budget::from(&self.budget)),
            grant: Some(grant),
            node_selector: self.node_selector.clone().into_iter().collect(),
            max_attempts: self.max_attempts.unwrap_or(0),
            traceparent: self.traceparent.clone().unwrap_or_default(),
            labels: self.labels.clone().into_iter().collect(),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            dry_run: self.dry_run,
            webhook_url: self.webhook_url.clone().unwrap_or_default(),
        }
    }
}

/// Several runs to start in one transaction: all or none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub runs: Vec<SubmitRun>,
}

/// Runs made by one call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Runs {
    pub runs: Vec<Run>,
}

/// One published version of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentVersion {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    /// The component's size in bytes.
    pub size: u64,
    pub published_unix_ms: i64,
    /// Its capability manifest (TOML), if it has one.
    pub manifest: Option<String>,
}

impl From<&pb::ResolveResponse> for AgentVersion {
    fn from(c: &pb::ResolveResponse) -> Self {
        AgentVersion {
            tenant: c.tenant.clone(),
            name: c.name.clone(),
            version: c.version.clone(),
            digest: c.digest.clone(),
            size: c.size,
            published_unix_ms: c.created_unix_ms,
            manifest: (!c.capabilities.is_empty()).then(|| c.capabilities.clone()),
        }
    }
}

/// A page of published agent versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentPage {
    pub agents: Vec<AgentVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An accelerator a node reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accelerator {
    pub kind: String,
    pub name: String,
    pub memory_bytes: u64,
    pub device: String,
}

/// A node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub node_id: String,
    pub hostname: String,
    pub state: Option<NodeState>,
    pub labels: BTreeMap<String, String>,
    pub active_runs: u32,
    pub free_slots: u32,
    pub slots: u32,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub disk_free_bytes: u64,
    pub accelerators: Vec<Accelerator>,
    pub os: String,
    pub arch: String,
    pub last_heartbeat_unix_ms: i64,
    /// How long ago it last heartbeat, when this was made.
    pub heartbeat_age_ms: i64,
}

impl From<&pb::NodeInfo> for Node {
    fn from(n: &pb::NodeInfo) -> Self {
        let cap = n.capacity.clone().unwrap_or_default();
        Node {
            node_id: n.node_id.clone(),
            hostname: n.hostname.clone(),
            state: NodeState::from_wire(n.node_state, &n.state),
            labels: n.labels.clone().into_iter().collect(),
            active_runs: n.active_runs,
            free_slots: n.free_slots,
            slots: cap.slots,
            cpu_cores: cap.cpu_cores,
            memory_bytes: cap.memory_bytes,
            disk_free_bytes: cap.disk_free_bytes,
            accelerators: cap
                .accelerators
                .iter()
                .map(|a| Accelerator {
                    kind: a.kind.clone(),
                    name: a.name.clone(),
                    memory_bytes: a.memory_bytes,
                    device: a.device.clone(),
                })
                .collect(),
            os: cap.os,
            arch: cap.arch,
            last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
            heartbeat_age_ms: (now_ms() - n.last_heartbeat_unix_ms).max(0),
        }
    }
}

/// What one agent of one tenant used on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentUsage {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub tenant: String,
    pub agent: String,
    pub attempts: u64,
    pub succeeded: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub fuel: u64,
    pub wall_time_ms: f64,
}

impl From<&pb::AgentUsage> for AgentUsage {
    fn from(u: &pb::AgentUsage) -> Self {
        AgentUsage {
            day: u.day.clone(),
            tenant: u.tenant.clone(),
            agent: u.agent.clone(),
            attempts: u.attempts,
            succeeded: u.succeeded,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: u.cost_usd,
            fuel: u.fuel,
            wall_time_ms: u.wall_time_ms,
        }
    }
}

/// An error answer (RFC 9457 `application/problem+json`): the HTTP status,
/// the gRPC status code the same call gives (`not_found`), and the same
/// message the CLI prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `title` and `code` say what kind it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, in words.
    pub detail: String,
    /// The gRPC status code in snake case (`invalid_argument`).
    pub code: String,
}

/// The nodes a control plane knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Nodes {
    pub nodes: Vec<Node>,
}

/// Usage by day (oldest first), tenant and agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub usage: Vec<AgentUsage>,
}

/// One line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub attempt: u32,
    /// Its place in the attempt's log, from 0.
    pub seq: u64,
    /// When the guest wrote it (the node's clock).
    pub unix_ms: i64,
    /// `log` (wasi:logging), `stdout`, `stderr`, or `warden` (a line
    /// Warden wrote: where lines were dropped).
    pub source: String,
    /// For `log` lines: trace, debug, info, warn, error, critical.
    pub level: Option<String>,
    pub context: String,
    pub message: String,
}

impl From<&pb::LogLine> for LogLine {
    fn from(line: &pb::LogLine) -> Self {
        LogLine {
            attempt: line.attempt,
            seq: line.seq,
            unix_ms: line.unix_ms,
            source: warden_core::proto::log_source_name(line.source).to_string(),
            level: (!line.level.is_empty()).then(|| line.level.clone()),
            context: line.context.clone(),
            message: line.message.clone(),
        }
    }
}

/// A run's log lines, in order (by attempt, then seq).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLines {
    pub lines: Vec<LogLine>,
}

/// Who a token is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub tenant: String,
    /// viewer, submitter, publisher, admin or system.
    pub role: String,
    /// The token's id (absent when the control plane authenticates nobody).
    pub token_id: Option<String>,
}
