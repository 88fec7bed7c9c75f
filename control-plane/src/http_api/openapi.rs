//! The API's OpenAPI 3.1 document, made from the routes' own annotations
//! and the documents' types (utoipa), served at `/v1/openapi.json`.

use super::{admin, mcp, routes, streams, uploads};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use warden_api as api;

/// Every error answer a route may give: `application/problem+json`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Problems {
    /// The request is not valid (its JSON, a field, a query parameter).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(api::Problem),
    /// No token, or one this control plane does not accept.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(api::Problem),
    /// The token's role may not do this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(api::Problem),
    /// No such run or agent for this token's tenant.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(api::Problem),
    /// Not in the state this needs.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(api::Problem),
    /// The body (or an upload) did not arrive in time.
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(api::Problem),
    /// The body is larger than a request may be.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(api::Problem),
    /// The body is not of the type the route takes (`application/json`;
    /// `multipart/form-data` for an upload).
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(api::Problem),
    /// The JSON does not fit the document (a missing or unknown field).
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(api::Problem),
    /// Over the token's rate limit or stream limit, or a tenant quota.
    #[response(status = 429, content_type = "application/problem+json")]
    TooMany(api::Problem),
    /// Warden failed.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(api::Problem),
    /// The store cannot be reached; try again.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(api::Problem),
}

/// Bearer tokens (`warden tokens create`) on every route but the health
/// checks.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Warden HTTP API",
        description = "Runs, agents, nodes and usage of a Warden control plane. Each route is one gRPC method, allowed exactly when that method is for the same token."
    ),
    paths(
        routes::healthz, routes::readyz, routes::whoami,
        routes::submit, routes::submit_batch, routes::list_runs, routes::get_run, routes::cancel,
        streams::logs, streams::events,
        routes::list_agents, admin::get_agent, uploads::validate, uploads::publish, routes::list_nodes, routes::usage,
        admin::audit, admin::quotas,
        mcp::post,
    ),
    components(schemas(api::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;

/// `GET /v1/openapi.json` (no token needed), made once.
pub(super) async fn document() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| {
        <ApiDoc as utoipa::OpenApi>::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        json.clone(),
    )
        .into_response()
}
