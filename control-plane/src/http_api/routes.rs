//! The routes: each names the gRPC method it is (its rule authorizes it,
//! before anything else of the request is read) and calls that method's
//! handler.

use super::openapi::Problems;
use super::problem::{ApiError, problem};
use super::{authorize, invoke, query, read_json};
use crate::ControlPlane;
use crate::auth::Caller;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use utoipa::IntoParams;
use warden_api as api;
use warden_proto::v1 as pb;
use warden_proto::v1::auth_service_server::AuthService;
use warden_proto::v1::node_service_server::NodeService;
use warden_proto::v1::registry_service_server::RegistryService;
use warden_proto::v1::run_service_server::RunService;

/// The longest `?wait=` a submit may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A waiting submit reads its run again at most this often.
const WAIT_POLL_MIN: Duration = Duration::from_millis(100);
/// Beyond a run's input, what a submit's body may hold (budget, grant,
/// labels, ...).
const SUBMIT_OVERHEAD: usize = 64 << 10;

/// The API's routes over `cp`.
pub(crate) fn router(cp: ControlPlane) -> axum::Router {
    axum::Router::new()
        .route("/", get(super::console::index))
        .route("/console/{file}", get(super::console::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(super::openapi::document))
        .route("/v1/whoami", get(whoami))
        .route("/v1/runs", post(submit).get(list_runs))
        .route("/v1/runs:batch", post(submit_batch))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/logs", get(super::streams::logs))
        .route("/v1/runs/{id}/events", get(super::streams::events))
        .route("/v1/agents", get(list_agents))
        .route(
            "/v1/agents/validate",
            post(super::uploads::validate).layer(super::uploads::body_limit(&cp)),
        )
        .route("/v1/agents/{name}", get(super::admin::get_agent))
        .route(
            "/v1/agents/{name}/versions/{version}",
            post(super::uploads::publish).layer(super::uploads::body_limit(&cp)),
        )
        .route("/v1/audit", get(super::admin::audit))
        .route("/v1/quotas", get(super::admin::quotas))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/usage", get(usage))
        .route(
            "/v1/mcp",
            post(super::mcp::post)
                .get(super::mcp::not_offered)
                .delete(super::mcp::not_offered),
        )
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such path in this API (its paths start /v1/; the console is at /)".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "unimplemented",
                "this path does not take that method".into(),
            )
        })
        .with_state(cp)
}

/// Alive.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "the process answers", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the store answers. (Why not is on the admin port's `/readyz`.)
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "not ready", body = api::Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn readyz(State(cp): State<ControlPlane>) -> Response {
    if cp.health().not_ready().await.is_empty() {
        "ready\n".into_response()
    } else {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not ready: the store does not answer".into(),
        )
    }
}

/// The token's tenant and role (`AuthService.WhoAmI`).
#[utoipa::path(get, path = "/v1/whoami", tag = "auth",
    responses((status = 200, description = "who the token is", body = api::WhoAmI), Problems))]
pub(super) async fn whoami(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
) -> Result<Json<api::WhoAmI>, ApiError> {
    let caller = authorize(&cp, method!("AuthService", "WhoAmI"), &headers)?;
    let who = invoke(&cp, &caller, pb::WhoAmIRequest {}, |cp, r| async move {
        AuthService::who_am_i(&cp, r).await
    })
    .await?;
    Ok(Json(api::WhoAmI {
        tenant: who.tenant,
        role: who.role,
        token_id: (!who.token_id.is_empty()).then_some(who.token_id),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitQuery {
    /// Wait this long (e.g. `30s`, at most 60s) for the run to end before
    /// answering.
    wait: Option<String>,
}

fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    let wait = humantime::parse_duration(text).map_err(|e| {
        tonic::Status::invalid_argument(format!("wait={text}: {e}; give a duration such as 30s"))
    })?;
    if wait > MAX_WAIT {
        return Err(tonic::Status::invalid_argument(format!(
            "wait={text} is longer than the most, {}s; poll GET /v1/runs/ID after that",
            MAX_WAIT.as_secs()
        ))
        .into());
    }
    Ok(wait)
}

/// `201 Created` with the run and where to read it.
fn created(run: &pb::Run) -> Response {
    (
        StatusCode::CREATED,
        [(http::header::LOCATION, format!("/v1/runs/{}", run.run_id))],
        Json(api::Run::full(run)),
    )
        .into_response()
}

fn is_ended(run: &pb::Run) -> bool {
    warden_core::RunState::from_wire(run.run_state, &run.state).is_some_and(|s| s.is_terminal())
}

async fn read_run(cp: &ControlPlane, caller: &Caller, id: &str) -> Result<pb::Run, ApiError> {
    let request = pb::GetRunRequest { run_id: id.into() };
    invoke(cp, caller, request, |cp, r| async move {
        RunService::get(&cp, r).await
    })
    .await
}

/// `run` once it has ended, or as it is after `limit`. The wait holds one
/// of the token's streams, as a gRPC watch would.
pub(super) async fn wait_ended(
    cp: &ControlPlane,
    caller: &Caller,
    mut run: pb::Run,
    limit: Duration,
) -> Result<pb::Run, ApiError> {
    let _slot = match caller {
        Caller::Client(client) => cp.stream_slot(client)?,
        _ => None,
    };
    let deadline = Instant::now() + limit;
    loop {
        if is_ended(&run) {
            return Ok(run);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(run);
        }
        // Woken by any change here (or, on PostgreSQL, on another
        // replica); read again at least each second all the same, and at
        // most every WAIT_POLL_MIN however busy the cluster is.
        let changed = cp.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let read_at = Instant::now();
        run = read_run(cp, caller, &run.run_id).await?;
        if !is_ended(&run) {
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), changed).await;
            tokio::time::sleep_until((read_at + WAIT_POLL_MIN).min(deadline).into()).await;
        }
    }
}

/// Start a run (`RunService.Submit`).
#[utoipa::path(post, path = "/v1/runs", tag = "runs", params(SubmitQuery), request_body = api::SubmitRun,
    responses(
        (status = 201, description = "the run, ended if it did within `wait`", body = api::Run,
            headers(("location" = String, description = "where to read the run"))),
        (status = 200, description = "a dry run's findings (`dry_run: true`): every problem, nothing started", body = api::DryRun),
        Problems,
    ))]
pub(super) async fn submit(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Submit"), &headers)?;
    let q: SubmitQuery = query(&uri)?;
    let wait = q.wait.as_deref().map(parse_wait).transpose()?;
    let limit = cp.config.max_input_bytes + SUBMIT_OVERHEAD;
    let body: api::SubmitRun = read_json(&headers, body, limit).await?;
    let answer = invoke(&cp, &caller, body.to_request(), |cp, r| async move {
        RunService::submit(&cp, r).await
    })
    .await?;
    if body.dry_run {
        return Ok(Json(api::DryRun::from(&answer)).into_response());
    }
    let run = answer
        .run
        .ok_or_else(|| tonic::Status::internal("the submit made no run"))?;
    let run = match wait {
        Some(limit) => wait_ended(&cp, &caller, run, limit).await?,
        None => run,
    };
    Ok(created(&run))
}

/// Start several runs in one transaction: all or none
/// (`RunService.SubmitBatch`).
#[utoipa::path(post, path = "/v1/runs:batch", tag = "runs", request_body = api::SubmitBatch,
    responses((status = 201, description = "the runs, in the order given", body = api::Runs), Problems))]
pub(super) async fn submit_batch(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authorize(&cp, method!("RunService", "SubmitBatch"), &headers)?;
    let body: api::SubmitBatch =
        read_json(&headers, body, warden_core::wire::MAX_MESSAGE_BYTES).await?;
    let request = pb::SubmitBatchRequest {
        runs: body.runs.iter().map(api::SubmitRun::to_request).collect(),
    };
    let answer = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::submit_batch(&cp, r).await
    })
    .await?;
    let runs = answer.runs.iter().map(api::Run::full).collect();
    Ok((StatusCode::CREATED, Json(api::Runs { runs })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListRunsQuery {
    /// Only runs in this state: queued, leased, running, succeeded,
    /// failed, cancelled, dead_lettered.
    state: Option<String>,
    /// Only runs of this agent: a name (every version) or `name@version`.
    agent: Option<String>,
    /// Only runs with this label: `key=value`; repeat it for runs with
    /// every one. (Read from the query's pairs, where it may repeat.)
    #[allow(dead_code)]
    label: Option<String>,
    /// Only runs submitted at or after this time (Unix ms).
    since_unix_ms: Option<i64>,
    /// Runs per page (default 100, at most 1,000; a page also stops at
    /// 4 MiB).
    limit: Option<u32>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The `label=KEY=VALUE` pairs of `uri`'s query (it may repeat them), and
/// the query without them.
fn split_labels(uri: &Uri) -> Result<(HashMap<String, String>, Uri), ApiError> {
    let pairs: Vec<(String, String)> = query(uri)?;
    let mut labels = HashMap::new();
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in &pairs {
        if key != "label" {
            rest.append_pair(key, value);
            continue;
        }
        let (k, v) = value.split_once('=').ok_or_else(|| {
            tonic::Status::invalid_argument(format!("label={value}: give it as key=value"))
        })?;
        labels.insert(k.to_string(), v.to_string());
    }
    let rest = format!("/?{}", rest.finish())
        .parse()
        .map_err(|_| tonic::Status::invalid_argument("the query is not valid"))?;
    Ok((labels, rest))
}

/// Runs, newest first, a page at a time; summaries (`RunService.List`).
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListRunsQuery),
    responses((status = 200, description = "a page of runs", body = api::RunPage), Problems))]
pub(super) async fn list_runs(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<api::RunPage>, ApiError> {
    let caller = authorize(&cp, method!("RunService", "List"), &headers)?;
    let (labels, rest) = split_labels(&uri)?;
    let q: ListRunsQuery = query(&rest)?;
    let request = pb::ListRunsRequest {
        state: q.state.unwrap_or_default(),
        limit: q.limit.unwrap_or(0),
        run_state: 0,
        page_token: q.cursor.unwrap_or_default(),
        agent: q.agent.unwrap_or_default(),
        labels,
        since_unix_ms: q.since_unix_ms.unwrap_or(0),
    };
    let page = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::list(&cp, r).await
    })
    .await?;
    Ok(Json(api::RunPage {
        runs: page.runs.iter().map(api::Run::summary).collect(),
        next_cursor: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// One run, whole (`RunService.Get`).
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, description = "the run", body = api::Run), Problems))]
pub(super) async fn get_run(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<api::Run>, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Get"), &headers)?;
    let Path(id) = path?;
    Ok(Json(api::Run::full(&read_run(&cp, &caller, &id).await?)))
}

/// Cancel a run (`RunService.Cancel`).
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, description = "the run, its cancel asked for", body = api::Run), Problems))]
pub(super) async fn cancel(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<api::Run>, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Cancel"), &headers)?;
    let Path(id) = path?;
    let request = pb::CancelRunRequest { run_id: id };
    let run = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::cancel(&cp, r).await
    })
    .await?;
    Ok(Json(api::Run::full(&run)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentsQuery {
    /// Another tenant's agents (system role).
    tenant: Option<String>,
    /// Only this agent's versions.
    name: Option<String>,
    /// Versions per page.
    limit: Option<u32>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

/// Published agent versions (`RegistryService.List`).
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(AgentsQuery),
    responses((status = 200, description = "a page of agent versions", body = api::AgentPage), Problems))]
pub(super) async fn list_agents(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<api::AgentPage>, ApiError> {
    let caller = authorize(&cp, method!("RegistryService", "List"), &headers)?;
    let q: AgentsQuery = query(&uri)?;
    let request = pb::ListComponentsRequest {
        tenant: q.tenant.unwrap_or_default(),
        name: q.name.unwrap_or_default(),
        limit: q.limit.unwrap_or(0),
        page_token: q.cursor.unwrap_or_default(),
    };
    let page = invoke(&cp, &caller, request, |cp, r| async move {
        RegistryService::list(&cp, r).await
    })
    .await?;
    Ok(Json(api::AgentPage {
        agents: page
            .components
            .iter()
            .map(api::AgentVersion::from)
            .collect(),
        next_cursor: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    }))
}

/// The nodes (`NodeService.ListNodes`; system role).
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    responses((status = 200, description = "every node", body = api::Nodes), Problems))]
pub(super) async fn list_nodes(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
) -> Result<Json<api::Nodes>, ApiError> {
    let caller = authorize(&cp, method!("NodeService", "ListNodes"), &headers)?;
    let answer = invoke(&cp, &caller, pb::ListNodesRequest {}, |cp, r| async move {
        NodeService::list_nodes(&cp, r).await
    })
    .await?;
    Ok(Json(api::Nodes {
        nodes: answer.nodes.iter().map(api::Node::from).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// From this day on (Unix ms; default: the last 7 days).
    since_unix_ms: Option<i64>,
    /// Only this agent (its name).
    agent: Option<String>,
    /// Another tenant's usage (system role).
    tenant: Option<String>,
}

/// Usage by day, tenant and agent (`RunService.Usage`).
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "usage rows", body = api::UsageReport), Problems))]
pub(super) async fn usage(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<api::UsageReport>, ApiError> {
    let caller = authorize(&cp, method!("RunService", "Usage"), &headers)?;
    let q: UsageQuery = query(&uri)?;
    let request = pb::UsageRequest {
        since_unix_ms: q.since_unix_ms.unwrap_or(0),
        agent: q.agent.unwrap_or_default(),
        tenant: q.tenant.unwrap_or_default(),
    };
    let answer = invoke(&cp, &caller, request, |cp, r| async move {
        RunService::usage(&cp, r).await
    })
    .await?;
    Ok(Json(api::UsageReport {
        usage: answer.usage.iter().map(api::AgentUsage::from).collect(),
    }))
}
