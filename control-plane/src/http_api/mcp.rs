//! A tenant's published agents as tools for Model Context Protocol clients
//! (an IDE, a desktop assistant, another agent framework): `POST /v1/mcp`
//! speaks MCP's streamable HTTP transport, statelessly (JSON-RPC 2.0, one
//! message per request, answered as JSON). `tools/list` lists the newest
//! version of each agent the token's tenant has (`RegistryService.List`),
//! described by its manifest's `[tool]`; `tools/call` submits a run of it
//! with the arguments as input (`RunService.Submit`, the grant its
//! manifest declares), waits up to 60 s, and answers its output, or its
//! failure as a tool error.

use super::problem::ApiError;
use super::routes::wait_ended;
use super::{authorize, invoke, read_json};
use crate::ControlPlane;
use crate::auth::Caller;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use warden_proto::v1 as pb;
use warden_proto::v1::registry_service_server::RegistryService;
use warden_proto::v1::run_service_server::RunService;

/// Protocol versions this server speaks, oldest first: those of the
/// streamable HTTP transport without JSON-RPC batches.
const VERSIONS: &[&str] = &["2025-06-18", "2025-11-25"];
/// How long `tools/call` waits for its run.
const CALL_WAIT: Duration = Duration::from_secs(60);
/// Most agent versions `tools/list` reads.
const MAX_VERSIONS: usize = 10_000;

/// A JSON-RPC error answer.
fn rpc_error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message.into() } })
}

/// A JSON-RPC answer (errors too are `200 OK` at the HTTP level).
fn answer(message: Value) -> Response {
    axum::Json(message).into_response()
}

/// `GET` and `DELETE /v1/mcp`: this server opens no stream of its own and
/// keeps no session, as the transport allows.
pub(super) async fn not_offered() -> Response {
    let mut response = super::problem::problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "unimplemented",
        "this MCP server keeps no session and sends nothing unasked: POST each message".into(),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
    response
}

/// Model Context Protocol (streamable HTTP, stateless): one JSON-RPC 2.0
/// message (`initialize`, `ping`, `tools/list`, `tools/call`); the tools
/// are the tenant's agents.
#[utoipa::path(post, path = "/v1/mcp", tag = "mcp",
    request_body(content = Value, description = "one JSON-RPC 2.0 message", content_type = "application/json"),
    responses(
        (status = 200, description = "the JSON-RPC answer", body = Value),
        (status = 202, description = "a notification, taken"),
        super::openapi::Problems,
    ))]
pub(super) async fn post(
    State(cp): State<ControlPlane>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Every MCP method reads the tenant's agents at least.
    let reader = authorize(&cp, method!("RegistryService", "List"), &headers)?;
    let limit = cp.config.max_input_bytes + (64 << 10);
    let message: Value = read_json(&headers, body, limit).await?;
    let Some(fields) = message.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "send one JSON-RPC message (an object); batches are not taken".into(),
        ));
    };
    let Some(method) = fields.get("method").and_then(Value::as_str) else {
        // A response to a request of ours: this server sends none.
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    let Some(id) = fields.get("id").cloned() else {
        // A notification (initialized, cancelled): nothing to answer.
        return Ok(StatusCode::ACCEPTED.into_response());
    };
    if !(id.is_string() || id.is_number()) {
        return Ok(answer(rpc_error(
            &Value::Null,
            -32600,
            "a request's id is a string or a number",
        )));
    }
    let params = fields.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => Ok(initialize(&params)),
        "ping" => Ok(json!({})),
        "tools/list" => list_tools(&cp, &reader)
            .await
            .map(|tools| json!({ "tools": tools })),
        // A call is a submit: refused in MCP's words (a JSON-RPC error)
        // if the token may not submit.
        "tools/call" => match authorize(&cp, method!("RunService", "Submit"), &headers) {
            Ok(submitter) => call_tool(&cp, &reader, &submitter, &params).await,
            Err(denied) => Err((-32000, denied.document().detail)),
        },
        other => Err((-32601, format!("this server has no method {other}"))),
    };
    Ok(answer(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => rpc_error(&id, code, message),
    }))
}

fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| VERSIONS.contains(v))
        .unwrap_or(VERSIONS[VERSIONS.len() - 1]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "warden", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "Each tool is a Warden agent of your tenant; a call runs it in a sandbox under its manifest's grant and budget and your token's quotas.",
    })
}

/// The newest published version of each of the caller's agents (one
/// agent's if `name` is given).
async fn newest_versions(
    cp: &ControlPlane,
    caller: &Caller,
    name: &str,
) -> Result<BTreeMap<String, pb::ResolveResponse>, ApiError> {
    // The caller's own tenant, also for the system role (which would
    // otherwise list every tenant's).
    let tenant = match caller {
        Caller::Client(client) => client.tenant.clone(),
        _ => String::new(),
    };
    let mut newest: BTreeMap<String, pb::ResolveResponse> = BTreeMap::new();
    let (mut page_token, mut read) = (String::new(), 0);
    loop {
        let request = pb::ListComponentsRequest {
            tenant: tenant.clone(),
            name: name.to_string(),
            limit: 1000,
            page_token,
        };
        let page = invoke(cp, caller, request, |cp, r| async move {
            RegistryService::list(&cp, r).await
        })
        .await?;
        read += page.components.len();
        for version in page.components {
            match newest.get(&version.name) {
                Some(have) if have.created_unix_ms >= version.created_unix_ms => {}
                _ => {
                    newest.insert(version.name.clone(), version);
                }
            }
        }
        page_token = page.next_page_token;
        if page_token.is_empty() || read >= MAX_VERSIONS {
            return Ok(newest);
        }
    }
}

/// An agent version as an MCP tool.
fn tool(version: &pb::ResolveResponse) -> Value {
    let spec = warden_core::Manifest::parse(&version.capabilities)
        .map(|m| m.tool)
        .unwrap_or_default();
    let mut tool = json!({
        "name": version.name,
        "title": format!("{}@{}", version.name, version.version),
        "description": spec.description.clone().unwrap_or_else(|| format!(
            "Runs the Warden agent {}@{} with the arguments as its JSON input; answers its output.",
            version.name, version.version
        )),
        "inputSchema": spec.input().unwrap_or_else(|| json!({ "type": "object" })),
    });
    if let Some(output) = spec.output() {
        tool["outputSchema"] = output;
    }
    tool
}

async fn list_tools(cp: &ControlPlane, caller: &Caller) -> Result<Vec<Value>, (i64, String)> {
    let newest = newest_versions(cp, caller, "")
        .await
        .map_err(|e| (-32603, e.document().detail))?;
    Ok(newest.values().map(tool).collect())
}

/// A tool's answer: text content, and the output itself when it is an
/// object.
fn tool_result(text: String, structured: Option<Value>, is_error: bool) -> Value {
    let mut result = json!({ "content": [{ "type": "text", "text": text }], "isError": is_error });
    if let Some(value) = structured.filter(Value::is_object) {
        result["structuredContent"] = value;
    }
    result
}

async fn call_tool(
    cp: &ControlPlane,
    reader: &Caller,
    submitter: &Caller,
    params: &Value,
) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((-32602, "tools/call needs the tool's name".into()));
    };
    let arguments = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !arguments.is_object() {
        return Err((-32602, "a tool's arguments are an object".into()));
    }
    let unknown = || (-32602, format!("no tool named {name}"));
    if warden_core::check_name("tool", name).is_err() {
        return Err(unknown());
    }
    let newest = newest_versions(cp, reader, name)
        .await
        .map_err(|e| (-32603, e.document().detail))?;
    let Some(version) = newest.get(name) else {
        return Err(unknown());
    };
    let request = pb::SubmitRequest {
        agent: format!("{}@{}", version.name, version.version),
        input: arguments.to_string(),
        grant: Some(pb::Grant {
            as_declared: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let submitted = invoke(cp, submitter, request, |cp, r| async move {
        RunService::submit(&cp, r).await
    })
    .await;
    let run = match submitted.map(|answer| answer.run) {
        Ok(Some(run)) => run,
        Ok(None) => return Err((-32603, "the submit made no run".into())),
        // Refused (a quota, a grant): the tool could not run.
        Err(e) => return Ok(tool_result(e.document().detail, None, true)),
    };
    let id = run.run_id.clone();
    let run = match wait_ended(cp, submitter, run, CALL_WAIT).await {
        Ok(run) => run,
        Err(e) => {
            let why = e.document().detail;
            let text = format!(
                "run {id} was started, but cannot be followed here ({why}); read it at /v1/runs/{id}"
            );
            return Ok(tool_result(text, None, true));
        }
    };
    let has_output_schema = warden_core::Manifest::parse(&version.capabilities)
        .is_ok_and(|m| m.tool.output_schema.is_some());
    let state = warden_core::RunState::from_wire(run.run_state, &run.state);
    Ok(match state {
        Some(warden_core::RunState::Succeeded) => {
            let output: Value = serde_json::from_str(&run.output).unwrap_or(Value::Null);
            if has_output_schema && !output.is_object() {
                tool_result(
                    format!(
                        "run {id} answered {}, not the object its [tool] output_schema describes",
                        run.output
                    ),
                    None,
                    true,
                )
            } else {
                tool_result(run.output.clone(), Some(output), false)
            }
        }
        Some(state) if state.is_terminal() => {
            let kind = warden_core::FailureKind::from_proto(run.error_kind)
                .map_or(state.as_str(), |k| k.as_str());
            tool_result(
                format!("run {} ended {kind}: {}", run.run_id, run.error_message),
                None,
                true,
            )
        }
        _ => tool_result(
            format!(
                "run {} has not ended after {} s; read it at /v1/runs/{}",
                run.run_id,
                CALL_WAIT.as_secs(),
                run.run_id
            ),
            None,
            true,
        ),
    })
}
