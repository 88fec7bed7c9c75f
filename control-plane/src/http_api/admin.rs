//! An agent by name, the audit log and quotas: each one gRPC method, as in
//! [`super::routes`].

use super::openapi::Problems;
use super::problem::ApiError;
use super::{authorize, invoke, query};
use crate::ControlPlane;
use crate::auth::Caller;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use http::{HeaderMap, Uri};
use serde::Deserialize;
use utoipa::IntoParams;
use warden_api as api;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_server::AuthService;
use warden_proto::v1::registry_service_server::RegistryService;

/// Most versions `GET /v1/agents/{name}` answers with (the newest).
const MAX_VERSIONS: usize = 1000;

/// The tenant a query names, else the caller's own.
fn named_or_own(named: Option<String>, caller: &Caller) -> String {
    match (named, caller) {
        (Some(tenant), _) => tenant,
        (None, Caller::Client(client)) => client.tenant.clone(),
        (None, _) => String::new(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantQuery {
    /// Another tenant's (system role).
    tenant: Option<String>,
}

/// An agent with its versions, newest first, at most 1,000
/// (`RegistryService.List` by name).
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "the agent's name"), TenantQuery),
    responses((status = 200, description = "the agent and its versions", body = api::Agent), Problems))]
pub(super) async fn get_agent(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<api::Agent>, ApiError> {
    let caller = authorize(&cp, method!("RegistryService", "List"), &headers)?;
    let q: TenantQuery = query(&uri)?;
    let Path(name) = path?;
    warden_core::check_name("agent name", &name)
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    // One tenant's agent: the token's own unless another is named (a
    // system token's list would span every tenant).
    let tenant = named_or_own(q.tenant, &caller);
    let mut versions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListComponentsRequest {
            tenant: tenant.clone(),
            name: name.clone(),
            limit: 0,
            page_token,
        };
        let page = invoke(&cp, &caller, request, |cp, r| async move {
            RegistryService::list(&cp, r).await
        })
        .await?;
        versions.extend(page.components.iter().map(api::AgentVersion::from));
        page_token = page.next_page_token;
        if page_token.is_empty() || versions.len() >= MAX_VERSIONS {
            break;
        }
    }
    // Newest first.
    versions
        .sort_by(|a, b| (b.published_unix_ms, &b.version).cmp(&(a.published_unix_ms, &a.version)));
    versions.truncate(MAX_VERSIONS);
    if versions.is_empty() {
        return Err(crate::service::agent_not_found(&tenant, &name, "", false).into());
    }
    Ok(Json(api::Agent {
        tenant,
        name,
        versions,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// The newest this many entries (default 100, at most 1,000).
    limit: Option<u32>,
}

/// The newest audit entries of the token's tenant (every tenant's for the
/// system role), oldest first (`AuthService.ListAudit`; admin role).
#[utoipa::path(get, path = "/v1/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "audit entries", body = api::AuditLog), Problems))]
pub(super) async fn audit(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<api::AuditLog>, ApiError> {
    let caller = authorize(&cp, method!("AuthService", "ListAudit"), &headers)?;
    let q: AuditQuery = query(&uri)?;
    let request = pb::ListAuditRequest {
        limit: q.limit.unwrap_or(0),
    };
    let answer = invoke(&cp, &caller, request, |cp, r| async move {
        AuthService::list_audit(&cp, r).await
    })
    .await?;
    Ok(Json(api::AuditLog {
        entries: answer.entries.iter().map(api::AuditEntry::from).collect(),
    }))
}

/// A tenant's quotas and what it spent today (`AuthService.GetQuotas`).
#[utoipa::path(get, path = "/v1/quotas", tag = "admin", params(TenantQuery),
    responses((status = 200, description = "the quotas", body = api::Quotas), Problems))]
pub(super) async fn quotas(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<api::Quotas>, ApiError> {
    let caller = authorize(&cp, method!("AuthService", "GetQuotas"), &headers)?;
    let q: TenantQuery = query(&uri)?;
    let request = pb::GetQuotasRequest {
        tenant: q.tenant.clone().unwrap_or_default(),
    };
    let answer = invoke(&cp, &caller, request, |cp, r| async move {
        AuthService::get_quotas(&cp, r).await
    })
    .await?;
    let tenant = named_or_own(q.tenant, &caller);
    Ok(Json(api::Quotas::of(&tenant, &answer)))
}
