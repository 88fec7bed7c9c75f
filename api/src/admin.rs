//! What a tenant's admin reads (its audit log and its quotas); an agent
//! with all its versions; what a validate or a publish by upload answers.

use crate::{AgentVersion, SubmitProblem};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_proto::v1 as pb;

/// An agent: its name and every published version, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub tenant: String,
    pub name: String,
    pub versions: Vec<AgentVersion>,
}

/// One audited action: a token made, a publish, a denied request, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub unix_ms: i64,
    pub tenant: String,
    /// A token id, `node:ID` or `anonymous`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl From<&pb::AuditEntry> for AuditEntry {
    fn from(e: &pb::AuditEntry) -> Self {
        AuditEntry {
            unix_ms: e.at_unix_ms,
            tenant: e.tenant.clone(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// The newest audit entries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}

/// At most this many of a tenant's runs at once with this agent or label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConcurrencyLimit {
    /// The agent's name, or absent for a label's limit.
    pub agent: Option<String>,
    /// `key=value`, or absent for an agent's limit.
    pub label: Option<String>,
    pub max_running: u32,
}

/// A tenant's quotas (absent: no limit) and what it spent today (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quotas {
    pub tenant: String,
    pub max_running: Option<u32>,
    pub max_queued: Option<u32>,
    pub max_input_bytes: Option<u64>,
    pub max_cost_usd_per_day: Option<f64>,
    pub max_tokens_per_day: Option<u64>,
    pub limits: Vec<ConcurrencyLimit>,
    pub cost_usd_today: f64,
    pub tokens_today: u64,
}

impl Quotas {
    /// Tenant `tenant`'s quotas as the gRPC `GetQuotas` gave them.
    pub fn of(tenant: &str, q: &pb::Quotas) -> Self {
        Quotas {
            tenant: tenant.to_string(),
            max_running: q.max_running,
            max_queued: q.max_queued,
            max_input_bytes: q.max_input_bytes,
            max_cost_usd_per_day: q.max_cost_usd_per_day,
            max_tokens_per_day: q.max_tokens_per_day,
            limits: q
                .limits
                .iter()
                .map(|l| ConcurrencyLimit {
                    agent: (!l.agent.is_empty()).then(|| l.agent.clone()),
                    label: (!l.label.is_empty()).then(|| l.label.clone()),
                    max_running: l.max_running,
                })
                .collect(),
            cost_usd_today: q.cost_usd_today,
            tokens_today: q.tokens_today,
        }
    }
}

/// What `POST /v1/agents/validate` found in an uploaded component: what it
/// is, and every problem publishing it would meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    /// No problems: a publish would take it.
    pub ok: bool,
    /// `sha256:HEX` of the bytes.
    pub digest: String,
    pub size: u64,
    /// The world it was checked against.
    pub world: String,
    /// Its imports and exports (empty when it is not a component of the
    /// world).
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub problems: Vec<SubmitProblem>,
}

impl From<&pb::ValidateResponse> for Validation {
    fn from(v: &pb::ValidateResponse) -> Self {
        Validation {
            ok: v.problems.is_empty(),
            digest: v.digest.clone(),
            size: v.size,
            world: v.world.clone(),
            imports: v.imports.clone(),
            exports: v.exports.clone(),
            problems: v
                .problems
                .iter()
                .map(|p| SubmitProblem {
                    code: p.code.clone(),
                    message: p.message.clone(),
                })
                .collect(),
        }
    }
}

/// A version published by upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub size: u64,
    /// False when these bytes and manifest were already published under
    /// this name and version.
    pub created: bool,
}
