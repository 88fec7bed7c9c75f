//! Components by upload (`multipart/form-data`): validate one without
//! publishing it, or publish it. Each is its gRPC method (Validate,
//! Publish), authorized by its rule before the body is read, then handled
//! by the same code the gRPC stream reaches.

use super::authorize;
use super::openapi::Problems;
use super::problem::ApiError;
use crate::ControlPlane;
use crate::auth::Caller;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use std::time::Duration;
use warden_api as api;
use warden_proto::v1 as pb;

/// How long an upload may take to arrive.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Most bytes of a manifest, a name or a version part.
const MAX_TEXT_PART: usize = 64 << 10;

/// An upload's form: `component` (the bytes, required), `manifest`
/// (TOML), and for a validate `name` and `version`.
#[derive(Default)]
struct Form {
    component: Option<Vec<u8>>,
    manifest: String,
    name: String,
    version: String,
}

/// The multipart form of `request`, read within [`UPLOAD_TIMEOUT`], the
/// component at most `max` bytes.
async fn read_form(request: Request, max: usize) -> Result<Form, ApiError> {
    let bad = |why: String| ApiError::from(tonic::Status::invalid_argument(why));
    let broken = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                status,
                "resource_exhausted",
                format!(
                    "the upload is larger than this control plane takes ({})",
                    e.body_text()
                ),
            ),
            _ => ApiError::new(status, "invalid_argument", e.body_text()),
        }
    };
    let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_argument",
            format!(
                "{}: send multipart/form-data with a `component` part (curl -F component=@agent.wasm)",
                e.body_text()
            ),
        )
    })?;
    let read = async {
        let mut form = Form::default();
        let mut seen = std::collections::HashSet::new();
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| bad(e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let limit = if name == "component" {
                max
            } else {
                MAX_TEXT_PART
            };
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(broken)? {
                if bytes.len() + chunk.len() > limit {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "resource_exhausted",
                        format!("the `{name}` part is larger than {limit} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            let text = |bytes: Vec<u8>| {
                String::from_utf8(bytes).map_err(|_| bad(format!("the `{name}` part is not UTF-8")))
            };
            if !seen.insert(name.clone()) {
                return Err(bad(format!("the form has more than one `{name}` part")));
            }
            match name.as_str() {
                "component" => form.component = Some(bytes),
                "manifest" => form.manifest = text(bytes)?,
                "name" => form.name = text(bytes)?,
                "version" => form.version = text(bytes)?,
                other => {
                    return Err(bad(format!(
                        "unknown part `{other}`: the form takes component, manifest, name and version"
                    )));
                }
            }
        }
        Ok(form)
    };
    tokio::time::timeout(UPLOAD_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "deadline_exceeded",
                format!(
                    "the upload did not arrive within {} s",
                    UPLOAD_TIMEOUT.as_secs()
                ),
            )
        })?
}

/// The most a whole upload's body may be: the component, the other parts
/// and the form's own framing.
pub(super) fn body_limit(cp: &ControlPlane) -> DefaultBodyLimit {
    DefaultBodyLimit::max(cp.config.max_component_bytes + 4 * MAX_TEXT_PART + (64 << 10))
}

fn client(caller: Caller) -> Result<crate::auth::Client, ApiError> {
    match caller {
        Caller::Client(client) => Ok(client),
        _ => Err(tonic::Status::internal("an upload's caller is not a client").into()),
    }
}

fn component(form: &mut Form) -> Result<Vec<u8>, ApiError> {
    form.component.take().ok_or_else(|| {
        tonic::Status::invalid_argument("no `component` part: send the .wasm as `component`").into()
    })
}

/// Check a component (and its manifest) as a publish would, publishing
/// nothing (`RegistryService.Validate`).
#[utoipa::path(post, path = "/v1/agents/validate", tag = "agents",
    request_body(content_type = "multipart/form-data", description = "`component` (the .wasm), optional `manifest` (TOML), `name` and `version`"),
    responses((status = 200, description = "what the component is and every problem found", body = api::Validation), Problems))]
pub(super) async fn validate(
    State(cp): State<ControlPlane>,
    request: Request,
) -> Result<Json<api::Validation>, ApiError> {
    let caller = authorize(
        &cp,
        method!("RegistryService", "Validate"),
        request.headers(),
    )?;
    let mut form = read_form(request, cp.config.max_component_bytes).await?;
    let data = component(&mut form)?;
    let header = pb::PublishHeader {
        name: form.name,
        version: form.version,
        size: data.len() as u64,
        capabilities: form.manifest,
        tenant: String::new(),
    };
    let caller = client(caller)?;
    let answer = cp
        .compiling(move |cp| cp.validate_upload(&caller, header, data))
        .await??;
    Ok(Json(api::Validation::from(&answer)))
}

/// Publish a component as `name@version` (`RegistryService.Publish`).
#[utoipa::path(post, path = "/v1/agents/{name}/versions/{version}", tag = "agents",
    params(("name" = String, Path, description = "the agent's name"), ("version" = String, Path, description = "the new version")),
    request_body(content_type = "multipart/form-data", description = "`component` (the .wasm) and optional `manifest` (TOML)"),
    responses(
        (status = 201, description = "published", body = api::Published),
        (status = 200, description = "these bytes and manifest were already published so", body = api::Published),
        Problems,
    ))]
pub(super) async fn publish(
    State(cp): State<ControlPlane>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = authorize(
        &cp,
        method!("RegistryService", "Publish"),
        request.headers(),
    )?;
    let Path((name, version)) = path?;
    let mut form = read_form(request, cp.config.max_component_bytes).await?;
    let data = component(&mut form)?;
    if !(form.name.is_empty() && form.version.is_empty()) {
        return Err(tonic::Status::invalid_argument(
            "the name and version are in the path, not the form",
        )
        .into());
    }
    let caller = client(caller)?;
    let tenant = caller.tenant.clone();
    let header = pb::PublishHeader {
        name: name.clone(),
        version: version.clone(),
        size: data.len() as u64,
        capabilities: form.manifest,
        tenant: String::new(),
    };
    let answer = cp
        .compiling(move |cp| cp.publish_upload(&caller, header, data))
        .await??;
    let status = match answer.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    let body = api::Published {
        tenant,
        name,
        version,
        digest: answer.digest,
        size: answer.size,
        created: answer.created,
    };
    Ok((status, Json(body)).into_response())
}
